"""Regression losses: mse_loss, l1_loss, smooth_l1_loss, huber_loss, their backwards and modules.

Each compares input and target element by element. With d = input - target:

* mse:       loss_i = d_i^2                                       dloss_i/dx_i = 2 d_i
* l1:        loss_i = |d_i|                                       dloss_i/dx_i = sign(d_i) (0 at d_i = 0)
* smooth_l1: loss_i = 0.5 d_i^2 / beta   if |d_i| < beta,         dloss_i/dx_i = d_i / beta,
                      |d_i| - 0.5 beta   otherwise                               sign(d_i)
* huber:     loss_i = 0.5 d_i^2          if |d_i| < delta,        dloss_i/dx_i = d_i,
                      delta (|d_i| - 0.5 delta) otherwise                        delta sign(d_i)

then 'none' keeps every loss_i, 'sum' adds them and 'mean' divides that sum by their count (an
empty input's mean is 0/0 = NaN, as in torch). The backward multiplies dloss_i/dx_i by the upstream
gradient of loss_i: grad_output itself ('none'), grad_output ('sum'), or grad_output / count ('mean').

As in torch, a target of another shape is broadcast against the input after a warning, and the
input's gradient is then summed back over the broadcast dimensions. Both must be float arrays of
one dtype: torch would promote a mixed pair, tinynn never upcasts silently.

The helpers here (argument checks, the broadcast, the module protocol) are shared with
loss_likelihood.py.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tinynn._dtype import torch_name
from tinynn.nn.loss import _reduce
from tinynn.nn.loss import _upstream as _sample_upstream
from tinynn.nn.module import Module

_REDUCTIONS = ("none", "mean", "sum")


# ---------------------------------------------------------------------------------------- shared helpers
def _check_reduction(reduction: str, allowed: tuple[str, ...] = _REDUCTIONS) -> None:
    """ValueError in loss.py's words unless ``reduction`` is one of ``allowed``."""
    if reduction not in allowed:
        expected = ", ".join(f"'{name}'" for name in allowed[:-1]) + f" or '{allowed[-1]}'"
        raise ValueError(f"{reduction} is not a valid value for reduction (expected {expected})")


def _check_arrays(name: str, input: Any, target: Any) -> None:
    """Both NumPy arrays, the input floating, the target of the input's dtype."""
    for arg, value in (("input", input), ("target", target)):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name}(): argument '{arg}' must be a NumPy array, not {type(value).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(f"{name}(): expected a floating-point input, got {torch_name(input.dtype)} ({input.dtype}); "
                        "convert it with .astype(np.float32)")
    if target.dtype != input.dtype:
        raise RuntimeError(f"{name}(): target dtype {target.dtype} differs from input dtype {input.dtype}; convert "
                           f"with target.astype(np.{input.dtype.name}) (tinynn never upcasts silently)")


def _torch_size(shape: tuple[int, ...]) -> str:
    """A shape as torch prints it in messages: torch.Size([3, 1])."""
    return f"torch.Size({list(shape)})"


def _broadcast_shape(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    """np.broadcast_shapes, failing with torch's message (dimensions matched from the right)."""
    ndim = max(len(a), len(b))
    for dim in range(ndim - 1, -1, -1):
        size_a = a[dim - ndim + len(a)] if dim - ndim + len(a) >= 0 else 1
        size_b = b[dim - ndim + len(b)] if dim - ndim + len(b) >= 0 else 1
        if size_a != size_b and size_a != 1 and size_b != 1:
            raise RuntimeError(f"The size of tensor a ({size_a}) must match the size of tensor b ({size_b}) "
                               f"at non-singleton dimension {dim}")
    return np.broadcast_shapes(a, b)


def _check_broadcasts_to(name: str, value: Any, shape: tuple[int, ...], dtype: np.dtype) -> None:
    """A weight-like array: a NumPy array of ``dtype`` that broadcasts to ``shape`` without growing it."""
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} must be a NumPy array broadcastable to {shape}, not {type(value).__name__}")
    if value.dtype != dtype:
        raise RuntimeError(f"expected scalar type {torch_name(dtype)} but found {torch_name(value.dtype)}: {name} is "
                           f"{value.dtype}, input is {dtype}; convert with {name}.astype(np.{dtype.name})")
    if _broadcast_shape(shape, value.shape) != shape:
        raise RuntimeError(f"output with shape {list(shape)} doesn't match the broadcast shape "
                           f"{list(np.broadcast_shapes(shape, value.shape))}")


def _broadcast_pair(input: np.ndarray, target: np.ndarray, warn: bool) -> tuple[int, ...]:
    """The shape of the element-wise losses; with ``warn``, torch's warning when the shapes differ."""
    if warn and target.shape != input.shape:
        warnings.warn(f"Using a target size ({_torch_size(target.shape)}) that is different to the input size "
                      f"({_torch_size(input.shape)}). This will likely lead to incorrect results due to "
                      "broadcasting. Please ensure they have the same size.", stacklevel=4)
    return _broadcast_shape(input.shape, target.shape)


def _sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Sum a gradient of the broadcast shape back to ``shape``: the chain rule through a broadcast,
    as autograd's expand backward does (every copy of an input entry adds its gradient)."""
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = (*range(lead), *(lead + i for i, size in enumerate(shape) if size == 1))
    with np.errstate(invalid="ignore", over="ignore"):  # inf + -inf is NaN in torch's sum too
        return grad.sum(axis=axes).reshape(shape)


def _element_upstream(grad_output: Any, reduction: str, shape: tuple[int, ...], dtype: np.dtype,
                      count: int | None = None) -> Any:
    """dL/dloss_i for every element: grad_output itself ('none', of the losses' shape), grad_output
    ('sum') or grad_output / count ('mean'; count defaults to the number of losses; 0 gives NaN or
    inf, as in torch). A Python float unless 'none'."""
    count = int(np.prod(shape)) if count is None else count
    return _sample_upstream(grad_output, reduction, count, shape, dtype)


def _sign(values: np.ndarray) -> np.ndarray:
    """torch's sign: -1, 0 or 1, and 0 for NaN (np.sign gives NaN there), in the values' dtype."""
    return (values > 0).astype(values.dtype) - (values < 0)


class _ElementwiseLoss(Module):
    """The protocol of every loss module here: ``forward(input, target)`` computes ``loss_fn`` and
    saves its arguments; ``backward(grad_output=1.0)`` returns ``backward_fn``'s dloss/dinput.

    Subclasses set ``loss_fn``/``backward_fn`` and return their keyword arguments from ``_options``;
    the options are saved with the inputs, so a buffer replaced between forward and backward
    does not change the gradient of the forward already run.
    """

    loss_fn: Any
    backward_fn: Any

    def __init__(self, reduction: str) -> None:
        super().__init__()
        self.reduction = reduction

    def _options(self) -> dict[str, Any]:
        return {"reduction": self.reduction}

    def forward(self, input: np.ndarray, target: np.ndarray) -> np.ndarray:
        options = self._options()
        loss = type(self).loss_fn(input, target, **options)
        self.save_for_backward(input, target, options)
        return loss

    def backward(self, grad_output: Any = 1.0, needs_input_grad: bool = True) -> np.ndarray | None:
        input, target, options = self.saved_tensors()
        return type(self).backward_fn(grad_output, input, target, **options) if needs_input_grad else None


# ---------------------------------------------------------------------------------------- the losses
def _prepare(name: str, input: Any, target: Any, reduction: str, warn: bool) -> tuple[int, ...]:
    _check_reduction(reduction)
    _check_arrays(name, input, target)
    return _broadcast_pair(input, target, warn)


def mse_loss(input: np.ndarray, target: np.ndarray, *, reduction: str = "mean") -> np.ndarray:
    """Squared error (input - target)^2, reduced. input, target: any shapes that broadcast (the same
    shape expected). Returns a NumPy scalar of input's dtype, or the losses for 'none'."""
    _prepare("mse_loss", input, target, reduction, warn=True)
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf, overflow: NaN, inf, as torch, silently
        difference = input - target
        return _reduce(difference * difference, reduction, difference.size)


def mse_loss_backward(grad_output: Any, input: np.ndarray, target: np.ndarray, reduction: str = "mean") -> np.ndarray:
    """dL/dinput = 2 (input - target) * g, g = grad_output (/ count for 'mean'); input's shape."""
    shape = _prepare("mse_loss", input, target, reduction, warn=False)
    with np.errstate(invalid="ignore", over="ignore"):
        grad = 2 * (input - target) * _element_upstream(grad_output, reduction, shape, input.dtype)
    return _sum_to_shape(np.asarray(grad, dtype=input.dtype), input.shape)


def l1_loss(input: np.ndarray, target: np.ndarray, *, reduction: str = "mean") -> np.ndarray:
    """Absolute error |input - target|, reduced (shapes as mse_loss)."""
    _prepare("l1_loss", input, target, reduction, warn=True)
    with np.errstate(invalid="ignore", over="ignore"):
        losses = np.abs(input - target)
        return _reduce(losses, reduction, losses.size)


def l1_loss_backward(grad_output: Any, input: np.ndarray, target: np.ndarray, reduction: str = "mean") -> np.ndarray:
    """dL/dinput = sign(input - target) * g: 0 where input == target (and where it is NaN), as torch's sign."""
    shape = _prepare("l1_loss", input, target, reduction, warn=False)
    with np.errstate(invalid="ignore", over="ignore"):  # 0 * inf (sign 0, upstream inf) is NaN in torch too
        grad = _sign(input - target) * _element_upstream(grad_output, reduction, shape, input.dtype)
    return _sum_to_shape(np.asarray(grad, dtype=input.dtype), input.shape)


def _check_beta(beta: float) -> None:
    if beta < 0:
        raise RuntimeError("smooth_l1_loss does not support negative values for beta.")


def smooth_l1_loss(input: np.ndarray, target: np.ndarray, *, reduction: str = "mean", beta: float = 1.0) -> np.ndarray:
    """0.5 d^2 / beta where |d| < beta, else |d| - 0.5 beta (d = input - target), reduced.
    beta = 0 is l1_loss, as in torch (the quadratic piece would divide by 0)."""
    _prepare("smooth_l1_loss", input, target, reduction, warn=True)
    _check_beta(beta)
    with np.errstate(invalid="ignore", over="ignore"):
        distance = np.abs(input - target)
        losses = distance if beta == 0 else np.where(distance < beta, 0.5 * distance * distance / beta,
                                                     distance - 0.5 * beta)
        return _reduce(losses, reduction, losses.size)


def smooth_l1_loss_backward(grad_output: Any, input: np.ndarray, target: np.ndarray, reduction: str = "mean",
                            beta: float = 1.0) -> np.ndarray:
    """dL/dinput = g * (d / beta where |d| < beta, else sign(d)). At |d| == beta torch takes the
    sign(d) branch (equal in exact arithmetic); beta = 0 gives l1's gradient, 0 at d == 0."""
    shape = _prepare("smooth_l1_loss", input, target, reduction, warn=False)
    _check_beta(beta)
    scale = _element_upstream(grad_output, reduction, shape, input.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        difference = input - target
        if beta == 0:
            grad = _sign(difference) * scale
        else:
            grad = np.where(difference <= -beta, -scale,
                            np.where(difference >= beta, scale, scale * difference / beta))
    return _sum_to_shape(np.asarray(grad, dtype=input.dtype), input.shape)


def _check_delta(delta: float) -> None:
    if not delta > 0:
        raise RuntimeError("huber_loss does not support non-positive values for delta.")


def huber_loss(input: np.ndarray, target: np.ndarray, reduction: str = "mean", delta: float = 1.0) -> np.ndarray:
    """0.5 d^2 where |d| < delta, else delta (|d| - 0.5 delta) (d = input - target), reduced."""
    _prepare("huber_loss", input, target, reduction, warn=True)
    _check_delta(delta)
    with np.errstate(invalid="ignore", over="ignore"):
        distance = np.abs(input - target)
        losses = np.where(distance < delta, 0.5 * distance * distance, delta * (distance - 0.5 * delta))
        return _reduce(losses, reduction, losses.size)


def huber_loss_backward(grad_output: Any, input: np.ndarray, target: np.ndarray, reduction: str = "mean",
                        delta: float = 1.0) -> np.ndarray:
    """dL/dinput = g * (d where |d| <= delta, else delta sign(d)). Unlike smooth_l1, torch takes the
    quadratic branch at |d| == delta (equal in exact arithmetic)."""
    shape = _prepare("huber_loss", input, target, reduction, warn=False)
    _check_delta(delta)
    scale = _element_upstream(grad_output, reduction, shape, input.dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        difference = input - target
        grad = np.where(difference < -delta, -scale * delta,
                        np.where(difference > delta, scale * delta, scale * difference))
    return _sum_to_shape(np.asarray(grad, dtype=input.dtype), input.shape)


# ---------------------------------------------------------------------------------------- modules
class MSELoss(_ElementwiseLoss):
    """mse_loss as a module; ``backward(grad_output=1.0)`` returns dloss/dinput."""

    loss_fn, backward_fn = staticmethod(mse_loss), staticmethod(mse_loss_backward)

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)


class L1Loss(_ElementwiseLoss):
    """l1_loss as a module; ``backward(grad_output=1.0)`` returns dloss/dinput."""

    loss_fn, backward_fn = staticmethod(l1_loss), staticmethod(l1_loss_backward)

    def __init__(self, *, reduction: str = "mean") -> None:
        super().__init__(reduction)


class SmoothL1Loss(_ElementwiseLoss):
    """smooth_l1_loss as a module; ``backward(grad_output=1.0)`` returns dloss/dinput."""

    loss_fn, backward_fn = staticmethod(smooth_l1_loss), staticmethod(smooth_l1_loss_backward)

    def __init__(self, *, reduction: str = "mean", beta: float = 1.0) -> None:
        super().__init__(reduction)
        self.beta = beta

    def _options(self) -> dict[str, Any]:
        return {"reduction": self.reduction, "beta": self.beta}


class HuberLoss(_ElementwiseLoss):
    """huber_loss as a module (torch takes both arguments positionally: no deprecated ones precede them)."""

    loss_fn, backward_fn = staticmethod(huber_loss), staticmethod(huber_loss_backward)

    def __init__(self, reduction: str = "mean", delta: float = 1.0) -> None:
        if not isinstance(delta, (float, int)):
            raise TypeError(f"delta must be a float or int, got: {type(delta)}")
        super().__init__(reduction)
        self.delta = delta

    def _options(self) -> dict[str, Any]:
        return {"reduction": self.reduction, "delta": self.delta}
