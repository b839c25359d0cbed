"""Likelihood losses: binary_cross_entropy, binary_cross_entropy_with_logits and kl_div, their
backwards and modules. Element by element, with w the weight (1 when None), then reduced as the
regression losses are ('mean' divides by the number of elements):

* binary_cross_entropy, input p in [0, 1] (probabilities), target t in [0, 1]:
  loss_i = -w_i [t_i log p_i + (1 - t_i) log(1 - p_i)], each log clamped at -100 as in torch,
  so p = 0 or 1 gives a finite loss.
  dloss_i/dp_i = w_i (p_i - t_i) / max(p_i (1 - p_i), 1e-12) (torch's floor on the denominator).
* binary_cross_entropy_with_logits, input x (logits), p = sigmoid(x), positive weight pw:
  loss_i = w_i [(1 - t_i) x_i - l_i log sigmoid(x_i)] with l_i = 1 + (pw_i - 1) t_i, which is
  -w_i [pw_i t_i log p_i + (1 - t_i) log(1 - p_i)] rewritten so that nothing overflows:
  log sigmoid(x) = min(x, 0) - log1p(exp(-|x|)).
  dloss_i/dx_i = w_i (l_i sigmoid(x_i) - pw_i t_i), i.e. w_i (sigmoid(x_i) - t_i) without pw.
* kl_div, input x = log q (log-probabilities), target t = p (probabilities):
  loss_i = t_i (log t_i - x_i), 0 where t_i == 0 (torch's xlogy); with log_target (t = log p)
  loss_i = exp(t_i) (t_i - x_i). dloss_i/dx_i = -t_i, or -exp(t_i).
  'batchmean' divides the sum by the batch size input.shape[0], which gives the KL divergence
  of the batch's distributions; 'mean' divides by every element and warns as torch does.

The weights broadcast against the input (never growing it); the modules keep them as buffers, as
torch does, so their state_dict keys are torch's and a torch state_dict loads.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tinynn.nn.loss import _mean, _reduce
from tinynn.nn.loss_regression import (
    _broadcast_shape,
    _check_arrays,
    _check_broadcasts_to,
    _check_reduction,
    _element_upstream,
    _ElementwiseLoss,
    _sum_to_shape,
    _torch_size,
)

_LOG_FLOOR = -100  # torch clamps each log of binary_cross_entropy here: log(0) would make the loss inf
# torch's floor on p (1 - p) in binary_cross_entropy's gradient: a C float in aten, so float64 gets
# float32's 1e-12 (9.99999996e-13) too, and a gradient of 1/1e-12 is 1.000000004e12 there as well.
_EPSILON = np.float32(1e-12)
_KL_REDUCTIONS = ("none", "batchmean", "sum", "mean")


# ---------------------------------------------------------------------------------------- binary_cross_entropy
def _prepare_bce(input: Any, target: Any, weight: Any, reduction: str) -> None:
    _check_reduction(reduction)
    _check_arrays("binary_cross_entropy", input, target)
    if target.shape != input.shape:
        raise ValueError(f"Using a target size ({_torch_size(target.shape)}) that is different to the input size "
                         f"({_torch_size(input.shape)}) is deprecated. Please ensure they have the same size.")
    if weight is not None:
        _check_broadcasts_to("weight", weight, input.shape, input.dtype)
    # Written as "not inside [0, 1]" so that NaN is refused too, as torch's check does.
    if not ((input >= 0) & (input <= 1)).all():
        raise RuntimeError("all elements of input should be between 0 and 1")
    if not ((target >= 0) & (target <= 1)).all():
        raise RuntimeError("all elements of target should be between 0 and 1")


def binary_cross_entropy(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None, *,
                         reduction: str = "mean") -> np.ndarray:
    """-w [t log p + (1 - t) log(1 - p)], logs clamped at -100, reduced. input p, target t: the same
    shape; weight broadcasts to it. Returns a NumPy scalar of input's dtype, or the losses for 'none'."""
    _prepare_bce(input, target, weight, reduction)
    # log(0) = -inf, then clamped; an infinite weight gives inf or NaN, as in torch (which never warns).
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        log_p = np.maximum(np.log(input), _LOG_FLOOR)
        log_one_minus_p = np.maximum(np.log1p(-input), _LOG_FLOOR)
        losses = (target - 1) * log_one_minus_p - target * log_p
        if weight is not None:
            losses = losses * weight
        return _reduce(losses, reduction, losses.size)


def binary_cross_entropy_backward(grad_output: Any, input: np.ndarray, target: np.ndarray,
                                  weight: np.ndarray | None = None, reduction: str = "mean") -> np.ndarray:
    """dL/dinput = g * w (p - t) / max(p (1 - p), 1e-12), g = grad_output (/ count for 'mean')."""
    _prepare_bce(input, target, weight, reduction)
    scale = _element_upstream(grad_output, reduction, input.shape, input.dtype)
    with np.errstate(invalid="ignore", over="ignore"):  # as torch: inf or NaN for huge or infinite weights
        grad = (input - target) / np.maximum((1 - input) * input, _EPSILON) * scale
        if weight is not None:
            grad = grad * weight
    return np.asarray(grad, dtype=input.dtype)


# ---------------------------------------------------------------------------------------- with logits
def _prepare_bce_with_logits(input: Any, target: Any, weight: Any, pos_weight: Any, reduction: str) -> None:
    _check_reduction(reduction)
    _check_arrays("binary_cross_entropy_with_logits", input, target)
    if target.shape != input.shape:
        raise ValueError(f"Target size ({_torch_size(target.shape)}) must be the same as input size "
                         f"({_torch_size(input.shape)})")
    for name, value in (("weight", weight), ("pos_weight", pos_weight)):
        if value is not None:
            _check_broadcasts_to(name, value, input.shape, input.dtype)


def binary_cross_entropy_with_logits(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None, *,
                                     reduction: str = "mean", pos_weight: np.ndarray | None = None) -> np.ndarray:
    """w [(1 - t) x - (1 + (pw - 1) t) log sigmoid(x)] (aten's form), reduced. input x (logits),
    target t: the same shape; weight and pos_weight broadcast to it (pos_weight: one per class,
    last dim, for multi-label targets). Finite for any finite x: no exp of a positive number."""
    _prepare_bce_with_logits(input, target, weight, pos_weight, reduction)
    with np.errstate(invalid="ignore", over="ignore"):  # an infinite logit: 0 * inf = NaN, as in torch
        log_sigmoid = np.minimum(input, 0) - np.log1p(np.exp(-np.abs(input)))
        if pos_weight is not None:
            log_sigmoid = log_sigmoid * ((pos_weight - 1) * target + 1)
        losses = (1 - target) * input - log_sigmoid
        if weight is not None:
            losses = losses * weight
        return _reduce(losses, reduction, losses.size)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp(-|x|) <= 1, and e / (1 + e) for x < 0."""
    exp_minus_abs = np.exp(-np.abs(x))
    return np.where(x >= 0, 1, exp_minus_abs) / (1 + exp_minus_abs)


def binary_cross_entropy_with_logits_backward(grad_output: Any, input: np.ndarray, target: np.ndarray,
                                              weight: np.ndarray | None = None, reduction: str = "mean",
                                              pos_weight: np.ndarray | None = None) -> np.ndarray:
    """dL/dinput = g * w ((pw t + 1 - t) sigmoid(x) - pw t), or g * w (sigmoid(x) - t) without pos_weight."""
    _prepare_bce_with_logits(input, target, weight, pos_weight, reduction)
    scale = _element_upstream(grad_output, reduction, input.shape, input.dtype)
    probability = _sigmoid(input)
    with np.errstate(invalid="ignore", over="ignore"):
        if pos_weight is not None:
            weighted_target = pos_weight * target
            grad = (weighted_target + 1 - target) * probability - weighted_target
        else:
            grad = probability - target
        grad = grad * scale
        if weight is not None:
            grad = grad * weight
    return np.asarray(grad, dtype=input.dtype)


# ---------------------------------------------------------------------------------------- kl_div
def _prepare_kl_div(input: Any, target: Any, reduction: str) -> tuple[int, ...]:
    _check_reduction(reduction, _KL_REDUCTIONS)
    _check_arrays("kl_div", input, target)
    return _broadcast_shape(target.shape, input.shape)  # torch broadcasts silently, naming the target "a"


def kl_div(input: np.ndarray, target: np.ndarray, *, reduction: str = "mean", log_target: bool = False) -> np.ndarray:
    """t (log t - x) (0 where t == 0), or exp(t) (t - x) with log_target, reduced; 'batchmean'
    divides the sum by input.shape[0]. input x: log-probabilities; target broadcasts against it."""
    _prepare_kl_div(input, target, reduction)
    if reduction == "mean":
        warnings.warn("reduction: 'mean' divides the total loss by both the batch size and the support size."
                      "'batchmean' divides only by the batch size, and aligns with the KL div math definition."
                      "'mean' will be changed to behave the same as 'batchmean' in the next major release.",
                      stacklevel=2)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):  # log 0, log of t < 0, exp overflow
        if log_target:
            losses = np.exp(target) * (target - input)
        else:
            target_log_target = np.where(target == 0, 0, target * np.log(target))  # xlogy(t, t)
            losses = target_log_target - target * input
        if reduction == "batchmean":
            return _mean(losses.sum(), input.shape[0]) if input.ndim else losses.sum()
        return _reduce(losses, reduction, losses.size)


def kl_div_backward(grad_output: Any, input: np.ndarray, target: np.ndarray, reduction: str = "mean",
                    log_target: bool = False) -> np.ndarray:
    """dL/dinput = -t * g, or -exp(t) * g with log_target; g = grad_output, / the element count
    ('mean') or / input.shape[0] ('batchmean'); summed over the dims the target broadcast."""
    shape = _prepare_kl_div(input, target, reduction)
    if reduction == "batchmean":
        batch = input.shape[0] if input.ndim else 1  # torch does not divide a 0-d input's sum
        scale = _element_upstream(grad_output, "mean", shape, input.dtype, count=batch)
    else:
        scale = _element_upstream(grad_output, reduction, shape, input.dtype)
    with np.errstate(invalid="ignore", over="ignore"):  # 0 * inf, as in torch
        grad = np.asarray(-(np.exp(target) if log_target else target) * scale, dtype=input.dtype)
    if grad.shape != shape:  # a target smaller than the input: each input entry gets its own gradient
        grad = np.broadcast_to(grad, shape).copy()
    return _sum_to_shape(grad, input.shape)

# ---------------------------------------------------------------------------------------- modules
class BCELoss(_ElementwiseLoss):
    """binary_cross_entropy as a module, ``weight`` kept as a buffer (state_dict key 'weight' when
    given, as torch's); ``backward(grad_output=1.0)`` returns dloss/dinput."""

    loss_fn = staticmethod(binary_cross_entropy)
    backward_fn = staticmethod(binary_cross_entropy_backward)

    def __init__(self, weight: np.ndarray | None = None, *, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)

    def _options(self) -> dict[str, Any]:
        return {"weight": self.weight, "reduction": self.reduction}


class BCEWithLogitsLoss(_ElementwiseLoss):
    """binary_cross_entropy_with_logits as a module, ``weight`` and ``pos_weight`` kept as buffers
    (as torch's); ``backward(grad_output=1.0)`` returns dloss/dinput."""

    loss_fn = staticmethod(binary_cross_entropy_with_logits)
    backward_fn = staticmethod(binary_cross_entropy_with_logits_backward)

    def __init__(self, weight: np.ndarray | None = None, *, reduction: str = "mean",
                 pos_weight: np.ndarray | None = None) -> None:
        super().__init__(reduction)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)

    def _options(self) -> dict[str, Any]:
        return {"weight": self.weight, "reduction": self.reduction, "pos_weight": self.pos_weight}


class KLDivLoss(_ElementwiseLoss):
    """kl_div as a module; the default reduction='mean' warns on every forward, as torch's does."""

    loss_fn, backward_fn = staticmethod(kl_div), staticmethod(kl_div_backward)

    def __init__(self, *, reduction: str = "mean", log_target: bool = False) -> None:
        super().__init__(reduction)
        self.log_target = log_target

    def _options(self) -> dict[str, Any]:
        return {"reduction": self.reduction, "log_target": self.log_target}
