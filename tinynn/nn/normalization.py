"""Layer and group normalisation: ``layer_norm``, ``group_norm``, their backwards, ``LayerNorm`` and ``GroupNorm``.

Both standardise groups of elements exactly as batch norm does (``tinynn.nn.batchnorm``), with the
batch's statistics in training and in eval alike (there are no running statistics); they differ
only in which elements share a mean and a variance, and in the shape of the affine parameters:

* layer norm: each sample's last ``len(normalized_shape)`` dims; gamma and beta have
  ``normalized_shape`` (one per element of a sample);
* group norm: each sample's channels split into ``num_groups`` groups, the positions included;
  gamma and beta have one value per channel.

So the backward is batch norm's, with the sums over each group's m elements::

    dXhat = dY * gamma
    dX    = invstd / m * (m * dXhat - sum(dXhat) - xhat * sum(dXhat * xhat))   (normalize_backward)
    dgamma = sum(dY * xhat), dbeta = sum(dY)    over every axis gamma does not have
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype, float32
from tinynn.nn.batchnorm import check_same_dtype, normalize, normalize_backward, per_channel
from tinynn.nn.module import Module
from tinynn.nn.parameter import Parameter


def _check_float(name: str, input: Any) -> None:
    if not isinstance(input, np.ndarray) or input.dtype.kind != "f":
        raise TypeError(f"{name}(): expected a floating-point NumPy array as input, got "
                        f"{getattr(input, 'dtype', type(input).__name__)}")


# ------------------------------------------------------------------------------ layer norm
def _as_shape(normalized_shape: int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(normalized_shape, numbers.Integral):
        return (int(normalized_shape),)
    return tuple(int(side) for side in normalized_shape)


def _layer_norm_axes(input: np.ndarray, normalized_shape: tuple[int, ...], weight: np.ndarray | None,
                     bias: np.ndarray | None) -> tuple[int, ...]:
    """torch's checks for layer_norm; the axes each sample is standardised over (the last ones)."""
    _check_float("layer_norm", input)
    shape = list(normalized_shape)
    if not shape:
        raise RuntimeError("Expected normalized_shape to be at least 1-dimensional, i.e., containing at least "
                           f"one element, but got normalized_shape = {shape}")
    for name, array in (("weight", weight), ("bias", bias)):
        if array is not None and array.shape != normalized_shape:
            raise RuntimeError(f"Expected {name} to be of same shape as normalized_shape, but got {name} of shape "
                               f"{list(array.shape)} and normalized_shape = {shape}")
        check_same_dtype(input, array, name)
    if input.ndim < len(shape) or input.shape[input.ndim - len(shape):] != normalized_shape:
        raise RuntimeError(f"Given normalized_shape={shape}, expected input with shape [*, "
                           f"{', '.join(map(str, shape))}], but got input of size{list(input.shape)}")
    return tuple(range(input.ndim - len(shape), input.ndim))


def layer_norm_forward(input: np.ndarray, axes: tuple[int, ...], weight: np.ndarray | None,
                       bias: np.ndarray | None, eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(output, xhat, invstd)``: y = xhat * gamma + beta, xhat standardised over ``axes`` (the last ones).

    Shapes: input (*, *normalized_shape), weight and bias normalized_shape -> output like input;
    invstd keeps ``axes`` as 1s.
    """
    xhat, invstd, _, _ = normalize(input, axes, eps)
    output = xhat if weight is None else xhat * weight
    return (output if bias is None else output + bias), xhat, invstd


def layer_norm_backward_from_xhat(grad_output: np.ndarray, xhat: np.ndarray, invstd: np.ndarray,
                                  axes: tuple[int, ...], weight: np.ndarray | None, has_bias: bool = True,
                                  needs_input_grad: bool = True
                                  ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(dX, dgamma, dbeta)``: dgamma = sum(dY * xhat), dbeta = sum(dY) over the leading axes;
    dX = ``normalize_backward(dY * gamma, ...)`` over ``axes``. None where not asked for."""
    leading = tuple(range(xhat.ndim - len(axes)))
    grad_bias = grad_output.sum(axis=leading) if has_bias else None
    grad_weight = (grad_output * xhat).sum(axis=leading) if weight is not None else None
    if not needs_input_grad:
        return None, grad_weight, grad_bias
    grad_xhat = grad_output if weight is None else grad_output * weight
    return normalize_backward(grad_xhat, xhat, invstd, axes), grad_weight, grad_bias


def layer_norm(input: np.ndarray, normalized_shape: int | Sequence[int], weight: np.ndarray | None = None,
               bias: np.ndarray | None = None, eps: float = 1e-5) -> np.ndarray:
    """``torch.nn.functional.layer_norm``: input (*, *normalized_shape) -> output of the same shape."""
    axes = _layer_norm_axes(input, _as_shape(normalized_shape), weight, bias)
    return layer_norm_forward(input, axes, weight, bias, eps)[0]


def layer_norm_backward(grad_output: np.ndarray, input: np.ndarray, normalized_shape: int | Sequence[int],
                        weight: np.ndarray | None = None, eps: float = 1e-5, has_bias: bool = True,
                        needs_input_grad: bool = True
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of ``layer_norm`` (same arguments): ``(grad_input, grad_weight, grad_bias)``, None
    where not applicable (no ``weight``, ``has_bias`` False, ``needs_input_grad`` False)."""
    axes = _layer_norm_axes(input, _as_shape(normalized_shape), weight, None)
    if grad_output.shape != input.shape:
        raise RuntimeError(f"layer_norm_backward: grad_output has shape {grad_output.shape}, expected {input.shape}")
    _, xhat, invstd = layer_norm_forward(input, axes, None, None, eps)
    return layer_norm_backward_from_xhat(grad_output, xhat, invstd, axes, weight, has_bias, needs_input_grad)


# ------------------------------------------------------------------------------ group norm
def _check_group_norm_args(input: np.ndarray, num_groups: int, weight: np.ndarray | None,
                           bias: np.ndarray | None) -> None:
    _check_float("group_norm", input)
    if input.ndim < 2:
        raise RuntimeError(f"Expected at least 2 dimensions for input tensor but received {input.ndim}")
    size = [input.shape[0] * input.shape[1] // num_groups, num_groups, *input.shape[2:]]
    if math.prod((size[0], *size[2:])) == 1:  # torch's _verify_batch_size, on these sizes
        raise ValueError(f"Expected more than 1 value per channel when training, got input size {size}")
    if input.shape[1] % num_groups:
        raise RuntimeError("Expected number of channels in input to be divisible by num_groups, but got input of "
                           f"shape {list(input.shape)} and num_groups={num_groups}")
    for name, array in (("weight", weight), ("bias", bias)):
        if array is not None and (array.ndim != 1 or array.size != input.shape[1]):
            raise RuntimeError(f"Expected {name} to be a vector of size equal to the number of channels in input, "
                               f"but got {name} of shape {list(array.shape)} and input of shape {list(input.shape)}")
        check_same_dtype(input, array, name)


def _grouped(array: np.ndarray, num_groups: int) -> np.ndarray:
    """(N, C, *) -> (N, G, C/G * prod(*)): each row of the last axis is one group's elements."""
    batch, channels = array.shape[:2]
    return array.reshape(batch, num_groups, channels // num_groups * math.prod(array.shape[2:]))


def group_norm_forward(input: np.ndarray, num_groups: int, weight: np.ndarray | None, bias: np.ndarray | None,
                       eps: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(output, xhat, invstd)``: y = xhat * gamma[c] + beta[c], xhat standardised per (sample, group).

    Shapes: input (N, C, *), weight and bias (C,) -> output like input; xhat (N, G, C/G * prod(*)),
    invstd (N, G, 1).
    """
    xhat, invstd, _, _ = normalize(_grouped(input, num_groups), (2,), eps)
    output = xhat.reshape(input.shape)
    if weight is not None:
        output = output * per_channel(weight, input.ndim)
    if bias is not None:
        output = output + per_channel(bias, input.ndim)
    return output, xhat, invstd


def group_norm_backward_from_xhat(grad_output: np.ndarray, xhat: np.ndarray, invstd: np.ndarray,
                                  weight: np.ndarray | None, has_bias: bool = True, needs_input_grad: bool = True
                                  ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """``(dX, dgamma, dbeta)``: dgamma[c] = sum(dY * xhat), dbeta[c] = sum(dY) over all axes but 1;
    dX = ``normalize_backward(dY * gamma[c], ...)`` within each (sample, group). None where not asked for."""
    shape, axes = grad_output.shape, (0, *range(2, grad_output.ndim))
    grad_bias = grad_output.sum(axis=axes) if has_bias else None
    grad_weight = (grad_output * xhat.reshape(shape)).sum(axis=axes) if weight is not None else None
    if not needs_input_grad:
        return None, grad_weight, grad_bias
    grad_xhat = grad_output if weight is None else grad_output * per_channel(weight, len(shape))
    grad_input = normalize_backward(_grouped(grad_xhat, xhat.shape[1]), xhat, invstd, (2,))
    return grad_input.reshape(shape), grad_weight, grad_bias


def group_norm(input: np.ndarray, num_groups: int, weight: np.ndarray | None = None,
               bias: np.ndarray | None = None, eps: float = 1e-5) -> np.ndarray:
    """``torch.nn.functional.group_norm``: input (N, C, *) -> output of the same shape."""
    _check_group_norm_args(input, num_groups, weight, bias)
    return group_norm_forward(input, num_groups, weight, bias, eps)[0]


def group_norm_backward(grad_output: np.ndarray, input: np.ndarray, num_groups: int,
                        weight: np.ndarray | None = None, eps: float = 1e-5, has_bias: bool = True,
                        needs_input_grad: bool = True
                        ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """Gradients of ``group_norm`` (same arguments): ``(grad_input, grad_weight, grad_bias)``, None
    where not applicable (no ``weight``, ``has_bias`` False, ``needs_input_grad`` False)."""
    _check_group_norm_args(input, num_groups, weight, None)
    if grad_output.shape != input.shape:
        raise RuntimeError(f"group_norm_backward: grad_output has shape {grad_output.shape}, expected {input.shape}")
    _, xhat, invstd = group_norm_forward(input, num_groups, None, None, eps)
    return group_norm_backward_from_xhat(grad_output, xhat, invstd, weight, has_bias, needs_input_grad)


# ------------------------------------------------------------------------------ the modules
class _AffineNorm(Module):
    """The affine part both modules share: ``weight`` (ones) and ``bias`` (zeros) of ``shape``, or None."""

    def _make_affine(self, affine: bool, bias: bool, shape: tuple[int, ...], dtype: Any) -> None:
        dtype = float32 if dtype is None else as_float_dtype(dtype)
        if affine:
            self.weight = Parameter(np.empty(shape, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        if affine and bias:
            self.bias = Parameter(np.empty(shape, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.weight is not None:
            self.weight.data[...] = 1
        if self.bias is not None:
            self.bias.data[...] = 0

    def _arrays(self) -> tuple[np.ndarray | None, np.ndarray | None]:
        return (None if self.weight is None else self.weight.data, None if self.bias is None else self.bias.data)

    def _accumulate(self, grad_weight: np.ndarray | None, grad_bias: np.ndarray | None) -> None:
        if self.weight is not None:
            self.weight.accumulate_grad(grad_weight)
        if self.bias is not None:
            self.bias.accumulate_grad(grad_bias)

    def _check_grad(self, grad_output: np.ndarray, shape: tuple[int, ...]) -> None:
        if grad_output.shape != shape:
            raise RuntimeError(f"{type(self).__name__}.backward: grad_output has shape {grad_output.shape}, "
                               f"expected {shape}")


class LayerNorm(_AffineNorm):
    """Layer norm over the last dims, ``normalized_shape`` (``torch.nn.LayerNorm``)."""

    def __init__(self, normalized_shape: int | Sequence[int], eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.normalized_shape = _as_shape(normalized_shape)
        self.eps, self.elementwise_affine = eps, elementwise_affine
        self._make_affine(elementwise_affine, bias, self.normalized_shape, dtype)

    def forward(self, input: np.ndarray) -> np.ndarray:
        weight, bias = self._arrays()
        axes = _layer_norm_axes(input, self.normalized_shape, weight, bias)
        output, xhat, invstd = layer_norm_forward(input, axes, weight, bias, self.eps)
        self.save_for_backward(xhat, invstd, axes, weight)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        xhat, invstd, axes, weight = self.saved_tensors()
        self._check_grad(grad_output, xhat.shape)
        grad_input, grad_weight, grad_bias = layer_norm_backward_from_xhat(
            grad_output, xhat, invstd, axes, weight, self.bias is not None, needs_input_grad)
        self._accumulate(grad_weight, grad_bias)
        return grad_input

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, elementwise_affine={self.elementwise_affine}, "
                f"bias={self.bias is not None}")


class GroupNorm(_AffineNorm):
    """Group norm: channels in ``num_groups`` groups, each standardised per sample (``torch.nn.GroupNorm``)."""

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 device: Any = None, dtype: Any = None, *, bias: bool = True) -> None:
        super().__init__()
        if num_channels % num_groups != 0:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        self._make_affine(affine, bias, (num_channels,), dtype)

    def forward(self, input: np.ndarray) -> np.ndarray:
        weight, bias = self._arrays()
        _check_group_norm_args(input, self.num_groups, weight, bias)
        output, xhat, invstd = group_norm_forward(input, self.num_groups, weight, bias, self.eps)
        self.save_for_backward(xhat, invstd, input.shape, weight)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        xhat, invstd, shape, weight = self.saved_tensors()
        self._check_grad(grad_output, shape)
        grad_input, grad_weight, grad_bias = group_norm_backward_from_xhat(
            grad_output, xhat, invstd, weight, self.bias is not None, needs_input_grad)
        self._accumulate(grad_weight, grad_bias)
        return grad_input

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, "
                f"bias={self.bias is not None}")
