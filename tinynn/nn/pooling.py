"""2-D pooling: average, max and adaptive average, each a forward beside its backward, and the modules.

Average and max pooling read the same windows as a convolution (``conv.windows``: a strided view
of the padded input, ``(N, C, Ho, Wo, kh, kw)``), and send gradients back through its adjoint
(``conv.add_windows``: one add per kernel offset):

* avg:  ``Y = sum(window) / divisor``;   every tap of the window receives ``dY / divisor``.
* max:  ``Y = max(window)``;             only the tap that won receives ``dY`` (torch's tie rule
  decides the winner: the first of equal maxima, but the last NaN).
* adaptive avg: the mean over torch's bins ``[floor(i*H/Ho), ceil((i+1)*H/Ho))`` per axis; every
  pixel of a bin receives ``dY / bin area`` (bins overlap when the sizes do not divide).

The loop versions are in ``tinynn.nn.naive``; the fast ones in ``tinynn/_engine/pooling.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinynn._textbook import is_textbook
from tinynn.nn._geometry import (
    PoolGeometry,
    adaptive_args,
    avg_args,
    check_grad,
    max_args,
    unbatch,
    winners_from_indices,
)
from tinynn.nn.conv import add_windows, pad, windows
from tinynn.nn.module import Module


def pool_pads(input_shape: tuple[int, ...], geometry: PoolGeometry) -> tuple[int, int, int, int]:
    """The pooling's padding, extended on the bottom and right as far as the last window reaches
    (with ``ceil_mode`` it may hang over the padding)."""
    (height, width), (out_h, out_w) = input_shape[2:], geometry.out_size
    top, _, left, _ = geometry.pads
    reach_h = (out_h - 1) * geometry.stride[0] + (geometry.kernel[0] - 1) * geometry.dilation[0] + 1
    reach_w = (out_w - 1) * geometry.stride[1] + (geometry.kernel[1] - 1) * geometry.dilation[1] + 1
    return top, max(0, reach_h - top - height), left, max(0, reach_w - left - width)


def pool_windows(input: np.ndarray, geometry: PoolGeometry, fill: float) -> np.ndarray:
    """The ``(N, C, Ho, Wo, kh, kw)`` windows of ``input`` padded with ``fill`` (``pool_pads``)."""
    padded = pad(input, pool_pads(input.shape, geometry), fill)
    return windows(padded, geometry.kernel, geometry.stride, geometry.dilation)[:, :, :geometry.out_size[0],
                                                                                :geometry.out_size[1]]


def _add_windows_cropped(grad_windows: np.ndarray, input_shape: tuple[int, ...], geometry: PoolGeometry
                         ) -> np.ndarray:
    """``conv.add_windows`` into the padded input, then the padding cut off: the adjoint of ``pool_windows``."""
    top, bottom, left, right = pool_pads(input_shape, geometry)
    batch, channels, height, width = input_shape
    padded_shape = (batch, channels, top + height + bottom, left + width + right)
    grad_padded = add_windows(grad_windows, padded_shape, geometry.stride, geometry.dilation)
    return grad_padded[:, :, top:top + height, left:left + width]


# ---------------------------------------------------------------------------------------- avg pool
def avg_divisors(input_shape: tuple[int, ...], geometry: PoolGeometry, count_include_pad: bool,
                 divisor_override: int | None) -> np.ndarray:
    """(Ho, Wo) divisors, torch's rule: the window clipped to the padded input (``count_include_pad``),
    or to the input itself; ``divisor_override`` replaces them all."""
    if divisor_override is not None:
        return np.full(geometry.out_size, divisor_override)
    counts = []
    for size, out, kernel, stride, pad_before in zip(input_shape[2:], geometry.out_size, geometry.kernel,
                                                     geometry.stride, geometry.pads[::2]):
        start = np.arange(out) * stride - pad_before
        end = np.minimum(start + kernel, size + pad_before)
        counts.append(end - start if count_include_pad else np.minimum(end, size) - np.maximum(start, 0))
    return np.multiply.outer(counts[0], counts[1])


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def avg_pool2d_forward(input: np.ndarray, geometry: PoolGeometry, divisors: np.ndarray) -> np.ndarray:
    """``Y[n, c, oh, ow] = sum of the window's taps / divisor[oh, ow]``; loop twin: ``naive.avg_pool2d``."""
    return pool_windows(input, geometry, 0.0).sum(axis=(4, 5)) / divisors.astype(input.dtype)


@np.errstate(invalid="ignore", over="ignore")
def avg_pool2d_backward_textbook(grad_output: np.ndarray, input_shape: tuple[int, ...], geometry: PoolGeometry,
                                 divisors: np.ndarray) -> np.ndarray:
    """Every tap of window (oh, ow) receives ``dY[oh, ow] / divisor``; loop twin: ``naive.avg_pool2d_backward``."""
    grad_per_tap = grad_output / divisors.astype(grad_output.dtype)
    grad_windows = np.broadcast_to(grad_per_tap[..., None, None], (*grad_per_tap.shape, *geometry.kernel))
    return _add_windows_cropped(grad_windows, input_shape, geometry)


def avg_pool2d(input: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
               count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
    """Average over each window, like ``torch.nn.functional.avg_pool2d``; (N, C, H, W) -> (N, C, Ho, Wo).

    The divisor counts the padding too when ``count_include_pad`` (never the part beyond it),
    unless ``divisor_override``.
    """
    batched, unbatched, geometry = avg_args(input, kernel_size, stride, padding, ceil_mode, divisor_override)
    divisors = avg_divisors(batched.shape, geometry, count_include_pad, divisor_override)
    if is_textbook():
        return unbatch(avg_pool2d_forward(batched, geometry, divisors), unbatched)
    from tinynn._engine import pooling as engine  # ENGINE DISPATCH: the same sums, offset by offset

    return unbatch(engine.avg_pool2d_forward(batched, geometry, divisors), unbatched)


def avg_pool2d_backward(grad_output: np.ndarray, input: np.ndarray, kernel_size: Any, stride: Any = None,
                        padding: Any = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                        divisor_override: int | None = None) -> np.ndarray:
    """dX: every tap of window (oh, ow) inside the input receives ``dY[oh, ow] / divisor``."""
    batched, unbatched, geometry = avg_args(input, kernel_size, stride, padding, ceil_mode, divisor_override)
    grad_output = grad_output[None] if unbatched else grad_output
    check_grad("avg_pool2d", grad_output, (*batched.shape[:2], *geometry.out_size))
    divisors = avg_divisors(batched.shape, geometry, count_include_pad, divisor_override)
    if is_textbook():
        return unbatch(avg_pool2d_backward_textbook(grad_output, batched.shape, geometry, divisors), unbatched)
    from tinynn._engine import pooling as engine  # ENGINE DISPATCH: col2im by phases, on channels-last memory

    return unbatch(engine.avg_pool2d_backward(grad_output, batched.shape, geometry, divisors), unbatched)


# ---------------------------------------------------------------------------------------- max pool
@np.errstate(invalid="ignore")  # comparisons with NaN
def max_pool2d_forward(input: np.ndarray, geometry: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(Y, indices)``: each window's max, and where it sits as torch numbers it (``h * W + w``).

    torch scans a window's taps row by row and takes a tap that is greater than the best so far,
    or NaN: so of equal maxima the first wins, of NaNs the last. Padding never wins (it is -inf,
    and a real -inf tied with it wins). Loop twin: ``naive.max_pool2d``.
    """
    height, width = input.shape[2:]
    taps_per_window = geometry.kernel[0] * geometry.kernel[1]
    taps = pool_windows(input, geometry, -np.inf).reshape(*input.shape[:2], *geometry.out_size, taps_per_window)
    inside = pool_windows(np.ones((1, 1, height, width), dtype=bool), geometry, False).reshape(
        1, 1, *geometry.out_size, taps_per_window)
    best = taps.max(axis=-1)  # NaN if any tap is NaN
    first_best = np.argmax(inside & (taps == best[..., None]), axis=-1)
    last_nan = taps.shape[-1] - 1 - np.argmax(np.isnan(taps)[..., ::-1], axis=-1)
    winner = np.where(np.isnan(best), last_nan, first_best)
    i, j = np.divmod(winner, geometry.kernel[1])  # the winning kernel offset, then its pixel:
    rows = np.arange(geometry.out_size[0])[:, None] * geometry.stride[0] - geometry.pads[0] + i * geometry.dilation[0]
    cols = np.arange(geometry.out_size[1]) * geometry.stride[1] - geometry.pads[2] + j * geometry.dilation[1]
    return best, (rows * width + cols).astype(np.int64)


@np.errstate(invalid="ignore", over="ignore")
def max_pool2d_backward_textbook(grad_output: np.ndarray, indices: np.ndarray, input_shape: tuple[int, ...]
                                 ) -> np.ndarray:
    """The routing: ``dX[n, c].flat[indices[n, c, oh, ow]] += dY[n, c, oh, ow]``; nothing reaches the
    taps that lost. Loop twin: ``naive.max_pool2d_backward``."""
    batch, channels, height, width = input_shape
    planes = batch * channels
    grad_input = np.zeros((planes, height * width), dtype=grad_output.dtype)
    windows_per_plane = indices.shape[2] * indices.shape[3]
    np.add.at(grad_input, (np.arange(planes)[:, None], indices.reshape(planes, windows_per_plane)),
              grad_output.reshape(planes, windows_per_plane))
    return grad_input.reshape(input_shape)


# Engine dispatch: the engine keeps each window's winning offset (int16) rather than torch's index,
# and its backward routes with it; ``saved`` is whichever the forward made.
def _max_forward(input: np.ndarray, geometry: PoolGeometry, return_indices: bool
                 ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, bool]:
    """``(Y, indices or None, saved, on_engine)``."""
    if is_textbook():
        output, indices = max_pool2d_forward(input, geometry)
        return output, indices, indices, False
    from tinynn._engine import pooling as engine  # ENGINE DISPATCH: offset by offset, on channels-last memory

    output, winner = engine.max_pool2d_forward(input, geometry)
    return output, engine.flat_indices(winner, input.shape, geometry) if return_indices else None, winner, True


def _max_backward(grad_output: np.ndarray, saved: np.ndarray, on_engine: bool, input_shape: tuple[int, ...],
                  geometry: PoolGeometry) -> np.ndarray:
    if not on_engine:
        return max_pool2d_backward_textbook(grad_output, saved, input_shape)
    from tinynn._engine import pooling as engine

    return engine.max_pool2d_backward(grad_output, saved, input_shape, geometry)


def max_pool2d(input: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0, dilation: Any = 1,
               ceil_mode: bool = False, return_indices: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Max over each window (padding never wins), like ``torch.nn.functional.max_pool2d``.

    With ``return_indices`` also returns torch's int64 indices (``h * W + w`` within the plane).
    """
    batched, unbatched, geometry = max_args(input, kernel_size, stride, padding, dilation, ceil_mode)
    output, indices, _, _ = _max_forward(batched, geometry, return_indices)
    if not return_indices:
        return unbatch(output, unbatched)
    return unbatch(output, unbatched), unbatch(indices, unbatched)


def max_pool2d_backward(grad_output: np.ndarray, input: np.ndarray, kernel_size: Any, stride: Any = None,
                        padding: Any = 0, dilation: Any = 1, ceil_mode: bool = False,
                        indices: np.ndarray | None = None) -> np.ndarray:
    """dX: each window's dY goes, whole, to the element that won it (``indices``; recomputed if None)."""
    batched, unbatched, geometry = max_args(input, kernel_size, stride, padding, dilation, ceil_mode)
    grad_output = grad_output[None] if unbatched else grad_output
    check_grad("max_pool2d", grad_output, (*batched.shape[:2], *geometry.out_size))
    if indices is None:
        _, _, saved, on_engine = _max_forward(batched, geometry, return_indices=False)
    else:
        indices = indices[None] if unbatched else indices
        check_grad("max_pool2d", indices, grad_output.shape)
        winner = winners_from_indices(indices, batched.shape, geometry)
        on_engine = not is_textbook()
        saved = winner.astype(np.int16) if on_engine else indices
    return unbatch(_max_backward(grad_output, saved, on_engine, batched.shape, geometry), unbatched)


# ---------------------------------------------------------------------------------------- adaptive avg
def adaptive_bins(in_size: int, out_size: int) -> list[tuple[int, int]]:
    """torch's bins: ``[floor(i*in/out), ceil((i+1)*in/out))``; they overlap when sizes don't divide."""
    return [((i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)) for i in range(out_size)]


@np.errstate(invalid="ignore", over="ignore")
def adaptive_avg_pool2d_forward(input: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """``Y[n, c, i, j]`` = the mean of X over row bin i and column bin j; loop twin: ``naive.adaptive_avg_pool2d``."""
    output = np.empty((*input.shape[:2], *output_size), dtype=input.dtype)
    for i, (top, bottom) in enumerate(adaptive_bins(input.shape[2], output_size[0])):
        for j, (left, right) in enumerate(adaptive_bins(input.shape[3], output_size[1])):
            area = (bottom - top) * (right - left)
            output[:, :, i, j] = input[:, :, top:bottom, left:right].sum(axis=(2, 3)) / area
    return output


@np.errstate(invalid="ignore", over="ignore")
def adaptive_avg_pool2d_backward_textbook(grad_output: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """Every pixel of bin (i, j) receives ``dY[n, c, i, j] / bin area``; overlapping bins add up."""
    grad_input = np.zeros(input_shape, dtype=grad_output.dtype)
    for i, (top, bottom) in enumerate(adaptive_bins(input_shape[2], grad_output.shape[2])):
        for j, (left, right) in enumerate(adaptive_bins(input_shape[3], grad_output.shape[3])):
            area = (bottom - top) * (right - left)
            grad_input[:, :, top:bottom, left:right] += grad_output[:, :, i, j, None, None] / area
    return grad_input


def adaptive_avg_pool2d(input: np.ndarray, output_size: Any) -> np.ndarray:
    """Average over torch's adaptive bins, like ``torch.nn.functional.adaptive_avg_pool2d``."""
    batched, unbatched, size = adaptive_args(input, output_size)
    if is_textbook():
        return unbatch(adaptive_avg_pool2d_forward(batched, size), unbatched)
    from tinynn._engine import pooling as engine  # ENGINE DISPATCH: rows then columns, channels-last

    return unbatch(engine.adaptive_avg_pool2d_forward(batched, size), unbatched)


def adaptive_avg_pool2d_backward(grad_output: np.ndarray, input: np.ndarray) -> np.ndarray:
    """dX: each input pixel gets ``dY / bin area`` from every bin holding it."""
    batched, unbatched = (input[None], True) if input.ndim == 3 else (input, False)
    grad_output = grad_output[None] if unbatched else grad_output
    if grad_output.ndim != 4 or grad_output.shape[:2] != batched.shape[:2]:
        raise RuntimeError(f"adaptive_avg_pool2d_backward: grad_output of size {list(grad_output.shape)} does not "
                           f"match input of size {list(batched.shape)}")
    if is_textbook():
        return unbatch(adaptive_avg_pool2d_backward_textbook(grad_output, batched.shape), unbatched)
    from tinynn._engine import pooling as engine  # ENGINE DISPATCH

    return unbatch(engine.adaptive_avg_pool2d_backward(grad_output, batched.shape), unbatched)


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
        batched, unbatched, geometry = max_args(input, self.kernel_size, self.stride, self.padding, self.dilation,
                                                 self.ceil_mode)
        output, indices, saved, on_engine = _max_forward(batched, geometry, self.return_indices)
        self.save_for_backward(saved, on_engine, batched.shape, geometry, unbatched)
        if not self.return_indices:
            return unbatch(output, unbatched)
        return unbatch(output, unbatched), unbatch(indices, unbatched)

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        saved, on_engine, input_shape, geometry, unbatched = self.saved_tensors()
        if not needs_input_grad:
            return None
        grad_output = grad_output[None] if unbatched else grad_output
        return unbatch(_max_backward(grad_output, saved, on_engine, input_shape, geometry), unbatched)

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
