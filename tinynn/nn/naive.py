"""Loop versions of convolution and pooling that read like their definitions: the place to start.

Each op here loops over output pixels and kernel taps, one multiply-add (or comparison) at a time,
vectorized only over the batch and channels, exactly as the formula in its docstring is written.
``conv.py`` and ``pooling.py`` compute the same things with whole-array NumPy (im2col, window
views); the engine computes them fast. The tests hold all three to torch and to each other.
``batch_norm_backward`` is batch norm's backward as the staged chain rule, one node at a time.

Inputs are batched ``(N, C, H, W)`` arrays; the arguments are checked and normalised by the same
code as the other versions (``_geometry``). Use them to check your own understanding:

    >>> import numpy as np
    >>> from tinynn.nn import naive, functional as F
    >>> x, w = np.random.randn(2, 3, 5, 5), np.random.randn(4, 3, 3, 3)
    >>> bool(np.allclose(naive.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1)))
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from tinynn.nn._geometry import ConvGeometry, conv_geometry, pool_geometry
from tinynn.nn.pooling import adaptive_bins


def _tap(o: int, k: int, stride: int, dilation: int, pad_before: int) -> int:
    """Input coordinate read by output ``o`` at kernel offset ``k``."""
    return o * stride + k * dilation - pad_before


def conv_taps(geometry: ConvGeometry, height: int, width: int) -> Iterator[tuple[int, int, int, int, int, int]]:
    """Every ``(oh, ow, i, j, h, w)``: output pixel (oh, ow) reads input pixel (h, w) at kernel
    offset (i, j), with ``h = oh*sh + i*dh - top`` and ``w = ow*sw + j*dw - left``. Taps that fall
    on the padding read zero, so they are left out."""
    for oh in range(geometry.out_size[0]):
        for ow in range(geometry.out_size[1]):
            for i in range(geometry.kernel[0]):
                h = _tap(oh, i, geometry.stride[0], geometry.dilation[0], geometry.pads[0])
                for j in range(geometry.kernel[1]):
                    w = _tap(ow, j, geometry.stride[1], geometry.dilation[1], geometry.pads[2])
                    if 0 <= h < height and 0 <= w < width:
                        yield oh, ow, i, j, h, w


# ---------------------------------------------------------------------------------------- conv2d
def im2col(input: np.ndarray, kernel_size: Any, stride: Any = 1, padding: Any = 0, dilation: Any = 1) -> np.ndarray:
    """``cols[n*Ho*Wo + oh*Wo + ow, c*kh*kw + i*kw + j] = X[n, c, h, w]`` (0 where (h, w) is padding):
    each row one output pixel's window."""
    batch, channels, height, width = input.shape
    kernel_h, kernel_w = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    geo = conv_geometry(input.shape, (1, channels, kernel_h, kernel_w), stride, padding, dilation, 1)
    cols = np.zeros((batch, *geo.out_size, channels, kernel_h, kernel_w), dtype=input.dtype)
    for oh, ow, i, j, h, w in conv_taps(geo, height, width):
        cols[:, oh, ow, :, i, j] = input[:, :, h, w]
    return cols.reshape(batch * geo.out_size[0] * geo.out_size[1], channels * kernel_h * kernel_w)


def col2im(grad_cols: np.ndarray, input_shape: tuple[int, ...], kernel_size: Any, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1) -> np.ndarray:
    """The adjoint of ``im2col``: ``dX[n, c, h, w] += dcols[n*Ho*Wo + oh*Wo + ow, c*kh*kw + i*kw + j]``
    for every window tap that read (h, w)."""
    batch, channels, height, width = input_shape
    kernel_h, kernel_w = (kernel_size, kernel_size) if isinstance(kernel_size, int) else kernel_size
    geo = conv_geometry(input_shape, (1, channels, kernel_h, kernel_w), stride, padding, dilation, 1)
    grad = grad_cols.reshape(batch, *geo.out_size, channels, kernel_h, kernel_w)
    grad_input = np.zeros(input_shape, dtype=grad_cols.dtype)
    for oh, ow, i, j, h, w in conv_taps(geo, height, width):
        grad_input[:, :, h, w] += grad[:, oh, ow, :, i, j]
    return grad_input


def conv2d(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """``Y[n, o, oh, ow] = b[o] + sum_{c,i,j} W[o, c, i, j] * X[n, g*C/g + c, h, w]``, g the group of o
    (see ``conv_taps`` for h and w; taps on the padding read zero)."""
    batch, channels, height, width = input.shape
    geo = conv_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    out_per_group, in_per_group = weight.shape[0] // groups, channels // groups
    output = np.zeros((batch, weight.shape[0], *geo.out_size), dtype=input.dtype)
    for oh, ow, i, j, h, w in conv_taps(geo, height, width):
        for g in range(groups):
            outs = slice(g * out_per_group, (g + 1) * out_per_group)
            ins = slice(g * in_per_group, (g + 1) * in_per_group)
            output[:, outs, oh, ow] += input[:, ins, h, w] @ weight[outs, :, i, j].T
    if bias is not None:
        output += bias[:, None, None]
    return output


def conv2d_backward(grad_output: np.ndarray, input: np.ndarray, weight: np.ndarray, stride: Any = 1,
                    padding: Any = 0, dilation: Any = 1, groups: int = 1
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each term ``W[o, c, i, j] * X[n, c', h, w]`` of the forward sends ``dY[n, o, oh, ow]`` to both factors:
    ``dX[n, c', h, w] += dY * W[o, c, i, j]`` and ``dW[o, c, i, j] += dY * X[n, c', h, w]``; ``db = sum dY``.
    """
    channels, height, width = input.shape[1:]
    geo = conv_geometry(input.shape, weight.shape, stride, padding, dilation, groups)
    out_per_group, in_per_group = weight.shape[0] // groups, channels // groups
    grad_input, grad_weight = np.zeros_like(input), np.zeros_like(weight)
    for oh, ow, i, j, h, w in conv_taps(geo, height, width):
        for g in range(groups):
            outs = slice(g * out_per_group, (g + 1) * out_per_group)
            ins = slice(g * in_per_group, (g + 1) * in_per_group)
            grad_input[:, ins, h, w] += grad_output[:, outs, oh, ow] @ weight[outs, :, i, j]
            grad_weight[outs, :, i, j] += grad_output[:, outs, oh, ow].T @ input[:, ins, h, w]
    return grad_input, grad_weight, grad_output.sum(axis=(0, 2, 3))


# ---------------------------------------------------------------------------------------- pooling
def _window_taps(o: int, size: int, kernel: int, stride: int, dilation: int, pad: int) -> list[int]:
    """Input coordinates of window ``o`` that lie inside the input, in order."""
    taps = (_tap(o, k, stride, dilation, pad) for k in range(kernel))
    return [t for t in taps if 0 <= t < size]


def max_pool2d(input: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0,
               dilation: Any = 1, ceil_mode: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """torch's CPU loop: ``(output, indices)``; a tap replaces the max if greater or NaN; indices are ``h*W + w``."""
    batch, channels, height, width = input.shape
    geo = pool_geometry("max_pool2d", input.shape, kernel_size, stride, padding, dilation, ceil_mode)
    output = np.empty((batch, channels, *geo.out_size), dtype=input.dtype)
    indices = np.empty(output.shape, dtype=np.int64)
    for oh in range(geo.out_size[0]):
        rows = _window_taps(oh, height, geo.kernel[0], geo.stride[0], geo.dilation[0], geo.pads[0])
        for ow in range(geo.out_size[1]):
            cols = _window_taps(ow, width, geo.kernel[1], geo.stride[1], geo.dilation[1], geo.pads[2])
            best = np.full((batch, channels), -np.inf, dtype=input.dtype)
            best_index = np.full((batch, channels), rows[0] * width + cols[0])
            for h in rows:
                for w in cols:
                    value = input[:, :, h, w]
                    replace = (value > best) | np.isnan(value)
                    best = np.where(replace, value, best)
                    best_index = np.where(replace, h * width + w, best_index)
            output[:, :, oh, ow], indices[:, :, oh, ow] = best, best_index
    return output, indices


def max_pool2d_backward(grad_output: np.ndarray, input: np.ndarray, indices: np.ndarray) -> np.ndarray:
    """``dX.flat[indices[n, c, oh, ow]] += dY[n, c, oh, ow]`` plane by plane."""
    batch, channels, height, width = input.shape
    grad_input = np.zeros((batch, channels, height * width), dtype=grad_output.dtype)
    for n in range(batch):
        for c in range(channels):
            for index, grad in zip(indices[n, c].ravel(), grad_output[n, c].ravel()):
                grad_input[n, c, index] += grad
    return grad_input.reshape(input.shape)


def _avg_window(o: int, size: int, kernel: int, stride: int, pad: int) -> tuple[int, int, int]:
    """torch's avg-pool window: ``(start, end, pool_size)``; pool_size counts padding, not what lies beyond it."""
    start = o * stride - pad
    end = min(start + kernel, size + pad)
    pool_size = end - start
    return max(start, 0), min(end, size), pool_size


def avg_pool2d(input: np.ndarray, kernel_size: Any, stride: Any = None, padding: Any = 0,
               ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> np.ndarray:
    """``Y[n, c, oh, ow] = sum(X over the window inside the input) / divisor`` (torch's divisor rule)."""
    batch, channels, height, width = input.shape
    geo = pool_geometry("avg_pool2d", input.shape, kernel_size, stride, padding, 1, ceil_mode)
    output = np.empty((batch, channels, *geo.out_size), dtype=input.dtype)
    for oh in range(geo.out_size[0]):
        h0, h1, pool_h = _avg_window(oh, height, geo.kernel[0], geo.stride[0], geo.pads[0])
        for ow in range(geo.out_size[1]):
            w0, w1, pool_w = _avg_window(ow, width, geo.kernel[1], geo.stride[1], geo.pads[2])
            divisor = divisor_override or (pool_h * pool_w if count_include_pad else (h1 - h0) * (w1 - w0))
            output[:, :, oh, ow] = input[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / divisor
    return output


def avg_pool2d_backward(grad_output: np.ndarray, input: np.ndarray, kernel_size: Any,
                        stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
                        count_include_pad: bool = True, divisor_override: int | None = None) -> np.ndarray:
    """Every input pixel of window (oh, ow) receives ``dY[n, c, oh, ow] / divisor``."""
    height, width = input.shape[2:]
    geo = pool_geometry("avg_pool2d", input.shape, kernel_size, stride, padding, 1, ceil_mode)
    grad_input = np.zeros_like(input, dtype=grad_output.dtype)
    for oh in range(geo.out_size[0]):
        h0, h1, pool_h = _avg_window(oh, height, geo.kernel[0], geo.stride[0], geo.pads[0])
        for ow in range(geo.out_size[1]):
            w0, w1, pool_w = _avg_window(ow, width, geo.kernel[1], geo.stride[1], geo.pads[2])
            divisor = divisor_override or (pool_h * pool_w if count_include_pad else (h1 - h0) * (w1 - w0))
            grad_input[:, :, h0:h1, w0:w1] += (grad_output[:, :, oh, ow] / divisor)[:, :, None, None]
    return grad_input


def adaptive_avg_pool2d(input: np.ndarray, output_size: tuple[int, int]) -> np.ndarray:
    """``Y[n, c, i, j]`` = mean of X over rows ``bin_i`` and columns ``bin_j`` (torch's bins)."""
    row_bins, col_bins = adaptive_bins(input.shape[2], output_size[0]), adaptive_bins(input.shape[3], output_size[1])
    output = np.empty((*input.shape[:2], *output_size), dtype=input.dtype)
    for i, (h0, h1) in enumerate(row_bins):
        for j, (w0, w1) in enumerate(col_bins):
            output[:, :, i, j] = input[:, :, h0:h1, w0:w1].sum(axis=(2, 3)) / ((h1 - h0) * (w1 - w0))
    return output


def adaptive_avg_pool2d_backward(grad_output: np.ndarray, input: np.ndarray) -> np.ndarray:
    """Every pixel of bin (i, j) receives ``dY[n, c, i, j] / bin area``; overlapping bins add up."""
    out_h, out_w = grad_output.shape[2:]
    row_bins, col_bins = adaptive_bins(input.shape[2], out_h), adaptive_bins(input.shape[3], out_w)
    grad_input = np.zeros_like(input, dtype=grad_output.dtype)
    for i, (h0, h1) in enumerate(row_bins):
        for j, (w0, w1) in enumerate(col_bins):
            grad_input[:, :, h0:h1, w0:w1] += (grad_output[:, :, i, j] / ((h1 - h0) * (w1 - w0)))[:, :, None, None]
    return grad_input


def batch_norm_backward(grad_output: np.ndarray, input: np.ndarray, weight: np.ndarray,
                        eps: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Batch norm's ``(dX, dgamma, dbeta)`` (batch statistics) by the staged chain rule, CS231n-style.

    The forward is split into nodes of one operation each; the backward visits them in reverse,
    each line one local derivative times the gradient arriving from above. Summing the paths by
    hand gives the compact ``dX = invstd / n * (n dXhat - sum(dXhat) - xhat * sum(dXhat * xhat))``
    of ``tinynn.nn.batchnorm``; the tests check that the two agree. Input (N, C, *), weight (C,).
    """
    axes = (0, *range(2, input.ndim))
    n = input.size // input.shape[1]
    gamma = weight.reshape(1, -1, *([1] * (input.ndim - 2)))
    # forward, one node at a time
    mean = input.sum(axis=axes, keepdims=True) / n
    centered = input - mean
    squared = centered**2
    var = squared.sum(axis=axes, keepdims=True) / n
    std = np.sqrt(var + eps)
    invstd = 1 / std
    xhat = centered * invstd
    # backward, node by node in reverse; y = gamma * xhat + beta
    grad_beta = grad_output.sum(axis=axes)
    grad_gamma = (grad_output * xhat).sum(axis=axes)
    grad_xhat = grad_output * gamma
    grad_invstd = (grad_xhat * centered).sum(axis=axes, keepdims=True)  # xhat = centered * invstd
    grad_centered = grad_xhat * invstd  # ... the first of centered's two paths
    grad_std = -grad_invstd / std**2  # invstd = 1 / std
    grad_var = grad_std * 0.5 / std  # std = sqrt(var + eps)
    grad_squared = np.broadcast_to(grad_var / n, squared.shape)  # var = sum(squared) / n
    grad_centered = grad_centered + 2 * centered * grad_squared  # squared = centered**2: the second path
    grad_mean = -grad_centered.sum(axis=axes, keepdims=True)  # centered = input - mean
    grad_input = grad_centered + np.broadcast_to(grad_mean / n, input.shape)  # mean = sum(input) / n
    return grad_input, grad_gamma, grad_beta
