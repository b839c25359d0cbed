"""Batch normalisation: ``batch_norm`` and its hand-written backward, ``BatchNorm1d`` and ``BatchNorm2d``.

Each channel c is normalised over every element that shares it: the batch and, for (N, C, L) or
(N, C, H, W) input, the positions too, ``n = N * L`` or ``n = N * H * W`` elements in all::

    mean = sum(x) / n                      var = sum((x - mean)**2) / n   (biased)
    xhat = (x - mean) * invstd             invstd = 1 / sqrt(var + eps)
    y    = gamma * xhat + beta

The backward, with dXhat = dY * gamma and sums over the n elements of a channel::

    dbeta  = sum(dY)                       dgamma = sum(dY * xhat)
    dX     = invstd / n * (n * dXhat - sum(dXhat) - xhat * sum(dXhat * xhat))

Why: x reaches xhat directly (dXhat * invstd), through the mean (every element moves the mean by
1/n: the ``- sum(dXhat)`` term) and through the variance (d var / dx = 2 (x - mean) / n, and
d invstd / d var = -invstd**3 / 2, which together give the ``- xhat * sum(dXhat * xhat)`` term).
The staged chain rule, one node at a time, is ``tinynn.nn.naive.batch_norm_backward``.

In eval mode with running statistics, mean and var are constants, so the backward is the affine
map's alone: ``dX = dY * gamma * invstd``. While training, the running statistics move towards
each batch's: ``running = (1 - momentum) * running + momentum * batch``, with the unbiased variance
``var * n / (n - 1)`` for running_var (torch's rule; the normalisation itself uses the biased one).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype, float32, int64, torch_name
from tinynn._textbook import is_textbook
from tinynn.nn.module import Module
from tinynn.nn.parameter import Parameter


def reduce_axes(ndim: int) -> tuple[int, ...]:
    """The axes batch norm sums over: all but the channel axis 1, e.g. (0, 2, 3) for (N, C, H, W)."""
    return (0, *range(2, ndim))


def per_channel(vector: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) vector as (1, C, 1, ...), to broadcast against an ndim-D input."""
    return vector.reshape(1, -1, *([1] * (ndim - 2)))


# An empty group has mean 0/0 = NaN, which nothing reads; layer and group norm take a negative eps
# as torch does (a NaN where var + eps < 0).
@np.errstate(invalid="ignore", divide="ignore")
def normalize(input: np.ndarray, axes: tuple[int, ...], eps: float,
              accumulate: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(xhat, invstd, mean, var)``: ``input`` standardised over ``axes``, with the biased variance.

    ``xhat = (x - mean) * invstd``, ``invstd = 1 / sqrt(var + eps)``; invstd, mean and var keep the
    reduced axes as 1s. Shared by batch, layer and group norm, which differ only in which
    elements share a mean (the ``axes``). ``accumulate``: the dtype the sums (and so mean and var)
    are taken in, the input's by default; xhat and invstd are in the input's dtype.
    """
    count = math.prod(input.shape[axis] for axis in axes)
    mean = input.sum(axis=axes, keepdims=True, dtype=accumulate) / count
    centered = input - mean.astype(input.dtype, copy=False)  # two passes (mean, then squares): no cancellation
    var = (centered * centered).sum(axis=axes, keepdims=True, dtype=accumulate) / count
    invstd = (1 / np.sqrt(var + eps)).astype(input.dtype, copy=False)
    return centered * invstd, invstd, mean, var


def normalize_backward(grad_xhat: np.ndarray, xhat: np.ndarray, invstd: np.ndarray,
                       axes: tuple[int, ...], accumulate: Any = None) -> np.ndarray:
    """dX from dXhat for ``xhat = (x - mean(x)) * invstd`` with batch statistics over ``axes``.

    ``dX = invstd / n * (n * dXhat - sum(dXhat) - xhat * sum(dXhat * xhat))``, sums over ``axes``
    (n elements, taken in ``accumulate``'s dtype as ``normalize``), ``invstd`` keeping those axes as
    1s. Shared by batch, layer and group norm.
    """
    count = math.prod(xhat.shape[axis] for axis in axes)
    dtype = grad_xhat.dtype
    sum_grad = grad_xhat.sum(axis=axes, keepdims=True, dtype=accumulate).astype(dtype, copy=False)
    sum_grad_xhat = (grad_xhat * xhat).sum(axis=axes, keepdims=True, dtype=accumulate).astype(dtype, copy=False)
    return (invstd / count) * (count * grad_xhat - sum_grad - xhat * sum_grad_xhat)


# ------------------------------------------------------------------------------ checks (torch's errors)
def check_same_dtype(input: np.ndarray, array: np.ndarray | None, name: str) -> None:
    """torch's CPU norms refuse a parameter or statistic whose dtype is not the input's (no silent cast)."""
    if array is None or array.dtype == input.dtype:
        return
    rule = ("expect parameter to have scalar type of Float" if input.dtype == np.float32
            else "all inputs must share same datatype.")
    raise RuntimeError(f"mixed dtype (CPU): {rule} ({name} is {torch_name(array.dtype)}, input "
                       f"{torch_name(input.dtype)}: convert one of them, e.g. model.double() or x.astype(np.float32))")


def _check_batch_norm_args(input: Any, running_mean: np.ndarray | None, running_var: np.ndarray | None,
                           weight: np.ndarray | None, bias: np.ndarray | None, training: bool, eps: float) -> None:
    """torch's errors, raised before anything (running stats included) is written."""
    if not isinstance(input, np.ndarray) or input.dtype.kind != "f":
        raise TypeError(f"batch_norm(): expected a floating-point NumPy array as input, got "
                        f"{getattr(input, 'dtype', type(input).__name__)}")
    if input.ndim < 2:
        raise IndexError(f"Dimension out of range (expected to be in range of [-{max(input.ndim, 1)}, "
                         f"{max(input.ndim, 1) - 1}], but got 1)")
    if training and math.prod((input.shape[0], *input.shape[2:])) == 1:
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {input.shape}")
    if training and eps <= 0.0:
        raise ValueError(f"batch_norm eps must be positive during training, but got {eps}")
    if eps < 0.0:
        raise ValueError(f"batch_norm eps must be non-negative, but got {eps}")
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean and running_var must either both be None or neither be None")
    if not training and running_mean is None:
        raise RuntimeError("running_mean must be defined in evaluation mode")
    channels = input.shape[1]
    for name, array in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                        ("bias", bias)):
        if array is None:
            continue
        if array.size != channels:
            raise RuntimeError(f"{name} should contain {channels} elements not {array.size}")
        check_same_dtype(input, array, name)


# ------------------------------------------------------------------------------ forward and backward
def batch_norm_forward(input: np.ndarray, running_mean: np.ndarray | None, running_var: np.ndarray | None,
                       weight: np.ndarray | None, bias: np.ndarray | None, use_batch_stats: bool,
                       momentum: float, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(output, xhat, invstd)``; updates the running stats in place when ``use_batch_stats`` and given.

    Shapes: input (N, C, *), running stats, weight, bias (C,) -> output (N, C, *), xhat like the
    input, invstd (1, C, 1, ...). Arguments already checked (``_check_batch_norm_args``).
    """
    axes = reduce_axes(input.ndim)
    if use_batch_stats:
        # torch's CPU kernel sums a channel in double (its accumulation type for float32), and so
        # do we: the statistics then agree with torch's to float32 rounding, not to a sum's error.
        xhat, invstd, mean, var = normalize(input, axes, eps, accumulate=np.float64)
        count = input.size // input.shape[1]
        if running_mean is not None and count > 0:  # an empty batch leaves them alone, as in torch
            running_mean *= 1 - momentum
            running_mean += momentum * mean.reshape(-1)
            running_var *= 1 - momentum
            running_var += momentum * var.reshape(-1) * (count / (count - 1))  # the unbiased variance
    else:
        invstd = per_channel(1 / np.sqrt(running_var + eps), input.ndim)
        xhat = (input - per_channel(running_mean, input.ndim)) * invstd
    output = xhat if weight is None else xhat * per_channel(weight, input.ndim)
    if bias is not None:
        output = output + per_channel(bias, input.ndim)
    return output, xhat, invstd


def batch_norm_backward_from_xhat(grad_output: np.ndarray, xhat: np.ndarray, invstd: np.ndarray,
                                  weight: np.ndarray | None, used_batch_stats: bool, has_bias: bool = True,
                                  needs_input_grad: bool = True
                                  ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(dX, dgamma, dbeta)`` from the forward's ``xhat`` and ``invstd`` (see the module docstring).

    dbeta = sum(dY), dgamma = sum(dY * xhat) over all axes but 1; dX by ``normalize_backward`` with
    dXhat = dY * gamma when ``used_batch_stats``, else ``dY * gamma * invstd`` (constant stats).
    None for a gradient not asked for (no weight, ``has_bias`` False, ``needs_input_grad`` False).
    """
    axes = reduce_axes(xhat.ndim)
    dtype = grad_output.dtype  # the sums in double, as the forward's (torch's accumulation type)
    grad_bias = grad_output.sum(axis=axes, dtype=np.float64).astype(dtype) if has_bias else None
    grad_weight = (grad_output * xhat).sum(axis=axes, dtype=np.float64).astype(dtype) if weight is not None else None
    if not needs_input_grad:
        return None, grad_weight, grad_bias
    grad_xhat = grad_output if weight is None else grad_output * per_channel(weight, xhat.ndim)
    if used_batch_stats:
        grad_input = normalize_backward(grad_xhat, xhat, invstd, axes, accumulate=np.float64)  # as the forward
    else:
        grad_input = grad_xhat * invstd
    return grad_input, grad_weight, grad_bias


# ------------------------------------------------------------------------------ engine dispatch
# The one place where batch norm may leave this file: unless in textbook mode, the same maths runs
# on ``tinynn/_engine/normalization.py``. Each backward takes the path its forward took: the
# textbook keeps (xhat, invstd), the engine (x - mean, invstd in float64).
def _forward(input: np.ndarray, running_mean: np.ndarray | None, running_var: np.ndarray | None,
             weight: np.ndarray | None, bias: np.ndarray | None, use_batch_stats: bool, momentum: float,
             eps: float) -> tuple[np.ndarray, Any, bool]:
    if not is_textbook():
        from tinynn._engine import normalization as engine  # ENGINE DISPATCH: (N*C, HW) rows, BLAS sums

        return (*engine.batch_norm_forward(input, running_mean, running_var, weight, bias, use_batch_stats,
                                           momentum, eps), True)
    output, xhat, invstd = batch_norm_forward(input, running_mean, running_var, weight, bias, use_batch_stats,
                                              momentum, eps)
    return output, (xhat, invstd), False


def _backward(grad_output: np.ndarray, saved: Any, on_engine: bool, weight: np.ndarray | None,
              used_batch_stats: bool, has_bias: bool, needs_input_grad: bool
              ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    if on_engine:
        from tinynn._engine import normalization as engine

        return engine.batch_norm_backward(grad_output, saved, weight, used_batch_stats, has_bias, needs_input_grad)
    return batch_norm_backward_from_xhat(grad_output, *saved, weight, used_batch_stats, has_bias, needs_input_grad)


# ------------------------------------------------------------------------------ the functional API
def batch_norm(input: np.ndarray, running_mean: np.ndarray | None, running_var: np.ndarray | None,
               weight: np.ndarray | None = None, bias: np.ndarray | None = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> np.ndarray:
    """``torch.nn.functional.batch_norm``: input (N, C, *) -> output of the same shape.

    ``training``: normalise with the batch's statistics and, if given, update ``running_mean`` and
    ``running_var`` in place; otherwise normalise with the running statistics.
    """
    _check_batch_norm_args(input, running_mean, running_var, weight, bias, training, eps)
    return _forward(input, running_mean, running_var, weight, bias, training, momentum, eps)[0]


def batch_norm_backward(grad_output: np.ndarray, input: np.ndarray, running_mean: np.ndarray | None,
                        running_var: np.ndarray | None, weight: np.ndarray | None = None, training: bool = False,
                        eps: float = 1e-5, has_bias: bool = True, needs_input_grad: bool = True
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of ``batch_norm`` (same arguments): ``(grad_input, grad_weight, grad_bias)``.

    Recomputes the statistics the forward used (the batch's when ``training``; the running stats
    are not updated here). None where not applicable: no ``weight``, ``has_bias`` False,
    ``needs_input_grad`` False.
    """
    _check_batch_norm_args(input, running_mean, running_var, weight, None, training, eps)
    if grad_output.shape != input.shape:
        raise RuntimeError(f"batch_norm_backward: grad_output has shape {grad_output.shape}, expected {input.shape}")
    stats = (None, None) if training else (running_mean, running_var)  # no running update here
    _, saved, on_engine = _forward(input, *stats, None, None, training, 0.0, eps)
    return _backward(grad_output, saved, on_engine, weight, training, has_bias, needs_input_grad)


# ------------------------------------------------------------------------------ the modules
class _BatchNorm(Module):
    """torch's ``_BatchNorm``: parameters ``weight`` (ones) and ``bias`` (zeros), buffers
    ``running_mean`` (zeros), ``running_var`` (ones) and ``num_batches_tracked`` (int64, 0-d)."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device: Any = None, dtype: Any = None, *,
                 bias: bool = True) -> None:
        super().__init__()
        dtype = float32 if dtype is None else as_float_dtype(dtype)
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.affine, self.track_running_stats = affine, track_running_stats
        if affine:
            self.weight = Parameter(np.empty(num_features, dtype=dtype))
            if bias:
                self.bias = Parameter(np.empty(num_features, dtype=dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
            self.register_buffer("running_var", np.ones(num_features, dtype=dtype))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=int64))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self) -> None:
        """running_mean to 0, running_var to 1, num_batches_tracked to 0, in place."""
        if self.track_running_stats:
            self.running_mean[...] = 0
            self.running_var[...] = 1
            self.num_batches_tracked[...] = 0

    def reset_parameters(self) -> None:
        self.reset_running_stats()
        if self.affine:
            self.weight.data[...] = 1
            if self.bias is not None:
                self.bias.data[...] = 0

    def _check_input_dim(self, input: np.ndarray) -> None:
        raise NotImplementedError

    def forward(self, input: np.ndarray) -> np.ndarray:
        self._check_input_dim(input)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        # As torch: the buffers are read in eval mode, and written when training and tracking.
        tracked = not self.training or self.track_running_stats
        running_mean = self.running_mean if tracked else None
        running_var = self.running_var if tracked else None
        weight = None if self.weight is None else self.weight.data
        bias = None if self.bias is None else self.bias.data
        # Checked before num_batches_tracked moves (torch counts the batch first, then may raise).
        _check_batch_norm_args(input, running_mean, running_var, weight, bias, use_batch_stats, self.eps)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked += 1  # in place: a 0-d array stays the same array
            if self.momentum is None:  # the cumulative moving average: the mean of all batches so far
                factor = 1.0 / float(self.num_batches_tracked)
        output, saved, on_engine = _forward(input, running_mean, running_var, weight, bias, use_batch_stats,
                                            factor, self.eps)
        self.save_for_backward(saved, on_engine, input.shape, weight, use_batch_stats)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        saved, on_engine, shape, weight, used_batch_stats = self.saved_tensors()
        if grad_output.shape != shape:
            raise RuntimeError(f"{type(self).__name__}.backward: grad_output has shape {grad_output.shape}, "
                               f"expected {shape}")
        weight_param, bias_param = self.weight, self.bias
        grad_input, grad_weight, grad_bias = _backward(grad_output, saved, on_engine, weight, used_batch_stats,
                                                       bias_param is not None, needs_input_grad)
        if weight_param is not None:
            weight_param.accumulate_grad(grad_weight)
        if bias_param is not None:
            bias_param.accumulate_grad(grad_bias)
        return grad_input

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"bias={self.bias is not None}, track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch norm over (N, C) or (N, C, L) input, per channel C (``torch.nn.BatchNorm1d``)."""

    def _check_input_dim(self, input: np.ndarray) -> None:
        if np.ndim(input) not in (2, 3):
            raise ValueError(f"expected 2D or 3D input (got {np.ndim(input)}D input)")


class BatchNorm2d(_BatchNorm):
    """Batch norm over (N, C, H, W) input, per channel C (``torch.nn.BatchNorm2d``)."""

    def _check_input_dim(self, input: np.ndarray) -> None:
        if np.ndim(input) != 4:
            raise ValueError(f"expected 4D input (got {np.ndim(input)}D input)")
