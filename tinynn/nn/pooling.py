"""2-D pooling: average, max and adaptive average, each a forward beside its backward, and the modules.

All three loop over the kernel offsets ``(i, j)``, never over pixels: for each offset, the block
of outputs whose tap lands inside the input is one strided slice (``_window.offset_blocks``).

* avg:  ``Y = sum_taps(X) / divisor``;       ``dX[tap] += dY / divisor`` for every tap.
* max:  ``Y = X[winner]``;                    ``dX[winner] += dY`` (only the winning tap).
* adaptive avg: bins ``[floor(i*H/Ho), ceil((i+1)*H/Ho))`` per axis; the pooling is linear and
  separable, ``Y = A_h X A_w.T`` per plane with ``A[i, bin_i] = 1/len(bin_i)``, so ``dX = A_h.T dY A_w``.

Outputs and input gradients are channels-last in memory, like convolution's (see ``_window``).
The slow loop versions are in ``_reference``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinynn.nn._window import (
    PoolGeometry,
    add_windows,
    as_nchw,
    channels_last,
    offset_blocks,
    pool_geometry,
    zeros,
)
from tinynn.nn.activation import keep_where
from tinynn.nn.module import Module


def _batched(op: str, input: np.ndarray) -> tuple[np.ndarray, bool]:
    if input.ndim not in (3, 4) or any(size == 0 for size in input.shape[-3:]):
        raise RuntimeError(f"{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
                           f"but got:{list(input.shape)}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got {input.dtype}")
    return (input[None], True) if input.ndim == 3 else (input, False)


def _check_grad(op: str, grad_output: np.ndarray, expected: tuple[int, ...]) -> None:
    if grad_output.shape != expected:
        raise RuntimeError(f"{op}_backward: expected grad_output of size {list(expected)}, "
                           f"got {list(grad_output.shape)}")


def _unbatch(array: np.ndarray, unbatched: bool) -> np.ndarray:
    return array[0] if unbatched else array


# ---------------------------------------------------------------------------------------- avg pool
def _avg_divisors(input_shape: tuple[int, ...], geometry: PoolGeometry, count_include_pad: bool,
                  divisor_override: int | None, dtype: np.dtype) -> np.ndarray:
    """(Ho, Wo, 1) divisors, torch's rule: the window clipped to the padded input, or to the input."""
    if divisor_override is not None:
        return np.full((*geometry.out_size, 1), divisor_override, dtype=dtype)
    counts = []
    for size, out, kernel, stride, pad in zip(input_shape[2:], geometry.out_size, geometry.kernel, geometry.stride,
                                              geometry.pads[::2]):
        start = np.arange(out) * stride - pad
        end = np.minimum(start + kernel, size + pad)
        counts.append(end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0))
    return np.multiply.outer(counts[0], counts[1]).astype(dtype)[:, :, None]


def _avg_args(input: np.ndarray, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
              divisor_override: int | None) -> tuple[np.ndarray, bool, PoolGeometry]:
    batched, unbatched = _batched("avg_pool2d", input)
    geometry = pool_geometry("avg_pool2d", batched.shape, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    return batched, unbatched, geometry


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def avg_pool2d(input: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
    """Average over each window, like ``torch.nn.functional.avg_pool2d``; (N, C, H, W) -> (N, C, Ho, Wo).

    ``Y[oh, ow] = sum of the window's taps inside the input / divisor``; the divisor counts the
    padding too when ``count_include_pad`` (never the part beyond it), unless ``divisor_override``.
    """
    batched, unbatched, geometry = _avg_args(input, kernel_size, stride, padding, ceil_mode, divisor_override)
    x = channels_last(batched)
    total = zeros((batched.shape[0], *geometry.out_size, batched.shape[1]), batched.dtype)
    for _, _, out_block, in_block in offset_blocks(batched.shape[2:], geometry.out_size, geometry.kernel,
                                                   geometry.stride, geometry.dilation, geometry.pads):
        total[:, out_block[0], out_block[1]] += x[:, in_block[0], in_block[1]]
    total /= _avg_divisors(batched.shape, geometry, count_include_pad, divisor_override, batched.dtype)
    return _unbatch(as_nchw(total), unbatched)


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def avg_pool2d_backward(grad_output: np.ndarray, input: np.ndarray, kernel_size: Any, stride: Any = None,
                        padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: int | None = None) -> np.ndarray:
    """dX: every tap of window (oh, ow) inside the input receives ``dY[oh, ow] / divisor``."""
    batched, unbatched, geometry = _avg_args(input, kernel_size, stride, padding, ceil_mode, divisor_override)
    grad_output = grad_output[None] if unbatched else grad_output
    _check_grad("avg_pool2d", grad_output, (*batched.shape[:2], *geometry.out_size))
    divisors = _avg_divisors(batched.shape, geometry, count_include_pad, divisor_override, batched.dtype)
    grad_per_tap = channels_last(grad_output) / divisors
    # The same (N, Ho, Wo, C) block for every offset: a broadcast view, nothing copied.
    grad_offsets = np.broadcast_to(grad_per_tap, (*geometry.kernel, *grad_per_tap.shape))
    grad_input = add_windows(grad_offsets, batched.shape[2:], geometry.stride, geometry.dilation, geometry.pads)
    return _unbatch(as_nchw(grad_input), unbatched)


# ---------------------------------------------------------------------------------------- max pool
def _max_pool_winners(batched: np.ndarray, geometry: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(output, winner)``: the max of each window, and which kernel offset ``i*kw + j`` holds it.

    Offsets are visited in torch's order (row-major) and an offset wins when its value is
    strictly greater (so a tie keeps the earlier one) or NaN (so the last NaN wins); the first
    tap inside the input wins over nothing, so a window of -inf still picks a real element.
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
    return output, winner


def _flat_indices(winner: np.ndarray, input_shape: tuple[int, ...], geometry: PoolGeometry) -> np.ndarray:
    """torch's ``indices``: the winner's position ``h * W + w`` in its input plane (int64)."""
    width = input_shape[3]
    rows = np.arange(geometry.out_size[0])[:, None, None] * geometry.stride[0] - geometry.pads[0]
    cols = np.arange(geometry.out_size[1])[None, :, None] * geometry.stride[1] - geometry.pads[2]
    i, j = np.divmod(winner.astype(np.int64), geometry.kernel[1])
    return (rows + i * geometry.dilation[0]) * width + cols + j * geometry.dilation[1]


def _winners_from_indices(indices: np.ndarray, input_shape: tuple[int, ...], geometry: PoolGeometry) -> np.ndarray:
    """Inverse of ``_flat_indices``: the kernel offset ``i*kw + j`` that each index points at."""
    height, width = input_shape[2:]
    index = channels_last(indices)
    rows = np.arange(geometry.out_size[0])[:, None, None] * geometry.stride[0] - geometry.pads[0]
    cols = np.arange(geometry.out_size[1])[None, :, None] * geometry.stride[1] - geometry.pads[2]
    h, w = np.divmod(index, width)
    i, i_rest = np.divmod(h - rows, geometry.dilation[0])
    j, j_rest = np.divmod(w - cols, geometry.dilation[1])
    inside = ((index >= 0) & (index < height * width) & (i_rest == 0) & (j_rest == 0)
              & (i >= 0) & (i < geometry.kernel[0]) & (j >= 0) & (j < geometry.kernel[1]))
    if not inside.all():
        raise RuntimeError("max_pool2d_backward: indices do not point into their pooling windows")
    return i * geometry.kernel[1] + j


def _max_args(input: np.ndarray, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
              ceil_mode: bool) -> tuple[np.ndarray, bool, PoolGeometry]:
    batched, unbatched = _batched("max_pool2d", input)
    return batched, unbatched, pool_geometry("max_pool2d", batched.shape, kernel_size, stride, padding, dilation,
                                             ceil_mode)


def max_pool2d(input: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Max over each window (padding never wins), like ``torch.nn.functional.max_pool2d``.

    With ``return_indices`` also returns torch's int64 indices (``h * W + w`` within the plane).
    """
    batched, unbatched, geometry = _max_args(input, kernel_size, stride, padding, dilation, ceil_mode)
    output, winner = _max_pool_winners(batched, geometry)
    output = _unbatch(as_nchw(output), unbatched)
    if not return_indices:
        return output
    return output, _unbatch(as_nchw(_flat_indices(winner, batched.shape, geometry)), unbatched)


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs silently, as in torch
def _max_pool_grad(grad_output: np.ndarray, winner: np.ndarray, input_shape: tuple[int, ...],
                   geometry: PoolGeometry) -> np.ndarray:
    grad = channels_last(grad_output)
    offsets = np.arange(geometry.kernel[0] * geometry.kernel[1], dtype=winner.dtype)
    # grad_offsets[i, j] = dY where offset (i, j) won the window, else 0 (a NaN or inf dY goes to the
    # winner alone, as in torch).
    grad_offsets = keep_where(winner == offsets[:, None, None, None, None], grad)
    return as_nchw(add_windows(grad_offsets.reshape(*geometry.kernel, *grad.shape), input_shape[2:],
                               geometry.stride, geometry.dilation, geometry.pads, overwrite=True))


def max_pool2d_backward(grad_output: np.ndarray, input: np.ndarray, kernel_size: Any, stride: Any = None,
                        padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
                        indices: np.ndarray | None = None) -> np.ndarray:
    """dX: each window's dY goes, whole, to the element that won it (``indices``; recomputed if None)."""
    batched, unbatched, geometry = _max_args(input, kernel_size, stride, padding, dilation, ceil_mode)
    grad_output = grad_output[None] if unbatched else grad_output
    _check_grad("max_pool2d", grad_output, (*batched.shape[:2], *geometry.out_size))
    if indices is None:
        winner = _max_pool_winners(batched, geometry)[1]
    else:
        indices = indices[None] if unbatched else indices
        _check_grad("max_pool2d", indices, grad_output.shape)
        winner = _winners_from_indices(indices, batched.shape, geometry)
    return _unbatch(_max_pool_grad(grad_output, winner, batched.shape, geometry), unbatched)


# ---------------------------------------------------------------------------------------- adaptive avg
def _adaptive_size(input_shape: tuple[int, ...], output_size: Any) -> tuple[int, int]:
    if isinstance(output_size, (int, np.integer)) or output_size is None:
        output_size = (output_size, output_size)
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise RuntimeError("adaptive_avg_pool2d: output_size must be 2")
    # None keeps the input's size along that axis.
    size = tuple(int(input_shape[-2 + k] if s is None else s) for k, s in enumerate(output_size))
    if size[0] < 0 or size[1] < 0:
        raise RuntimeError(f"adaptive_avg_pool2d: elements of output_size must be greater than or equal to 0 but "
                           f"received {{{size[0]}, {size[1]}}}")
    return size


def _adaptive_args(input: np.ndarray, output_size: Any) -> tuple[np.ndarray, bool, tuple[int, int]]:
    if input.ndim not in (3, 4):
        raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    for dim in range(input.ndim - 3, input.ndim):
        if input.shape[dim] == 0:
            raise RuntimeError(f"adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch "
                               f"dimensions, but input has sizes {list(input.shape)} with dimension {dim} being empty")
    if input.dtype.kind != "f":
        raise TypeError(f"adaptive_avg_pool2d: expected a floating-point input, got {input.dtype}")
    size = _adaptive_size(input.shape, output_size)
    return (input[None], True, size) if input.ndim == 3 else (input, False, size)


def adaptive_bins(in_size: int, out_size: int) -> list[tuple[int, int]]:
    """torch's bins: ``[floor(i*in/out), ceil((i+1)*in/out))``; they overlap when sizes don't divide."""
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)) for i in range(out_size)]


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
def adaptive_avg_pool2d(input: np.ndarray, output_size: Any) -> np.ndarray:
    """Average over torch's adaptive bins, like ``torch.nn.functional.adaptive_avg_pool2d``.

    The bins are a product of row bins and column bins, so the rows are averaged first, then the columns.
    """
    batched, unbatched, (out_h, out_w) = _adaptive_args(input, output_size)
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
        return _unbatch(as_nchw(means), unbatched)
    rows = _average_bins(pixels, 1, adaptive_bins(height, out_h))
    return _unbatch(as_nchw(_average_bins(rows, 2, adaptive_bins(width, out_w))), unbatched)


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def adaptive_avg_pool2d_backward(grad_output: np.ndarray, input: np.ndarray) -> np.ndarray:
    """dX = A_h.T dY A_w per plane: each input pixel gets ``dY / bin area`` from every bin holding it.

    Written straight into channels-last memory, the layout the next backward reads fastest.
    """
    batched, unbatched = (input[None], True) if input.ndim == 3 else (input, False)
    grad_output = grad_output[None] if unbatched else grad_output
    batch, channels, height, width = batched.shape
    if grad_output.ndim != 4 or grad_output.shape[:2] != (batch, channels):
        raise RuntimeError(f"adaptive_avg_pool2d_backward: grad_output of size {list(grad_output.shape)} does not "
                           f"match input of size {list(batched.shape)}")
    out_h, out_w = grad_output.shape[2:]
    if out_h and out_w and height % out_h == 0 and width % out_w == 0:
        # Tiling bins: each pixel gets its one bin's dY / bin_w / bin_h (divided in that order, as above).
        bin_h, bin_w = height // out_h, width // out_w
        share = channels_last(grad_output)[:, :, None, :, None, :] / bin_w / bin_h
        grad_input = np.empty((batch, out_h, bin_h, out_w, bin_w, channels), grad_output.dtype)
        grad_input[...] = share
        return _unbatch(as_nchw(grad_input.reshape(batch, height, width, channels)), unbatched)
    grad_rows = _spread_bins(channels_last(grad_output), 2, adaptive_bins(width, out_w), width)
    return _unbatch(as_nchw(_spread_bins(grad_rows, 1, adaptive_bins(height, out_h), height)), unbatched)


# ---------------------------------------------------------------------------------------- modules
def _repr_value(value: Any) -> str:
    return str(tuple(value)) if isinstance(value, list) else str(value)


class AvgPool2d(Module):
    """Average pooling (``torch.nn.AvgPool2d``); stride defaults to kernel_size."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.ceil_mode = padding, ceil_mode
        self.count_include_pad, self.divisor_override = count_include_pad, divisor_override

    def _args(self) -> tuple[Any, ...]:
        return (self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
                self.divisor_override)

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = avg_pool2d(input, *self._args())
        self.save_for_backward(input)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (input,) = self.saved_tensors()
        return avg_pool2d_backward(grad_output, input, *self._args()) if needs_input_grad else None

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(Module):
    """Max pooling (``torch.nn.MaxPool2d``); stride defaults to kernel_size."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
                 return_indices: bool = False, ceil_mode: bool = False) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride if stride is not None else kernel_size
        self.padding, self.dilation = padding, dilation
        self.return_indices, self.ceil_mode = return_indices, ceil_mode

    def forward(self, input: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        batched, unbatched, geometry = _max_args(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                                 self.ceil_mode)
        output, winner = _max_pool_winners(batched, geometry)
        self.save_for_backward(winner, batched.shape, geometry, unbatched)
        output = _unbatch(as_nchw(output), unbatched)
        if not self.return_indices:
            return output
        return output, _unbatch(as_nchw(_flat_indices(winner, batched.shape, geometry)), unbatched)

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        winner, input_shape, geometry, unbatched = self.saved_tensors()
        if not needs_input_grad:
            return None
        grad_output = grad_output[None] if unbatched else grad_output
        return _unbatch(_max_pool_grad(grad_output, winner, input_shape, geometry), unbatched)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}, "
                f"dilation={self.dilation}, ceil_mode={self.ceil_mode}")


class AdaptiveAvgPool2d(Module):
    """Adaptive average pooling to ``output_size`` (``torch.nn.AdaptiveAvgPool2d``); None keeps a size."""

    def __init__(self, output_size: Any) -> None:
        super().__init__()
        self.output_size = output_size

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = adaptive_avg_pool2d(input, self.output_size)
        self.save_for_backward(input)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (input,) = self.saved_tensors()
        return adaptive_avg_pool2d_backward(grad_output, input) if needs_input_grad else None

    def extra_repr(self) -> str:
        return f"output_size={_repr_value(self.output_size)}"

