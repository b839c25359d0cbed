"""Batch norm, fast: ``tinynn.nn.batchnorm``'s maths on an (N, C, HW) view, with BLAS sums.

What the textbook spends its time on, and what this file does instead:

* ``x.sum(axis=(0, 2, 3))`` walks the array with a stride per axis; here each (n, c) row of the
  (N*C, HW) view is summed by one matrix-vector product with a vector of ones (BLAS), and the
  (N, C) row sums are then added up in float64, as torch's CPU kernel accumulates float32 in double.
* ``sum(dY * xhat)`` would need the product as a temporary array: ``np.einsum('ij,ij->i')`` takes
  the dot product of each row pair without one.
* The forward keeps ``centered = x - mean`` (not ``xhat``), and folds invstd into the per-channel
  coefficients: ``y = centered * (gamma * invstd) + beta`` and
  ``dX = dY * a + centered * b + c`` with per-channel a, b, c (the textbook's formula expanded),
  so every pass over the data is one ufunc on the whole array.
* The backward writes dX over ``centered`` (a forward's values serve one backward, then are
  released), so its passes work in place, on arrays still in the core's cache; its one temporary
  is a scratch buffer kept between calls.

Per-channel scalars (mean, var, invstd, the coefficients) are computed in float64 and rounded once.
"""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np

_ONES: dict[tuple[np.dtype, int], np.ndarray] = {}  # the vector of ones each row sum multiplies by


def _flat(array: np.ndarray) -> np.ndarray:
    """(N, C, *) -> a C-contiguous (N, C*HW) view (a copy only for a non-contiguous input)."""
    return np.ascontiguousarray(array).reshape(array.shape[0], math.prod(array.shape[1:]))


def _rows(flat: np.ndarray, channels: int) -> np.ndarray:
    """(N, C*HW) -> the (N*C, HW) view whose rows are each (image, channel)'s positions."""
    rows = flat.shape[0] * channels
    return flat.reshape(rows, flat.size // rows if rows else 0)


def _channel_sums(rows: np.ndarray, channels: int) -> np.ndarray:
    """(N*C, HW) -> (C,) float64: each channel's sum, one BLAS matrix-vector product for the rows."""
    key = (rows.dtype, rows.shape[1])
    ones = _ONES.get(key)
    if ones is None:
        ones = _ONES[key] = np.ones(rows.shape[1], dtype=rows.dtype)
    return (rows @ ones).reshape(-1, channels).sum(axis=0, dtype=np.float64)


def _channel_dots(a: np.ndarray, b: np.ndarray, channels: int) -> np.ndarray:
    """(N*C, HW) twice -> (C,) float64: each channel's sum of a * b, with no product array."""
    return np.einsum("ij,ij->i", a, b).reshape(-1, channels).sum(axis=0, dtype=np.float64)


def _plane(vector: np.ndarray, size: int, dtype: np.dtype) -> np.ndarray:
    """(C,) -> (C*HW,) in ``dtype``, each channel's value repeated over its HW positions.

    An (N, C*HW) array times this broadcasts over N alone, in long contiguous runs: 1.5x faster
    than broadcasting a (C, 1) column over (N, C, HW), whose inner loop is only HW long.
    """
    return np.repeat(vector.astype(dtype), size)


@np.errstate(invalid="ignore", divide="ignore")  # an empty batch: 0/0 statistics, never used
def batch_norm_forward(input: np.ndarray, running_mean: np.ndarray | None, running_var: np.ndarray | None,
                       weight: np.ndarray | None, bias: np.ndarray | None, use_batch_stats: bool,
                       momentum: float, eps: float) -> tuple[np.ndarray, Any]:
    """``tinynn.nn.batchnorm.batch_norm_forward``'s maths, fast: ``(output, saved)``, where ``saved``
    is ``(centered, invstd)`` for ``batch_norm_backward`` (centered (N, C*HW), invstd (C,) float64)."""
    channels, dtype = input.shape[1], input.dtype
    x = _flat(input)
    size = x.shape[1] // channels if channels else 0  # HW
    count = x.shape[0] * size
    if use_batch_stats:
        mean = _channel_sums(_rows(x, channels), channels) / count
        centered = x - _plane(mean, size, dtype)
        var = _channel_dots(_rows(centered, channels), _rows(centered, channels), channels) / count
        invstd = 1 / np.sqrt(var + eps)
        if running_mean is not None and count > 0:  # float64 arithmetic, rounded once (torch's order)
            running_mean[...] = momentum * mean + (1 - momentum) * running_mean
            running_var[...] = momentum * (var * count / (count - 1)) + (1 - momentum) * running_var
    else:
        invstd = 1 / np.sqrt(running_var.astype(np.float64) + eps)
        centered = x - _plane(running_mean, size, dtype)
    scale = invstd if weight is None else invstd * weight
    output = np.multiply(centered, _plane(scale, size, dtype))
    if bias is not None:
        output += _plane(bias, size, dtype)
    return output.reshape(input.shape), (centered, invstd)


_local = threading.local()  # .scratch: the backward's temporary, kept per thread (no page faults per call)


def _scratch(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """An uninitialised array of ``shape`` and ``dtype``, viewing this thread's kept buffer."""
    size = math.prod(shape)
    buffers = _local.__dict__.setdefault("scratch", {})
    buffer = buffers.get(dtype)
    if buffer is None or buffer.size < size:
        buffer = buffers[dtype] = np.empty(size, dtype=dtype)
    return buffer[:size].reshape(shape)


@np.errstate(invalid="ignore", divide="ignore")
def batch_norm_backward(grad_output: np.ndarray, saved: Any, weight: np.ndarray | None, used_batch_stats: bool,
                        has_bias: bool = True, needs_input_grad: bool = True
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``tinynn.nn.batchnorm.batch_norm_backward_from_xhat``'s maths, fast, from this forward's ``saved``.

    With xhat = centered * invstd and the sums over a channel's n elements, the textbook's
    ``dX = gamma * invstd / n * (n dY - sum(dY) - xhat * sum(dY * xhat))`` is
    ``dX = dY * a + centered * b + c``: a = gamma * invstd, b = -a * invstd**2 * sum(dY * centered) / n,
    c = -a * sum(dY) / n (batch statistics); in eval, b = c = 0.
    """
    centered, invstd = saved
    channels, dtype = grad_output.shape[1], grad_output.dtype
    dy = _flat(grad_output)
    size = dy.shape[1] // channels if channels else 0
    count = dy.shape[0] * size
    if count == 0:  # an empty batch: its 0/0 statistics must not reach the (zero) sums below
        invstd = np.zeros_like(invstd)
    sum_dy = _channel_sums(_rows(dy, channels), channels)
    sum_dy_centered = _channel_dots(_rows(dy, channels), _rows(centered, channels), channels)
    grad_bias = sum_dy.astype(dtype) if has_bias else None
    grad_weight = (sum_dy_centered * invstd).astype(dtype) if weight is not None else None
    if not needs_input_grad:
        return None, grad_weight, grad_bias
    a = invstd if weight is None else invstd * weight
    if not used_batch_stats or not count:
        return np.multiply(dy, _plane(a, size, dtype)).reshape(grad_output.shape), grad_weight, grad_bias
    b = -a * invstd * invstd * sum_dy_centered / count
    c = -a * sum_dy / count
    # dX is written over ``centered``, whose last use this is (a forward's values serve one backward):
    # in place, the arrays of each pass stay in the core's cache, where a fresh one would not.
    grad_input = centered
    grad_input *= _plane(b, size, dtype)
    grad_input += _plane(c, size, dtype)
    grad_input += np.multiply(dy, _plane(a, size, dtype), out=_scratch(dy.shape, dtype))
    return grad_input.reshape(grad_output.shape), grad_weight, grad_bias
