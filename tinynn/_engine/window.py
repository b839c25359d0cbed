"""Sliding windows shared by convolution and pooling: padding, im2col views and their adjoint.

Layout: the fast paths work on channels-last memory. A ``(N, H, W, C)`` array viewed through
``transpose(0, 3, 1, 2)`` has torch's logical shape ``(N, C, H, W)`` for free (torch calls this
memory format ``channels_last``). Keeping activations that way means the im2col matrix
``(N*Ho*Wo, kh*kw*C)`` is one copy of a window view, and a matmul's ``(N*Ho*Wo, O)`` result is
already the next layer's input: no transpose copies between layers.

The window view of a padded ``(N, Hp, Wp, C)`` array has shape ``(N, Ho, Wo, kh, kw, C)``:
``windows[n, oh, ow, i, j, c] = padded[n, oh*sh + i*dh, ow*sw + j*dw, c]``. Its adjoint,
``add_windows``, sums one block per kernel offset back into the (unpadded) image (col2im).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Iterator

import numpy as np
from numpy.lib.stride_tricks import as_strided

from tinynn.nn._geometry import Pads

Pair = tuple[int, int]


def channels_last(input: np.ndarray) -> np.ndarray:
    """The ``(N, H, W, C)`` view of a logical ``(N, C, H, W)`` array (free; a copy only if reshaped)."""
    return input.transpose(0, 2, 3, 1)


def as_nchw(array_nhwc: np.ndarray) -> np.ndarray:
    """The logical ``(N, C, H, W)`` view of channels-last memory (free)."""
    return array_nhwc.transpose(0, 3, 1, 2)


def pad_channels_last(input: np.ndarray, pads: Pads, fill: float = 0.0, out: np.ndarray | None = None,
                      fill_border: bool = True) -> np.ndarray:
    """Copy a logical ``(N, C, H, W)`` array into a ``(N, H+top+bottom, W+left+right, C)`` one.

    The border holds ``fill``; the copy also turns any input layout into channels-last memory.
    ``out``, if given, is the (uninitialised) destination; with ``fill_border=False`` its border
    already holds ``fill`` (a reused buffer, see ``Workspace.get_padded``) and only the inside is written.
    """
    top, bottom, left, right = pads
    n, c, h, w = input.shape
    padded = np.empty((n, h + top + bottom, w + left + right, c), dtype=input.dtype) if out is None else out
    if fill_border and (top or bottom or left or right):
        padded[:, :top] = fill
        padded[:, top + h:] = fill
        padded[:, top:top + h, :left] = fill
        padded[:, top:top + h, left + w:] = fill
    padded[:, top:top + h, left:left + w] = channels_last(input)
    return padded


def windows(padded: np.ndarray, kernel: Pair, stride: Pair, dilation: Pair, out_size: Pair) -> np.ndarray:
    """Read-only ``(N, Ho, Wo, kh, kw, C)`` view of a ``(N, Hp, Wp, C)`` array (no copy)."""
    n_stride, h_stride, w_stride, c_stride = padded.strides
    shape = (padded.shape[0], *out_size, *kernel, padded.shape[3])
    strides = (n_stride, h_stride * stride[0], w_stride * stride[1],
               h_stride * dilation[0], w_stride * dilation[1], c_stride)
    if not padded.flags.c_contiguous:
        return as_strided(padded, shape=shape, strides=strides, writeable=False)
    # The same view built directly on the memory: a third of as_strided's cost, which is paid per layer call.
    view = np.ndarray(shape, padded.dtype, buffer=padded, strides=strides)
    view.flags.writeable = False
    return view


def tap_range(size: int, out_size: int, offset: int, stride: int, pad_before: int) -> tuple[int, int, int]:
    """Outputs ``o`` in ``[first, stop)`` whose tap ``o*stride + offset - pad_before`` lies inside ``[0, size)``.

    Returns ``(first, stop, first_input_index)``; ``first == stop`` when every tap is padding.
    """
    first = max(0, -((offset - pad_before) // stride))  # ceil((pad_before - offset) / stride)
    stop = max(first, min(out_size, (size - 1 + pad_before - offset) // stride + 1))
    return first, stop, first * stride + offset - pad_before


def offset_blocks(in_size: Pair, out_size: Pair, kernel: Pair, stride: Pair, dilation: Pair, pads: Pads
                  ) -> Iterator[tuple[int, int, tuple[slice, slice], tuple[slice, slice]]]:
    """For each kernel offset ``(i, j)`` (row-major), the outputs whose tap is inside the input.

    Yields ``(i, j, (out_rows, out_cols), (in_rows, in_cols))``: output pixel ``(oh, ow)`` in the
    first pair of slices reads input pixel ``(oh*sh + i*dh - top, ow*sw + j*dw - left)``, which the
    second pair of slices lists in the same order. Offsets whose taps all fall on padding are skipped.
    """
    for i in range(kernel[0]):
        oh_first, oh_stop, h_first = tap_range(in_size[0], out_size[0], i * dilation[0], stride[0], pads[0])
        for j in range(kernel[1]):
            ow_first, ow_stop, w_first = tap_range(in_size[1], out_size[1], j * dilation[1], stride[1], pads[2])
            if oh_first == oh_stop or ow_first == ow_stop:
                continue
            in_rows = slice(h_first, h_first + stride[0] * (oh_stop - oh_first - 1) + 1, stride[0])
            in_cols = slice(w_first, w_first + stride[1] * (ow_stop - ow_first - 1) + 1, stride[1])
            yield i, j, (slice(oh_first, oh_stop), slice(ow_first, ow_stop)), (in_rows, in_cols)


@functools.lru_cache(maxsize=256)
def _phase_adds(in_size: Pair, out_size: Pair, kernel: Pair, stride: Pair, dilation: Pair, pads: Pads
                ) -> tuple[tuple[Pair, bool, tuple[tuple[int, int, slice, slice, slice, slice], ...]], ...]:
    """``add_windows``'s plan, the same for every call with this geometry: for each phase of the
    input, the offsets ``(i, j)`` whose taps land on it, with their output slices and the slices
    of the phase they add into, and whether the first of them covers the whole phase."""
    blocks = list(offset_blocks(in_size, out_size, kernel, stride, dilation, pads))
    plan = []
    for phase_h in range(stride[0]):
        for phase_w in range(stride[1]):
            phase_size = (len(range(phase_h, in_size[0], stride[0])), len(range(phase_w, in_size[1], stride[1])))
            adds: list[tuple[int, int, slice, slice, slice, slice]] = []
            whole = False
            for i, j, (out_rows, out_cols), (in_rows, in_cols) in blocks:
                if in_rows.start % stride[0] != phase_h or in_cols.start % stride[1] != phase_w:
                    continue
                first_row, first_col = in_rows.start // stride[0], in_cols.start // stride[1]
                rows, cols = out_rows.stop - out_rows.start, out_cols.stop - out_cols.start
                add = (i, j, out_rows, out_cols, slice(first_row, first_row + rows), slice(first_col, first_col + cols))
                # A block covering the whole phase goes first: it is copied in, saving the pass that
                # zeroes the phase (in a 'same' or stride-2 layer every phase has one).
                if not whole and (first_row, first_col) == (0, 0) and (rows, cols) == phase_size:
                    adds.insert(0, add)
                    whole = True
                else:
                    adds.append(add)
            plan.append(((phase_h, phase_w), whole, tuple(adds)))
    return tuple(plan)


def add_windows(grad_offsets: np.ndarray, in_size: Pair, stride: Pair, dilation: Pair, pads: Pads,
                out: np.ndarray | None = None, overwrite: bool = False) -> np.ndarray:
    """col2im: ``dX[n, oh*sh + i*dh - top, ow*sw + j*dw - left, ...] += grad_offsets[i, j, n, oh, ow, ...]``.

    ``grad_offsets`` holds one ``(N, Ho, Wo, ...)`` block per kernel offset ``(i, j)`` (it may be a
    broadcast view); returns the channels-last ``(N, H, W, ...)`` sum, taps on the padding
    dropped. One vectorized slice-add per offset instead of a scatter with ``np.add.at``;
    overlapping windows (stride < kernel) add up, as the chain rule asks.

    With stride s an offset's taps all land on one phase of the input (rows ``h % sh == p``).
    Each phase is summed in its own contiguous buffer and written once: the adds then run along
    whole rows instead of hopping s pixels at a time, which is NumPy's slow case.
    ``out``, if given, is the (uninitialised) destination. ``overwrite=True`` lets the blocks'
    memory be changed (a caller's scratch): a block as large as the phase it adds into (a
    'same'-padded layer's) is then added whole, shifted (see ``_add_shifted``).
    """
    batch, trailing = grad_offsets.shape[2], grad_offsets.shape[5:]
    kernel, out_size = grad_offsets.shape[:2], grad_offsets.shape[3:5]
    grad_input = np.empty((batch, *in_size, *trailing), dtype=grad_offsets.dtype) if out is None else out
    for (phase_h, phase_w), whole, adds in _phase_adds(tuple(in_size), tuple(out_size), tuple(kernel),
                                                        tuple(stride), tuple(dilation), tuple(pads)):
        target = grad_input[:, phase_h::stride[0], phase_w::stride[1]]
        # One block that makes up the phase is copied straight in; several are summed in a buffer.
        single = whole and len(adds) == 1
        phase = target if stride == (1, 1) or single else np.empty(target.shape, dtype=target.dtype)
        if whole:
            i, j, out_rows, out_cols, _, _ = adds[0]
            phase[...] = grad_offsets[i, j, :, out_rows, out_cols]
        else:
            phase.fill(0)
        for i, j, out_rows, out_cols, in_rows, in_cols in adds[1 if whole else 0:]:
            block = grad_offsets[i, j]
            if overwrite and block.shape == phase.shape and block.flags.c_contiguous and phase.flags.c_contiguous:
                _add_shifted(phase, block, out_rows, out_cols, in_rows, in_cols)
            else:
                phase[:, in_rows, in_cols] += block[:, out_rows, out_cols]
        if phase is not target:
            target[...] = phase
    return grad_input


def _add_shifted(phase: np.ndarray, block: np.ndarray, out_rows: slice, out_cols: slice, in_rows: slice,
                 in_cols: slice) -> None:
    """``phase[:, in_rows, in_cols] += block[:, out_rows, out_cols]`` for a block of the phase's
    own shape, as one add over the whole flattened arrays, shifted.

    NumPy adds into a sub-rectangle of each image about 3x slower per value than into a whole
    array. With equal shapes, the shift from a block pixel to the pixel it lands on is the same
    everywhere, so the block added whole at that shift puts every tap in its place, except the
    taps that fall on the padding, which would wrap into the next row or image: those are zeroed
    first (this writes into ``block``).
    """
    block[:, :out_rows.start] = 0
    block[:, out_rows.stop:] = 0
    block[:, :, :out_cols.start] = 0
    block[:, :, out_cols.stop:] = 0
    per_pixel = math.prod(block.shape[3:])
    shift = ((in_rows.start - out_rows.start) * block.shape[2] + in_cols.start - out_cols.start) * per_pixel
    target, source = phase.reshape(-1), block.reshape(-1)
    if shift >= 0:
        target[shift:] += source[:source.size - shift]
    else:
        target[:shift] += source[-shift:]


# ------------------------------------------------------------------------------------ scratch memory
class Workspace:
    """Scratch arrays that a module reuses from one call to the next.

    A fresh multi-megabyte array costs a page fault per 4 KiB page the first time it is written
    (about 1.5 us each on a small VM, over a millisecond per training step of the tutorial CNN),
    and NumPy hands memory back to the OS when large arrays are freed. Buffers that never leave
    a module (the padded input, the im2col columns) are therefore kept here and reused.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}
        self._parts: dict[int, Workspace] = {}
        # The shape and pads whose border "padded" last got (valid while that memory is kept).
        self._padded_as: tuple[tuple[int, ...], Pads] | None = None

    def get(self, name: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """An uninitialised array of this shape and dtype, the same memory as last time if it fits."""
        array = self._arrays.get(name)
        size = math.prod(shape)
        if array is None or array.dtype != dtype or array.size < size:
            array = self._arrays[name] = np.empty(size, dtype=dtype)
        return array[:size].reshape(shape)

    def get_padded(self, shape: tuple[int, ...], dtype: np.dtype, pads: Pads) -> tuple[np.ndarray, bool]:
        """The buffer for an input zero-padded by ``pads``, and whether its border already holds the
        zeros: it does when the last call had the same shape and pads, since only the inside of
        the image is written from one call to the next. Saves the border's scattered writes."""
        memory = self._arrays.get("padded")
        array = self.get("padded", shape, dtype)
        border_ready = self._arrays["padded"] is memory and self._padded_as == (shape, pads)
        self._padded_as = (shape, pads)
        return array, border_ready

    def part(self, index: int) -> Workspace:
        """The workspace of part ``index`` of a batch split across threads (see ``_parallel``)."""
        if index == 0:
            return self
        return self._parts.setdefault(index, Workspace())

    def clear(self) -> None:
        self._arrays.clear()
        self._parts.clear()


_WORKSPACES: weakref.WeakKeyDictionary[object, Workspace] = weakref.WeakKeyDictionary()


def workspace_of(owner: object) -> Workspace | None:
    """The workspace kept for ``owner`` (a module), made on first use and dropped with the module;
    None for no owner (a functional call, which has nowhere to keep buffers between calls)."""
    if owner is None:
        return None
    workspace = _WORKSPACES.get(owner)
    if workspace is None:
        workspace = _WORKSPACES[owner] = Workspace()
    return workspace


def zeros(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """``np.zeros`` for an array that is about to be added into (col2im).

    ``np.zeros`` gets lazily zeroed pages from the OS: the first ``+=`` reads each page (a fault
    mapping the shared zero page) and then writes it (a second fault). Writing the zeros ourselves
    costs one cheap pass and halves those faults.
    """
    array = np.empty(shape, dtype=dtype)
    array.fill(0)
    return array


def empty(shape: tuple[int, ...], dtype: np.dtype, workspace: Workspace | None, name: str) -> np.ndarray:
    """``np.empty``, or the workspace's buffer ``name`` when a workspace is given."""
    return np.empty(shape, dtype=dtype) if workspace is None else workspace.get(name, shape, dtype)
