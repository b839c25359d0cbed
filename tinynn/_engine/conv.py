"""2-D convolution, fast: the maths of ``tinynn/nn/conv.py`` on channels-last memory, in chunks and threads.

The same products as the textbook version (``Y = cols @ W.T + b``, ``dW = dY.T @ cols``,
``db = dY.sum(0)``, ``dX = col2im(dY @ W)``), arranged for speed; README.md beside this file
explains each trick and what it gained:

* activations stay channels-last in memory (``window``): the output is the ``(N*Ho*Wo, O)``
  matrix product viewed as ``(N, O, Ho, Wo)``, so the next layer reads it without a transpose copy,
  and im2col's columns are ordered (i, j, c) so that a window row is one contiguous run;
* a large layer's batch is split across the cores, one thread per part (``parallel``), and each
  part builds its columns one cache-sized chunk of images at a time, building them again in the
  backward rather than keeping them (``CHUNK_BYTES``); a small layer (the tutorial's) runs in one
  piece and keeps its columns for the backward's dW;
* scratch buffers (the padded input, the columns) are reused from call to call (``Workspace``);
* every product goes through ``blas.matmul``, on one BLAS thread or on all of them, whichever the
  size and the machine's cores make faster.
"""

from __future__ import annotations

import numpy as np

from tinynn._engine.blas import matmul
from tinynn._engine.parallel import batch_parts, even_slices, run_parts
from tinynn._engine.window import (
    Workspace,
    add_windows,
    as_nchw,
    channels_last,
    empty,
    pad_channels_last,
    windows,
    workspace_of,
)
from tinynn.nn._geometry import ConvGeometry

# im2col columns handled at a time (per thread): a chunk this size stays in the L3 cache between the
# product that reads it and the next (dW, then dX's blocks written over it), where a whole batch's
# columns would go out to memory and back; rebuilding them in the backward costs less than that.
# A batch whose columns fit in one chunk keeps them from forward to backward.
CHUNK_BYTES = 1 << 23


def im2col(input: np.ndarray, geometry: ConvGeometry, workspace: Workspace | None = None,
           out: np.ndarray | None = None) -> np.ndarray:
    """Columns of a batched ``(N, C, H, W)`` input: shape ``(N*Ho*Wo, groups, kh*kw*C/groups)``.

    ``cols[n*Ho*Wo + oh*Wo + ow, g, (i*kw + j)*C/g + c] = x_padded[n, g*C/g + c, oh*sh + i*dh, ow*sw + j*dw]``.
    The window view is free; filling ``cols`` (``out`` if given, from ``cols_buffer``) is the one copy.
    """
    batch, channels, height, width = input.shape
    groups, (kernel_h, kernel_w), (out_h, out_w) = geometry.groups, geometry.kernel, geometry.out_size
    top, bottom, left, right = geometry.pads
    if any(geometry.pads):
        padded_shape = (batch, height + top + bottom, width + left + right, channels)
        if workspace is None:
            padded = pad_channels_last(input, geometry.pads)
        else:
            buffer, border_ready = workspace.get_padded(padded_shape, input.dtype, geometry.pads)
            padded = pad_channels_last(input, geometry.pads, out=buffer, fill_border=not border_ready)
    else:
        padded = channels_last(input)
    per_group = channels // groups
    rows = batch * out_h * out_w
    if out is None:
        out = cols_buffer(rows, channels, geometry, input.dtype, workspace, "cols")
    view = windows(padded, geometry.kernel, geometry.stride, geometry.dilation, geometry.out_size)
    if channels == 1:  # stored transposed (see cols_buffer): one row of taps per kernel offset
        taps = out[:, 0, :].T.reshape(kernel_h, kernel_w, batch, out_h, out_w)
        assert taps.size == 0 or np.may_share_memory(taps, out), "cols_buffer's layout"  # a view, not a copy
        np.copyto(taps, view[..., 0].transpose(3, 4, 0, 1, 2))
        return out
    cols = out.reshape(batch, out_h, out_w, groups, kernel_h, kernel_w, per_group)
    if kernel_w * per_group >= out_w:
        # One copy of the whole window view; its innermost contiguous run is a window row (kw*C values).
        np.copyto(cols, view.reshape(*view.shape[:5], groups, per_group).transpose(0, 1, 2, 5, 3, 4, 6))
    else:
        # Few channels (a grayscale first layer): window rows are too short for NumPy's inner loop,
        # so copy one kernel offset at a time, a whole output row per inner loop.
        for i in range(kernel_h):
            for j in range(kernel_w):
                np.copyto(cols[:, :, :, :, i, j], view[:, :, :, i, j].reshape(batch, out_h, out_w, groups, per_group))
    return out


def cols_buffer(rows: int, channels: int, geometry: ConvGeometry, dtype: np.dtype, workspace: Workspace | None,
                name: str, ones_column: bool = False) -> np.ndarray:
    """Uninitialised memory for ``im2col``'s ``(rows, groups, kh*kw*C/groups)`` columns.

    With one input channel (a grayscale first layer) a row holds only kh*kw taps, too short for
    NumPy's copy loops: the memory is then laid out transposed, ``(kh*kw, rows)``, so that each
    kernel offset's taps are one contiguous run, and the ``(rows, 1, kh*kw)`` array returned is a
    transposed view of it, which BLAS reads as well as the other layout. ``ones_column`` (one
    input channel only) adds a last column of ones: ``[cols, 1] @ [W.T; b]`` then adds the bias.
    """
    groups, (kernel_h, kernel_w) = geometry.groups, geometry.kernel
    width = kernel_h * kernel_w * (channels // groups)
    if channels == 1:
        memory = empty((width + ones_column, rows), dtype, workspace, name)
        if ones_column:
            memory[width] = 1
        return memory.T[:, None, :]
    assert not ones_column, "a ones column is only laid out for one input channel"
    return empty((rows, groups, width), dtype, workspace, name)


def _weight_matrix(weight: np.ndarray, groups: int) -> np.ndarray:
    """``(O, C/g, kh, kw) -> (g, O/g, kh*kw*C/g)``, columns in the order of ``im2col``'s."""
    out_channels = weight.shape[0]
    per_group = weight.reshape(groups, out_channels // groups, *weight.shape[1:])
    return np.ascontiguousarray(per_group.transpose(0, 1, 3, 4, 2)).reshape(groups, out_channels // groups, -1)


def _chunks(images: slice, per_chunk: int) -> list[slice]:
    """``images`` in chunks of at most ``per_chunk``, as even as possible (no small last chunk)."""
    if images.stop - images.start <= per_chunk:
        return [images]
    return even_slices(images, -(-(images.stop - images.start) // per_chunk))


def _images_per_chunk(cols_bytes_per_image: int) -> int:
    return max(1, CHUNK_BYTES // max(1, cols_bytes_per_image))


def conv2d_forward(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geometry: ConvGeometry,
                   owner: object = None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(output, cols)`` for a batched input: ``tinynn.nn.conv.conv2d_forward``'s maths, fast.

    ``owner`` (a ``Conv2d``) names the workspace whose buffers are reused from call to call.
    ``cols`` is the whole batch's im2col matrix when it fits in ``CHUNK_BYTES`` (``Conv2d`` keeps
    it for the backward's dW), else None: the forward then builds it one chunk of images at a
    time, and the backward builds it again. A large batch is also split across the cores
    (``_parallel``): each part handles its own images' rows of ``cols`` and of the output.
    """
    workspace = workspace_of(owner)
    batch, out_channels, groups = input.shape[0], weight.shape[0], geometry.groups
    out_w = geometry.out_size[1]
    per_image = geometry.out_size[0] * out_w
    per_group = weight[0].size  # kh*kw*C/g columns
    keep = batch * per_image * groups * per_group * input.itemsize <= CHUNK_BYTES
    channels = input.shape[1]
    # With one input channel the bias is added by the product itself, through a column of ones (an
    # add over the whole output would cost as much as the product, whose K = kh*kw is tiny).
    fold_bias = bias is not None and channels == 1
    buffer = (cols_buffer(batch * per_image, channels, geometry, input.dtype, workspace, "cols", fold_bias)
              if keep else None)
    per_chunk = max(1, batch) if keep else _images_per_chunk(per_image * groups * per_group * input.itemsize)
    output = np.empty((batch * per_image, groups, out_channels // groups), dtype=input.dtype)
    weight_t = _weight_matrix(weight, groups).transpose(0, 2, 1)
    if fold_bias:
        weight_t = np.concatenate([weight_t, bias.reshape(1, 1, out_channels)], axis=1)
    bias_row = None
    if bias is not None and not fold_bias:
        # Added to whole output rows (Wo*O values) at a time: NumPy's inner loop over only O values is slow.
        bias_row = np.empty((out_w, out_channels), dtype=input.dtype)
        bias_row[...] = bias

    @np.errstate(invalid="ignore", over="ignore")  # as in torch: infinities make NaNs silently
    def forward_part(index: int, images: slice) -> None:
        part_workspace = None if workspace is None else workspace.part(index)
        part_buffer = buffer if keep else cols_buffer(per_chunk * per_image, channels, geometry, input.dtype,
                                                      part_workspace, "chunk cols", fold_bias)
        for chunk in _chunks(images, per_chunk):
            rows = slice(chunk.start * per_image, chunk.stop * per_image)
            chunk_buffer = part_buffer[rows] if keep else part_buffer[:rows.stop - rows.start]
            im2col(input[chunk], geometry, part_workspace, out=chunk_buffer[:, :, :per_group])
            # Y[:, g] = cols[:, g] @ W[g].T for every group in one batched matmul, written in place.
            matmul(chunk_buffer.transpose(1, 0, 2), weight_t, out=output[rows].transpose(1, 0, 2))
            if bias_row is not None:
                output[rows].reshape(-1, out_w * out_channels)[...] += bias_row.reshape(-1)

    run_parts(forward_part, batch_parts(batch, batch * per_image * groups * per_group * out_channels // groups))
    cols = None if buffer is None else buffer[:, :, :per_group]
    return as_nchw(output.reshape(batch, *geometry.out_size, out_channels)), cols


def conv2d_backward(grad_output: np.ndarray, input: np.ndarray, weight: np.ndarray, geometry: ConvGeometry,
                    cols: np.ndarray | None = None, has_bias: bool = True, needs_input_grad: bool = True,
                    owner: object = None) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """The backward of a batched conv2d: ``tinynn.nn.conv.conv2d_backward_from_cols``'s maths, fast.

    ``cols``: the forward's im2col matrix if it kept one (it is overwritten), else it is rebuilt
    one chunk of images at a time, so that each chunk's columns are still in the cache when dW,
    then dX's blocks (written over them), use them. A large batch is split across the cores as in
    ``conv2d_forward``: each part adds its images' share of dW and db, and writes its images' dX.
    """
    workspace = workspace_of(owner)
    batch, channels = input.shape[:2]
    out_channels, groups, (kernel_h, kernel_w) = weight.shape[0], geometry.groups, geometry.kernel
    per_image, per_group = geometry.out_size[0] * geometry.out_size[1], channels // groups
    cols_width = kernel_h * kernel_w * per_group
    cols_bytes_per_image = per_image * groups * cols_width * input.itemsize
    per_chunk = max(1, batch) if cols is not None else _images_per_chunk(cols_bytes_per_image)
    # A free view when grad_output is channels-last in memory, as the forward produced it.
    grad_matrix = channels_last(grad_output).reshape(batch * per_image, groups, out_channels // groups)
    # dcols = dY @ W, one (rows, C) block per kernel offset (i, j): contiguous blocks make the
    # col2im adds run along whole rows. weight_offsets[g, i*kw + j] is the (O/g, C/g) matrix W[group g's
    # outputs, :, i, j].
    weight_offsets = np.ascontiguousarray(
        weight.reshape(groups, out_channels // groups, per_group, kernel_h * kernel_w).transpose(0, 3, 1, 2))
    grad_input = np.empty((batch, *input.shape[2:], channels), dtype=input.dtype) if needs_input_grad else None

    @np.errstate(invalid="ignore", over="ignore")  # as in torch: infinities make NaNs silently
    def backward_part(index: int, images: slice) -> tuple[np.ndarray, np.ndarray | None]:
        part_workspace = None if workspace is None else workspace.part(index)
        buffer = cols if cols is not None else cols_buffer(per_chunk * per_image, channels, geometry, input.dtype,
                                                           part_workspace, "chunk cols")
        part_weight = part_bias = None
        for chunk in _chunks(images, per_chunk):
            rows = slice(chunk.start * per_image, chunk.stop * per_image)
            grad_rows = grad_matrix[rows]
            if cols is not None:
                chunk_cols = cols[rows]
            else:
                chunk_cols = im2col(input[chunk], geometry, part_workspace, out=buffer[:rows.stop - rows.start])
            # dW[g].T = cols[:, g].T @ dY[:, g]: (kh*kw*C/g, O/g), rows ordered (i, j, c) as in im2col.
            chunk_weight = matmul(chunk_cols.transpose(1, 2, 0), grad_rows.transpose(1, 0, 2))
            part_weight = chunk_weight if part_weight is None else part_weight + chunk_weight
            if has_bias:
                # db = 1.T @ dY: a matrix-vector product (BLAS), several times faster than .sum(axis=0) on rows.
                chunk_bias = matmul(np.ones(grad_rows.shape[0], dtype=input.dtype),
                                    grad_rows.reshape(-1, out_channels))
                part_bias = chunk_bias if part_bias is None else part_bias + chunk_bias
            if grad_input is not None:  # dW is done with these columns: dX's blocks overwrite them
                # (a copy instead, for one input channel's transposed columns: reshape cannot view them)
                blocks = chunk_cols.reshape(kernel_h * kernel_w, -1, groups, per_group)
                matmul(grad_rows.transpose(1, 0, 2)[:, None], weight_offsets, out=blocks.transpose(2, 0, 1, 3))
                add_windows(blocks.reshape(kernel_h, kernel_w, -1, *geometry.out_size, groups, per_group),
                            input.shape[2:], geometry.stride, geometry.dilation, geometry.pads,
                            out=grad_input[chunk].reshape(-1, *input.shape[2:], groups, per_group), overwrite=True)
        if part_weight is None:  # an empty part (batch 0)
            part_weight = np.zeros((groups, cols_width, out_channels // groups), dtype=input.dtype)
            part_bias = np.zeros(out_channels, dtype=input.dtype) if has_bias else None
        return part_weight, part_bias

    (grad_weight, grad_bias), *other_parts = run_parts(
        backward_part, batch_parts(batch, batch * per_image * groups * cols_width * out_channels // groups))
    for part_weight, part_bias in other_parts:
        grad_weight = grad_weight + part_weight
        grad_bias = None if grad_bias is None else grad_bias + part_bias
    grad_weight = grad_weight.reshape(groups, kernel_h, kernel_w, per_group, out_channels // groups)
    grad_weight = np.ascontiguousarray(grad_weight.transpose(0, 4, 3, 1, 2)).reshape(weight.shape)
    if grad_input is None:
        return None, grad_weight, grad_bias
    return as_nchw(grad_input), grad_weight, grad_bias
