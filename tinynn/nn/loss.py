"""Classification losses: nll_loss and cross_entropy with their backwards, and their modules.

Shapes (torch's): input (N, C), (C,) unbatched, or (N, C, d1, ...) with the classes on dim 1.
Class-index targets have the input's shape without the class dim; cross_entropy also takes class
probabilities of the input's own shape. The math follows aten/src/ATen/native/LossNLL.cpp:

* nll: loss_i = -w[t_i] * x[i, t_i], 0 where t_i == ignore_index; 'mean' divides the sum by
  sum_i w[t_i] over the kept samples (their count without weights), so all-ignored gives NaN.
* cross_entropy = nll(log_softmax(x)); label smoothing eps adds eps/C * smooth with
  smooth_i = -sum_c w_c logp[i, c], reduced with the same denominator as nll.
* probability targets t: t' = t (1 - eps) + eps/C, loss_i = -sum_c w_c t'[i, c] logp[i, c];
  'mean' divides by the number of samples N * d1 * ... (not by the weights).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from tinynn._dtype import torch_name
from tinynn.nn.module import Module
from tinynn.nn.softmax import log_softmax

_REDUCTIONS = ("none", "mean", "sum")
_INT64, _UINT8 = np.dtype(np.int64), np.dtype(np.uint8)  # dtype objects compare faster than types


class _Targets(NamedTuple):
    """Validated class-index targets: what both the forward and the backward need."""

    index: np.ndarray  # int64 class per sample, ignored samples replaced by 0 (a safe index)
    kept: np.ndarray | None  # True where not ignored; None when nothing is ignored
    sample_weight: np.ndarray | None  # w[t_i], 0 where ignored; None = all ones (no weight, none ignored)
    total_weight: Any  # the 'mean' denominator: sum of sample_weight, or the count of kept samples


# ---------------------------------------------------------------------------------------- checks
def _check_common(name: str, input: Any, target: Any, weight: Any, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{reduction} is not a valid value for reduction (expected 'none', 'mean' or 'sum')")
    for arg, value in (("input", input), ("target", target)):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"{name}(): argument '{arg}' must be a NumPy array, not {type(value).__name__}")
    if input.dtype.kind != "f":
        raise TypeError(
            f"{name}(): expected a floating-point input, got {torch_name(input.dtype)} ({input.dtype}); "
            "convert it with .astype(np.float32)"
        )
    if input.ndim == 0:
        raise ValueError("Expected 1 or more dimensions (got 0)")
    if weight is not None:
        n_classes = input.shape[1 if input.ndim > 1 else 0]
        if not isinstance(weight, np.ndarray):
            raise TypeError(
                f"{name}(): weight must be a NumPy array of shape ({n_classes},), not {type(weight).__name__}"
            )
        if weight.shape != (n_classes,):
            shape = list(weight.shape)
            raise RuntimeError(
                f"weight tensor should be defined either for all {n_classes} classes or no classes "
                f"but got weight tensor of shape: {shape}"
            )
        if weight.dtype != input.dtype:
            raise RuntimeError(
                f"expected scalar type {torch_name(input.dtype)} but found {torch_name(weight.dtype)}: weight "
                f"is {weight.dtype}, input is {input.dtype}; convert with weight.astype(np.{input.dtype.name})"
            )


def _check_class_target_shape(input: np.ndarray, target: np.ndarray) -> None:
    if target.dtype != _INT64 and target.dtype != _UINT8:
        raise RuntimeError(
            f"expected target dtype to be Long or Byte, but got {torch_name(target.dtype)} ({target.dtype}); "
            "class-index targets are integer labels: convert with .astype(np.int64)"
        )
    if target.dtype == _UINT8 and input.ndim > 2:  # torch's spatial kernels (nll_loss2d...) take Long only
        raise RuntimeError("expected scalar type Long but found Byte: class-index targets of an (N, C, d1, ...) "
                           "input must be int64; convert with .astype(np.int64)")
    if input.ndim == 1:
        if target.ndim > 1 or target.size != 1:
            raise ValueError(f"For 1D input, 1D target must have size 1, but got target size: {target.size}")
        return
    batch = target.shape[0] if target.ndim else 0
    if batch != input.shape[0]:
        raise ValueError(f"Expected input batch_size ({input.shape[0]}) to match target batch_size ({batch}).")
    if input.ndim == 2 and target.ndim != 1:
        raise RuntimeError("0D or 1D target tensor expected, multi-target not supported")
    if target.shape[1:] != input.shape[2:]:
        expected = [input.shape[0], *input.shape[2:]]
        raise RuntimeError(f"Expected target size {expected}, got {list(target.shape)}")


def _prepare_targets(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None,
                     ignore_index: int) -> _Targets:
    """Check class indices against C and ignore_index; gather each sample's weight and the denominator."""
    if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
        raise TypeError(f"ignore_index must be an int, not {type(ignore_index).__name__}")
    n_classes = input.shape[1 if input.ndim > 1 else 0]
    index = target.reshape(()) if input.ndim == 1 else target
    if index.dtype != _INT64:
        index = index.astype(_INT64)  # uint8 labels (torch's Byte) are widened once
    kept = None
    # The common case in one reduction: viewed as unsigned, a negative index is huge, so
    # max < C means every index is in range, and none equals an ignore_index outside [0, C).
    if index.size and (0 <= ignore_index < n_classes or not index.view(np.uint64).max() < n_classes):
        ignored = index == ignore_index
        bad = ~ignored & ((index < 0) | (index >= n_classes))
        if bad.any():
            raise IndexError(f"Target {int(index[bad].flat[0])} is out of bounds.")
        if ignored.any():
            kept = ~ignored
            index = np.where(ignored, 0, index)
    if weight is not None:
        sample_weight = weight[index]
        if kept is not None:
            sample_weight = np.where(kept, sample_weight, 0)
        total_weight = sample_weight.sum()
    elif kept is not None:
        sample_weight = kept.astype(input.dtype)
        total_weight = int(np.count_nonzero(kept))
    else:
        sample_weight, total_weight = None, index.size
    return _Targets(index, kept, sample_weight, total_weight)


def _pick(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values[i, index[i], ...] for each sample: the entry of each sample's class (class dim 1, or 0 if 1-D)."""
    if values.ndim == 1:
        return values[index]
    if values.ndim == 2:
        return values[np.arange(values.shape[0]), index]
    return np.take_along_axis(values, index[:, None], axis=1)[:, 0]


def _scatter(shape: tuple[int, ...], dtype: np.dtype, index: np.ndarray, values: np.ndarray) -> np.ndarray:
    """An array of zeros with ``values`` written at each sample's class (the inverse of _pick)."""
    result = np.zeros(shape, dtype=dtype)
    if len(shape) <= 2:
        result[(index,) if len(shape) == 1 else (np.arange(shape[0]), index)] = values
    else:
        np.put_along_axis(result, index[:, None], values[:, None], axis=1)
    return result


def _mean(total: Any, denominator: Any) -> Any:
    if not denominator:  # nothing kept, or weights summing to 0: torch's x/0, without NumPy's warning
        with np.errstate(divide="ignore", invalid="ignore"):
            return total / total.dtype.type(denominator)
    return total / denominator  # a Python int or a same-dtype scalar: the result keeps total's dtype


def _reduce(losses: np.ndarray, reduction: str, denominator: Any) -> np.ndarray:
    """'none' keeps the per-sample losses; 'sum' adds them; 'mean' divides the sum by ``denominator``."""
    if reduction == "none":
        return losses
    total = losses.sum()
    return total if reduction == "sum" else _mean(total, denominator)


def _upstream(grad_output: Any, reduction: str, denominator: Any, sample_shape: tuple[int, ...],
              dtype: np.dtype) -> Any:
    """dL/dloss_i for each sample: grad_output / denominator ('mean'), grad_output ('sum'), or per-sample."""
    if reduction == "none":
        grad_output = np.asarray(grad_output)
        if grad_output.shape != sample_shape:
            raise RuntimeError(
                f"grad_output for reduction='none' must have the per-sample shape {sample_shape}, "
                f"got {grad_output.shape}"
            )
        return grad_output.astype(dtype, copy=False)
    if isinstance(grad_output, (float, int)):
        scale = float(grad_output)  # a Python float never upcasts a float32 array
    else:
        grad_output = np.asarray(grad_output)
        if grad_output.size != 1:
            raise RuntimeError(
                f"Expected a single element grad_output for reduction='{reduction}', but got shape {grad_output.shape}"
            )
        scale = float(grad_output.item())
    if reduction == "mean":
        # torch divides even by a zero total weight: kept samples that all weigh 0 get NaN
        # gradients (their loss is 0/0), while ignored samples are masked to exactly 0 later.
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = float(np.divide(scale, float(denominator)))
    return scale


# ---------------------------------------------------------------------------------------- nll_loss
def _nll_from_targets(log_probs: np.ndarray, targets: _Targets, reduction: str) -> np.ndarray:
    picked = _pick(log_probs, targets.index)
    if targets.kept is not None:
        picked = np.where(targets.kept, picked, 0)  # an ignored sample contributes exactly 0
    if targets.sample_weight is not None:
        picked = picked * targets.sample_weight
    if reduction == "none":
        return -picked
    total = -picked.sum()  # negate the sum, not each sample: one allocation fewer
    return total if reduction == "sum" else _mean(total, targets.total_weight)


# invalid="ignore": with a zero 'mean' denominator the upstream is +-inf or NaN, and inf * 0 is
# NaN here exactly as in torch, which never warns.
@np.errstate(invalid="ignore")
def _nll_grad(grad_output: Any, input: np.ndarray, targets: _Targets, reduction: str) -> np.ndarray:
    """dL/dinput of nll: -w[t_i] * upstream_i at each sample's class, 0 elsewhere."""
    upstream = _upstream(grad_output, reduction, targets.total_weight, targets.index.shape, input.dtype)
    values = np.broadcast_to(np.asarray(-upstream, dtype=input.dtype), targets.index.shape)
    if targets.sample_weight is not None:
        values = values * targets.sample_weight
    if targets.kept is not None:
        values = np.where(targets.kept, values, 0)
    return _scatter(input.shape, input.dtype, targets.index, values)


def nll_loss(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None, *,
             ignore_index: int = -100, reduction: str = "mean") -> np.ndarray:
    """Negative log likelihood of log-probabilities ``input`` at the target classes.

    loss_i = -weight[t_i] * input[i, t_i] (0 where t_i == ignore_index), then reduced.
    Returns a NumPy scalar of input's dtype, or the per-sample losses for reduction='none'.
    """
    _check_common("nll_loss", input, target, weight, reduction)
    _check_class_target_shape(input, target)
    targets = _prepare_targets(input, target, weight, ignore_index)
    return _nll_from_targets(input, targets, reduction)


def nll_loss_backward(grad_output: Any, input: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None,
                      ignore_index: int = -100, reduction: str = "mean") -> np.ndarray:
    """dL/dinput = -weight[t_i] * g_i at (i, t_i), zeros elsewhere; g = grad_output / total weight ('mean')."""
    _check_common("nll_loss", input, target, weight, reduction)
    _check_class_target_shape(input, target)
    targets = _prepare_targets(input, target, weight, ignore_index)
    return _nll_grad(grad_output, input, targets, reduction)


# ---------------------------------------------------------------------------------------- cross_entropy
def _is_probability_target(input: np.ndarray, target: np.ndarray, ignore_index: int) -> bool:
    """torch's rule: a target of the input's own shape holds class probabilities."""
    if target.shape != input.shape:
        return False
    if target.dtype.kind != "f":
        raise RuntimeError(
            f"Expected floating point type for target with class probabilities, got {torch_name(target.dtype)}"
        )
    if target.dtype != input.dtype:
        raise RuntimeError(
            f"cross_entropy: probability target dtype {target.dtype} differs from input dtype {input.dtype}; "
            f"convert with target.astype(np.{input.dtype.name}) (tinynn never upcasts silently)"
        )
    if ignore_index >= 0:
        raise RuntimeError("ignore_index is not supported for floating point target")
    return True


def _smoothed_probabilities(target: np.ndarray, label_smoothing: float, n_classes: int) -> np.ndarray:
    if label_smoothing > 0.0:
        return target * (1.0 - label_smoothing) + label_smoothing / n_classes
    return target


def _class_weights(weight: np.ndarray | None, ndim: int) -> np.ndarray | None:
    """weight reshaped to broadcast along the class dim: (C,) -> (1, C, 1, ...)."""
    if weight is None or ndim == 1:
        return weight
    return weight.reshape((1, -1) + (1,) * (ndim - 2))


def _cross_entropy_value(log_probs: np.ndarray, target: Any, weight: np.ndarray | None, reduction: str,
                         label_smoothing: float) -> np.ndarray:
    """The loss from log_softmax(input); ``target`` is a _Targets or a probability array."""
    class_dim = 1 if log_probs.ndim > 1 else 0
    n_classes = log_probs.shape[class_dim]
    class_weights = _class_weights(weight, log_probs.ndim)
    if not isinstance(target, _Targets):
        weighted = _smoothed_probabilities(target, label_smoothing, n_classes) * log_probs
        if class_weights is not None:
            weighted *= class_weights
        losses = -weighted.sum(axis=class_dim)
        return _reduce(losses, reduction, log_probs.size // n_classes if log_probs.size else 0)
    loss = _nll_from_targets(log_probs, target, reduction)
    if label_smoothing <= 0.0:
        return loss
    weighted = log_probs if class_weights is None else log_probs * class_weights
    smooth = -weighted.sum(axis=class_dim)
    if target.kept is not None:
        smooth = np.where(target.kept, smooth, 0)
    smooth = _reduce(smooth, reduction, target.total_weight)
    # A zero total weight makes smooth +-inf, and a label_smoothing so small that it rounds to 0 in
    # float32 then gives 0 * inf: NaN, as in torch, without NumPy's warning.
    with np.errstate(invalid="ignore"):
        return (1.0 - label_smoothing) * loss + (label_smoothing / n_classes) * smooth


@np.errstate(invalid="ignore")  # see _nll_grad
def _cross_entropy_grad(grad_output: Any, log_probs: np.ndarray, target: Any, weight: np.ndarray | None,
                        reduction: str, label_smoothing: float) -> np.ndarray:
    """dL/dinput through log_softmax: dX = G - softmax * sum_c G, with G = dL/dlogp."""
    class_dim = 1 if log_probs.ndim > 1 else 0
    n_classes = log_probs.shape[class_dim]
    dtype = log_probs.dtype
    sample_shape = log_probs.shape[:class_dim] + log_probs.shape[class_dim + 1:]
    probs = np.exp(log_probs)
    classic = isinstance(target, _Targets) and weight is None and target.kept is None and label_smoothing <= 0.0
    if classic:
        upstream = _upstream(grad_output, reduction, target.total_weight, sample_shape, dtype)
    # An infinite g takes the general form below, whose inf - inf gives NaN at the target as torch's does.
    if classic and np.isfinite(upstream).all():
        # The classic form: G = -onehot * g, so dX = (softmax - onehot) * g, g = grad_output / N for 'mean'.
        if log_probs.ndim == 2:
            probs[np.arange(log_probs.shape[0]), target.index] -= 1.0
        else:
            probs -= _scatter(log_probs.shape, dtype, target.index, np.ones(sample_shape, dtype=dtype))
        probs *= upstream if reduction != "none" else np.expand_dims(upstream, class_dim)
        return probs
    class_weights = _class_weights(weight, log_probs.ndim)
    if isinstance(target, _Targets):
        grad_log_probs = _nll_grad(grad_output, log_probs, target, reduction)
        if label_smoothing > 0.0:
            grad_log_probs *= 1.0 - label_smoothing
            upstream = _upstream(grad_output, reduction, target.total_weight, sample_shape, dtype)
            # d(smooth_i)/d(logp[i, c]) = -w_c for a kept sample: every class gets its share.
            per_sample = np.broadcast_to(np.asarray(upstream, dtype=dtype), sample_shape)
            if target.kept is not None:
                per_sample = np.where(target.kept, per_sample, 0)
            smooth_grad = np.expand_dims(per_sample * (-label_smoothing / n_classes), class_dim)
            grad_log_probs += smooth_grad if class_weights is None else smooth_grad * class_weights
    else:
        samples = log_probs.size // n_classes if log_probs.size else 0
        upstream = _upstream(grad_output, reduction, samples, sample_shape, dtype)
        grad_log_probs = -_smoothed_probabilities(target, label_smoothing, n_classes)
        if class_weights is not None:
            grad_log_probs = grad_log_probs * class_weights
        grad_log_probs = grad_log_probs * (upstream if reduction != "none" else np.expand_dims(upstream, class_dim))
    return grad_log_probs - probs * grad_log_probs.sum(axis=class_dim, keepdims=True)


def _prepare_cross_entropy(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None, ignore_index: int,
                           reduction: str, label_smoothing: float) -> Any:
    """Validate everything; return the probability target array or the prepared _Targets."""
    _check_common("cross_entropy", input, target, weight, reduction)
    if label_smoothing > 1.0:  # torch checks only the upper end; <= 0 means no smoothing
        raise RuntimeError(f"label_smoothing must be between 0.0 and 1.0. Got: {label_smoothing}")
    if _is_probability_target(input, target, ignore_index):
        return target
    _check_class_target_shape(input, target)
    return _prepare_targets(input, target, weight, ignore_index)


def cross_entropy(input: np.ndarray, target: np.ndarray, weight: np.ndarray | None = None, *,
                  ignore_index: int = -100, reduction: str = "mean", label_smoothing: float = 0.0) -> np.ndarray:
    """nll_loss(log_softmax(input, class dim), target), with optional label smoothing.

    ``target``: class indices (input's shape without the class dim) or class probabilities
    (the input's shape). Returns a NumPy scalar of input's dtype, or per-sample losses for 'none'.
    """
    prepared = _prepare_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    log_probs = log_softmax(input, 1 if input.ndim > 1 else 0)
    return _cross_entropy_value(log_probs, prepared, weight, reduction, label_smoothing)


def cross_entropy_backward(grad_output: Any, input: np.ndarray, target: np.ndarray,
                           weight: np.ndarray | None = None, ignore_index: int = -100, reduction: str = "mean",
                           label_smoothing: float = 0.0, log_probs: np.ndarray | None = None) -> np.ndarray:
    """dL/dinput. Common case (class indices, no weight, no smoothing, nothing ignored):
    (softmax - onehot) * grad_output / N for 'mean'. Pass the forward's ``log_probs`` to skip recomputing them.
    """
    prepared = _prepare_cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)
    if log_probs is None:
        log_probs = log_softmax(input, 1 if input.ndim > 1 else 0)
    return _cross_entropy_grad(grad_output, log_probs, prepared, weight, reduction, label_smoothing)


# ---------------------------------------------------------------------------------------- modules
class NLLLoss(Module):
    """nll_loss as a module; ``backward(grad_output=1.0)`` returns dloss/dinput."""

    def __init__(self, weight: np.ndarray | None = None, *, ignore_index: int = -100, reduction: str = "mean") -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # as torch's _WeightedLoss: in state_dict, cast by .to()
        self.ignore_index, self.reduction = ignore_index, reduction

    def forward(self, input: np.ndarray, target: np.ndarray) -> np.ndarray:
        _check_common("nll_loss", input, target, self.weight, self.reduction)
        _check_class_target_shape(input, target)
        targets = _prepare_targets(input, target, self.weight, self.ignore_index)
        self.save_for_backward(input, targets)
        return _nll_from_targets(input, targets, self.reduction)

    def backward(self, grad_output: Any = 1.0, needs_input_grad: bool = True) -> np.ndarray | None:
        input, targets = self.saved_tensors()
        return _nll_grad(grad_output, input, targets, self.reduction) if needs_input_grad else None


class CrossEntropyLoss(Module):
    """cross_entropy as a module; keeps log_softmax(input) so the backward does not recompute it."""

    def __init__(self, weight: np.ndarray | None = None, *, ignore_index: int = -100, reduction: str = "mean",
                 label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("weight", weight)  # as torch's _WeightedLoss: in state_dict, cast by .to()
        self.ignore_index, self.reduction = ignore_index, reduction
        self.label_smoothing = label_smoothing

    def forward(self, input: np.ndarray, target: np.ndarray) -> np.ndarray:
        prepared = _prepare_cross_entropy(input, target, self.weight, self.ignore_index, self.reduction,
                                          self.label_smoothing)
        log_probs = log_softmax(input, 1 if input.ndim > 1 else 0)
        self.save_for_backward(log_probs, prepared)
        return _cross_entropy_value(log_probs, prepared, self.weight, self.reduction, self.label_smoothing)

    def backward(self, grad_output: Any = 1.0, needs_input_grad: bool = True) -> np.ndarray | None:
        log_probs, prepared = self.saved_tensors()
        if not needs_input_grad:
            return None
        return _cross_entropy_grad(grad_output, log_probs, prepared, self.weight, self.reduction,
                                   self.label_smoothing)
