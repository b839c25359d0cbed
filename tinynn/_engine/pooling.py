"""Pooling, fast: the maths of ``tinynn/nn/pooling.py`` on channels-last memory, one kernel offset at a time.

The textbook version copies every window out (``(N, C, Ho, Wo, kh, kw)``) and reduces it. Here
the loop runs over the kernel offsets ``(i, j)``, never over pixels or windows: for each offset,
the outputs whose tap lands inside the input form one strided block (``window.offset_blocks``),
and one vectorized operation handles the whole block. Memory stays channels-last like the
convolutions' (see ``window``), and max pooling keeps each window's winning offset as an int16
rather than torch's int64 index. Gradients go back through ``window.add_windows`` (col2im by
phases). Adaptive pooling reduces channels-last contiguous memory, rows first, then columns.
"""

from __future__ import annotations

import numpy as np

from tinynn._engine.elementwise import keep_where
from tinynn._engine.window import add_windows, as_nchw, channels_last, offset_blocks, zeros
from tinynn.nn._geometry import PoolGeometry
from tinynn.nn.pooling import adaptive_bins


# ---------------------------------------------------------------------------------------- avg pool
@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def avg_pool2d_forward(batched: np.ndarray, geometry: PoolGeometry, divisors: np.ndarray) -> np.ndarray:
    """``Y = sum_taps(X) / divisor``, one strided add per kernel offset.

    Textbook twin: ``pooling.avg_pool2d_forward``."""
    x = channels_last(batched)
    total = zeros((batched.shape[0], *geometry.out_size, batched.shape[1]), batched.dtype)
    for _, _, out_block, in_block in offset_blocks(batched.shape[2:], geometry.out_size, geometry.kernel,
                                                   geometry.stride, geometry.dilation, geometry.pads):
        total[:, out_block[0], out_block[1]] += x[:, in_block[0], in_block[1]]
    total /= divisors[:, :, None].astype(batched.dtype)
    return as_nchw(total)


@np.errstate(invalid="ignore", over="ignore")
def avg_pool2d_backward(grad_output: np.ndarray, input_shape: tuple[int, ...], geometry: PoolGeometry,
                        divisors: np.ndarray) -> np.ndarray:
    """dX: every tap receives ``dY / divisor``; col2im by phases.

    Textbook twin: ``pooling.avg_pool2d_backward_textbook``."""
    grad_per_tap = channels_last(grad_output) / divisors[:, :, None].astype(grad_output.dtype)
    # The same (N, Ho, Wo, C) block for every offset: a broadcast view, nothing copied.
    grad_offsets = np.broadcast_to(grad_per_tap, (*geometry.kernel, *grad_per_tap.shape))
    return as_nchw(add_windows(grad_offsets, input_shape[2:], geometry.stride, geometry.dilation, geometry.pads))


# ---------------------------------------------------------------------------------------- max pool
def max_pool2d_forward(batched: np.ndarray, geometry: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(output, winner)``: the max of each window, and which kernel offset ``i*kw + j`` holds it
    (int16, logical (N, C, Ho, Wo), channels-last in memory).

    Offsets are visited in torch's order (row-major) and an offset wins when its value is
    strictly greater (so a tie keeps the earlier one) or NaN (so the last NaN wins); the first
    tap inside the input wins over nothing, so a window of -inf still picks a real element.
    Textbook twin: ``pooling.max_pool2d_forward``.
    """
    x = channels_last(batched)
    out_shape = (batched.shape[0], *geometry.out_size, batched.shape[1])
    output = np.full(out_shape, -np.inf, batched.dtype)
    winner = np.full(out_shape, -1, dtype=np.int16)
    for i, j, out_block, in_block in offset_blocks(batched.shape[2:], geometry.out_size, geometry.kernel,
                                                   geometry.stride, geometry.dilation, geometry.pads):
        value = x[:, in_block[0], in_block[1]]
        best = output[:, out_block[0], out_block[1]]
        held = winner[:, out_block[0], out_block[1]]
        wins = (value > best) | np.isnan(value) | (held < 0)
        np.maximum(best, value, out=best)  # same values as taking the winner's (NaN propagates)
        # Branch-free "held = offset where wins": offsets only grow, so keep the larger.
        np.maximum(held, wins * np.int16(i * geometry.kernel[1] + j + 1) - np.int16(1), out=held)
    return as_nchw(output), as_nchw(winner)


def flat_indices(winner: np.ndarray, input_shape: tuple[int, ...], geometry: PoolGeometry) -> np.ndarray:
    """torch's ``indices``: the winner's position ``h * W + w`` in its input plane (int64)."""
    width = input_shape[3]
    rows = np.arange(geometry.out_size[0])[:, None] * geometry.stride[0] - geometry.pads[0]
    cols = np.arange(geometry.out_size[1]) * geometry.stride[1] - geometry.pads[2]
    i, j = np.divmod(winner.astype(np.int64), geometry.kernel[1])
    return (rows + i * geometry.dilation[0]) * width + cols + j * geometry.dilation[1]


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs silently, as in torch
def max_pool2d_backward(grad_output: np.ndarray, winner: np.ndarray, input_shape: tuple[int, ...],
                        geometry: PoolGeometry) -> np.ndarray:
    """dX: each window's dY goes to its winning offset's tap (``winner``, logical (N, C, Ho, Wo)).

    Textbook twin: ``pooling.max_pool2d_backward_textbook``, which routes by torch's indices."""
    grad, winner = channels_last(grad_output), channels_last(winner)
    offsets = np.arange(geometry.kernel[0] * geometry.kernel[1], dtype=winner.dtype)
    # grad_offsets[i, j] = dY where offset (i, j) won the window, else 0 (a NaN or inf dY goes to the
    # winner alone, as in torch).
    grad_offsets = keep_where(winner == offsets[:, None, None, None, None], grad)
    return as_nchw(add_windows(grad_offsets.reshape(*geometry.kernel, *grad.shape), input_shape[2:],
                               geometry.stride, geometry.dilation, geometry.pads, overwrite=True))


# ---------------------------------------------------------------------------------------- adaptive avg
def _average_bins(x: np.ndarray, axis: int, bins: list[tuple[int, int]]) -> np.ndarray:
    """Mean of ``x`` over each bin along ``axis`` (one vectorized sum per bin)."""
    shape = list(x.shape)
    shape[axis] = len(bins)
    output = np.empty(shape, dtype=x.dtype)
    for i, (start, end) in enumerate(bins):
        source = (slice(None),) * axis + (slice(start, end),)
        target = (slice(None),) * axis + (slice(i, i + 1),)
        np.sum(x[source], axis=axis, keepdims=True, out=output[target])
        output[target] /= end - start
    return output


def _spread_bins(grad: np.ndarray, axis: int, bins: list[tuple[int, int]], size: int) -> np.ndarray:
    """Adjoint of ``_average_bins``: each bin's gradient, divided by its length, added to its pixels."""
    shape = list(grad.shape)
    shape[axis] = size
    grad_input = zeros(shape, grad.dtype)
    for i, (start, end) in enumerate(bins):
        target = (slice(None),) * axis + (slice(start, end),)
        source = (slice(None),) * axis + (slice(i, i + 1),)
        grad_input[target] += grad[source] / (end - start)
    return grad_input


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def adaptive_avg_pool2d_forward(batched: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """The bins are a product of row bins and column bins, so the rows are averaged first, then the
    columns. Textbook twin: ``pooling.adaptive_avg_pool2d_forward``."""
    out_h, out_w = output_size
    batch, channels, height, width = batched.shape
    # Channels-last memory first (free for a conv's output, a copy otherwise): NumPy picks the
    # order of a reduction's additions from the strides, so reducing a view of any other layout
    # gave other last bits (and, on NCHW memory, ran 2.5 times slower than copy and reduce).
    pixels = np.ascontiguousarray(channels_last(batched))
    if out_h and out_w and height % out_h == 0 and width % out_w == 0:
        # Sizes that divide: the bins tile the input (the tutorial's AdaptiveAvgPool2d(1) is one
        # bin), so each direction is one reduction over a reshaped view; rows first, then columns,
        # as below.
        bin_h, bin_w = height // out_h, width // out_w
        rows = pixels.reshape(batch, out_h, bin_h, width, channels).sum(axis=2) / bin_h
        means = rows.reshape(batch, out_h, out_w, bin_w, channels).sum(axis=3) / bin_w
        return as_nchw(means)
    rows = _average_bins(pixels, 1, adaptive_bins(height, out_h))
    return as_nchw(_average_bins(rows, 2, adaptive_bins(width, out_w)))


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def adaptive_avg_pool2d_backward(grad_output: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """dX = A_h.T dY A_w per plane, written straight into channels-last memory, the layout the next
    backward reads fastest. Textbook twin: ``pooling.adaptive_avg_pool2d_backward_textbook``."""
    batch, channels, height, width = input_shape
    out_h, out_w = grad_output.shape[2:]
    if out_h and out_w and height % out_h == 0 and width % out_w == 0:
        # Tiling bins: each pixel gets its one bin's dY / bin_w / bin_h (divided in that order, as above).
        bin_h, bin_w = height // out_h, width // out_w
        share = channels_last(grad_output)[:, :, None, :, None, :] / bin_w / bin_h
        grad_input = np.empty((batch, out_h, bin_h, out_w, bin_w, channels), grad_output.dtype)
        grad_input[...] = share
        return as_nchw(grad_input.reshape(batch, height, width, channels))
    grad_rows = _spread_bins(channels_last(grad_output), 2, adaptive_bins(width, out_w), width)
    return as_nchw(_spread_bins(grad_rows, 1, adaptive_bins(height, out_h), height))
