"""Properties: the regression losses (mse, l1, smooth_l1, huber) and the likelihood losses
(binary_cross_entropy, with logits, kl_div) against torch autograd.

Every example draws a dtype, shapes (0-d and empty included; the target's shape broadcasting
against the input's where torch allows it), values with ties and exact kinks (input == target,
|input - target| == beta or delta, probabilities of exactly 0 and 1), +-inf and NaN where the
results do not depend on a summation order, the hyper-parameters and weights (of broadcasting
shapes), the reduction and a random upstream gradient. It then compares the F forward and
backward, the module's forward and backward, and the warnings, with torch's.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import tinynn.nn as nn
import tinynn.nn.functional as F
from tests.strategies import (
    SPECIAL_STYLES,
    arrays,
    assert_matches,
    dtypes,
    grads,
    magnitude,
    one_torch_thread,  # noqa: F401 - an autouse fixture
    sizes,
    to_torch,
    torch_autograd,
)

# name: (tinynn F, its backward, module, torch F)
REGRESSION = {
    "mse": (F.mse_loss, F.mse_loss_backward, nn.MSELoss, TF.mse_loss),
    "l1": (F.l1_loss, F.l1_loss_backward, nn.L1Loss, TF.l1_loss),
    "smooth_l1": (F.smooth_l1_loss, F.smooth_l1_loss_backward, nn.SmoothL1Loss, TF.smooth_l1_loss),
    "huber": (F.huber_loss, F.huber_loss_backward, nn.HuberLoss, TF.huber_loss),
}


# ---------------------------------------------------------------------------------------- strategies
def _rng(draw: st.DrawFn) -> np.random.Generator:
    return np.random.default_rng(draw(st.integers(0, 2**32 - 1)))


@st.composite
def broadcast_shapes(draw: st.DrawFn) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(input shape, target shape): equal three times in four, else two shapes that broadcast
    (leading dims dropped, sides set to 1), so either may be the larger."""
    full = draw(sizes(max_ndim=3, max_side=4))
    if draw(st.integers(0, 3)):
        return full, full
    parts = []
    for _ in range(2):
        lead = draw(st.integers(0, len(full)))
        parts.append(tuple(1 if draw(st.booleans()) else side for side in full[lead:]))
    return parts[0], parts[1]


@st.composite
def broadcastable_to(draw: st.DrawFn, shape: tuple[int, ...]) -> tuple[int, ...]:
    """A weight's shape that broadcasts to ``shape`` without growing it: a suffix, some sides 1."""
    return tuple(1 if draw(st.booleans()) else side for side in shape[draw(st.integers(0, len(shape))):])


@st.composite
def probabilities(draw: st.DrawFn, shape: tuple[int, ...], dtype) -> np.ndarray:
    """Values in [0, 1]: uniform, ties with exact 0 and 1 (the clamped logs), or within 1e-50 of 0 or 1."""
    style, rng = draw(st.sampled_from(["uniform", "ties", "extreme"])), _rng(draw)
    if style == "uniform":
        values = rng.uniform(0.0, 1.0, shape)
    elif style == "ties":
        values = rng.choice([0.0, 0.25, 0.5, 1.0], shape)
    else:
        near_zero = 10.0 ** -rng.uniform(1, 50, shape)
        values = np.where(rng.random(shape) < 0.5, near_zero, 1 - near_zero)
    return values.astype(dtype)


def _warnings_of(call):
    """call()'s result and the messages of the warnings it raised (all of them, NumPy's included)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = call()
    return result, [str(warning.message) for warning in caught]


def _count(reduction: str, shape: tuple[int, ...]) -> float:
    """The divisor of a 'mean' (1 otherwise): every loss's gradient is scaled by 1 / it."""
    return max(1, int(np.prod(shape))) if reduction == "mean" else 1.0


def _compare(case: dict, ours, module, torch_fn, loss_terms: float, grad_terms: float) -> None:
    """torch's loss and input gradient (and warnings) against tinynn's F pair and module."""
    x, target, grad_output, kwargs = case["x"], case["target"], case["grad_output"], case["kwargs"]
    torch_kwargs = {key: to_torch(value) if isinstance(value, np.ndarray) else value for key, value in kwargs.items()}
    (expected, (grad_x, _)), torch_warnings = _warnings_of(lambda: torch_autograd(
        lambda a, b: torch_fn(a, b, **torch_kwargs), [x, target], grad_output, differentiable=[True, False]))
    (loss, grad), our_warnings = _warnings_of(lambda: (ours[0](x, target, **kwargs),
                                                       ours[1](grad_output, x, target, **kwargs)))
    assert our_warnings == torch_warnings
    assert_matches(loss, expected, "loss", loss_terms)
    assert_matches(grad, grad_x, "grad_input", grad_terms)
    (module_loss, module_grad), module_warnings = _warnings_of(lambda: (module(x, target),
                                                                        module.backward(grad_output)))
    assert module_warnings == torch_warnings
    assert_matches(module_loss, expected, "module loss", loss_terms)
    assert_matches(module_grad, grad_x, "module grad_input", grad_terms)


# ---------------------------------------------------------------------------------------- regression
@st.composite
def regression_cases(draw: st.DrawFn, name: str) -> dict:
    dtype = draw(dtypes)
    input_shape, target_shape = draw(broadcast_shapes())
    kwargs = {"reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if name == "smooth_l1":
        # Not below 1e-6: a beta that rounds to 0 in float32 (< 1e-45) makes torch's own kernels disagree
        # at d == 0 (its vectorized loop gives -1 there, its scalar loop 0).
        kwargs["beta"] = draw(st.sampled_from([0.0, 0.5, 1.0, 1.5]) | st.floats(1e-6, 4.0))
    if name == "huber":
        kwargs["delta"] = draw(st.sampled_from([0.5, 1.0, 1.5]) | st.floats(1e-3, 4.0))
    kink = kwargs.get("beta", kwargs.get("delta", 1.0))
    x = draw(arrays(input_shape, dtype, SPECIAL_STYLES))
    if target_shape == input_shape and draw(st.booleans()):
        # Ties and kinks: d = input - target in {-kink, 0, kink}, exactly so for the "ties" style's
        # values (multiples of 0.5, as the sampled kinks), within an ulp for the others.
        offsets = _rng(draw).choice(np.array([-kink, 0.0, kink]), size=input_shape)
        with np.errstate(invalid="ignore"):  # inf - inf
            target = np.asarray(x - offsets, dtype=dtype)
    else:
        target = draw(arrays(target_shape, dtype, SPECIAL_STYLES))
    loss_shape = np.broadcast_shapes(input_shape, target_shape)
    grad_output = draw(grads(loss_shape if kwargs["reduction"] == "none" else (), dtype))
    return dict(x=x, target=target, kwargs=kwargs, grad_output=grad_output, loss_shape=loss_shape)


@pytest.mark.parametrize("name", REGRESSION)
@given(data=st.data())
def test_regression_loss_functional_and_module_match_torch(name, data):
    case = data.draw(regression_cases(name), label="case")
    loss_fn, backward_fn, module_class, torch_fn = REGRESSION[name]
    kwargs = case["kwargs"]
    # The losses are >= 0, so their sum cannot cancel. dL/dinput sums the gradients of the broadcast
    # copies of an input entry (either sign): each is at most |g| * (2 |d|, 1, 1 or delta).
    upstream = magnitude(case["grad_output"]) / _count(kwargs["reduction"], case["loss_shape"])
    with np.errstate(invalid="ignore", over="ignore"):
        slope = {"mse": 2 * magnitude(case["x"] - case["target"]), "huber": kwargs.get("delta")}.get(name, 1.0)
    _compare(case, (loss_fn, backward_fn), module_class(**kwargs), torch_fn, 0.0, upstream * slope)


# ---------------------------------------------------------------------------------------- binary cross-entropy
@st.composite
def bce_cases(draw: st.DrawFn, logits: bool) -> dict:
    dtype = draw(dtypes)
    shape = draw(sizes(max_ndim=3, max_side=4))
    x = draw(arrays(shape, dtype, SPECIAL_STYLES)) if logits else draw(probabilities(shape, dtype))
    kwargs = {"weight": draw(st.none() | broadcastable_to(shape).flatmap(lambda s: arrays(s, dtype))),
              "reduction": draw(st.sampled_from(["mean", "sum", "none"]))}
    if logits:
        kwargs["pos_weight"] = draw(st.none() | broadcastable_to(shape).flatmap(lambda s: arrays(s, dtype)))
    grad_output = draw(grads(shape if kwargs["reduction"] == "none" else (), dtype))
    return dict(x=x, target=draw(probabilities(shape, dtype)), kwargs=kwargs, grad_output=grad_output)


@given(case=bce_cases(logits=False))
def test_binary_cross_entropy_functional_and_module_match_torch(case):
    kwargs = case["kwargs"]
    # Each weighted loss is at most 200 |w| (both logs are clamped at -100), and the weights may
    # take either sign; the gradient has no sum.
    count = _count(kwargs["reduction"], case["x"].shape)
    loss_terms = 200 * (1.0 if kwargs["weight"] is None else magnitude(kwargs["weight"])) / count
    module = nn.BCELoss(kwargs["weight"], reduction=kwargs["reduction"])
    _compare(case, (F.binary_cross_entropy, F.binary_cross_entropy_backward), module, TF.binary_cross_entropy,
             loss_terms, 0.0)


@given(case=bce_cases(logits=True))
def test_binary_cross_entropy_with_logits_functional_and_module_match_torch(case):
    x, target, kwargs = case["x"], case["target"], case["kwargs"]
    weight, pos_weight = kwargs["weight"], kwargs["pos_weight"]
    # loss_i = w ((1 - t) x - l log sigmoid(x)), l = 1 + (pw - 1) t: the two terms cancel (x << 0, t = 0),
    # and |log sigmoid(x)| <= |x| + 1. dL/dx_i = g w (l sigmoid(x) - pw t) cancels too.
    pos_weight_or_1 = np.ones(()) if pos_weight is None else pos_weight
    scale = (1.0 if weight is None else magnitude(weight)) / _count(kwargs["reduction"], x.shape)
    with np.errstate(invalid="ignore", over="ignore"):
        log_weight = magnitude(1 + (pos_weight_or_1 - 1) * target)
        loss_terms = scale * (magnitude(1 - target) * magnitude(x) + log_weight * (magnitude(x) + 1))
        grad_terms = scale * magnitude(case["grad_output"]) * (log_weight + magnitude(pos_weight_or_1 * target))
    module = nn.BCEWithLogitsLoss(weight, reduction=kwargs["reduction"], pos_weight=pos_weight)
    _compare(case, (F.binary_cross_entropy_with_logits, F.binary_cross_entropy_with_logits_backward), module,
             TF.binary_cross_entropy_with_logits, loss_terms, grad_terms)


# ---------------------------------------------------------------------------------------- kl_div
@st.composite
def kl_div_cases(draw: st.DrawFn) -> dict:
    dtype = draw(dtypes)
    input_shape, target_shape = draw(broadcast_shapes())
    kwargs = {"reduction": draw(st.sampled_from(["batchmean", "mean", "sum", "none"])),
              "log_target": draw(st.booleans())}
    x = draw(arrays(input_shape, dtype, SPECIAL_STYLES))
    # Probabilities (exact zeros among them: 0 log 0 = 0) or any values (log targets; negative ones
    # give NaN as in torch).
    use_probabilities = not kwargs["log_target"] and draw(st.booleans())
    target = draw(probabilities(target_shape, dtype) if use_probabilities else arrays(target_shape, dtype,
                                                                                      SPECIAL_STYLES))
    loss_shape = np.broadcast_shapes(input_shape, target_shape)
    grad_output = draw(grads(loss_shape if kwargs["reduction"] == "none" else (), dtype))
    return dict(x=x, target=target, kwargs=kwargs, grad_output=grad_output, loss_shape=loss_shape)


@given(case=kl_div_cases())
def test_kl_div_functional_and_module_match_torch(case):
    x, target, kwargs = case["x"], case["target"], case["kwargs"]
    if kwargs["reduction"] == "batchmean":
        divisor = max(1, x.shape[0]) if x.ndim else 1
    else:
        divisor = _count(kwargs["reduction"], case["loss_shape"])
    # loss_i = t log t - t x (or exp(t) (t - x)) cancels within itself and across the sum;
    # dL/dx = -t g (or -exp(t) g), summed over the broadcast copies of an input entry.
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        target64 = target.astype(np.float64)
        factor = np.exp(target64) if kwargs["log_target"] else target64
        own = magnitude(target64) if kwargs["log_target"] else magnitude(target64 * np.log(np.abs(target64)))
    loss_terms = (own * magnitude(factor) if kwargs["log_target"] else own) + magnitude(factor) * magnitude(x)
    grad_terms = magnitude(factor) * magnitude(case["grad_output"]) / divisor
    module = nn.KLDivLoss(**kwargs)
    _compare(case, (F.kl_div, F.kl_div_backward), module, TF.kl_div, loss_terms / divisor, grad_terms)
