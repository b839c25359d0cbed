"""Properties: Adam, AdamW, RMSprop and Adagrad against torch's, step by step and across state_dicts.

Each case draws the hyper-parameters of one to three parameter groups (each with its own lr and
the rest), parameters of random shapes in float64 or float32, and up to six steps of gradients
(random, exact zeros or None per parameter, or ``zero_grad()`` on the last ones). After every
step each parameter and every state entry must match torch's single-tensor loop. At one drawn
step a fresh tinynn optimizer (other defaults) takes torch's ``state_dict()`` and carries on; at
another a fresh torch optimizer takes tinynn's.

The two libraries do the same ops in the same order but are not bit for bit equal (torch fuses
multiply-adds and uses MKL's sqrt; see OPTIM_* in tinynn/testing/tolerances.py), so each entry
is held to rtol times a first-order error bound run beside the steps (the ``_bound_*``
functions): the size of the terms the entry was computed from, accumulated over the steps, with
the growth of relative error through a square root of a cancelling difference included.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tinynn.nn as nn
import tinynn.optim as optim
from tests.strategies import (
    arrays,
    dtypes,
    one_torch_thread,  # noqa: F401 - an autouse fixture
    optimizer_steps,
    sizes,
    to_torch,
)
from tinynn.testing.compare import to_numpy
from tinynn.testing.tolerances import OPTIM_F32_RTOL, OPTIM_F64_RTOL

LEARNING_RATES = st.sampled_from([0.0, 1e-3, 0.1]) | st.floats(1e-4, 1.0)
# Betas, alphas and weight decays are exactly 0 (sampled) or at least SMALLEST: one of 5e-324 or 1e-44
# acts as 0 yet puts products in the subnormal range, where rounding is absolute, so torch's fused
# multiply-add and NumPy's two roundings differ by a whole subnormal (a relative error of 1, which no
# relative bound holds; a weight decay of 5e-324 made exp_avg 5e-324 against torch's 0).
SMALLEST = 1e-6
WEIGHT_DECAYS = st.sampled_from([0.0, 0.0, 0.01]) | st.floats(SMALLEST, 0.5)


# ---------------------------------------------------------------------------------------- cases
@st.composite
def adam_groups(draw: st.DrawFn, kind: str) -> dict:
    group = dict(
        lr=draw(LEARNING_RATES),
        betas=(draw(st.sampled_from([0.0, 0.5, 0.9]) | st.floats(SMALLEST, 0.99)),
               draw(st.sampled_from([0.0, 0.9, 0.999]) | st.floats(SMALLEST, 0.9999))),
        eps=draw(st.sampled_from([1e-8, 1e-3, 0.0])), weight_decay=draw(WEIGHT_DECAYS),
        amsgrad=draw(st.booleans()), maximize=draw(st.booleans()),
    )
    if kind == "Adam":
        group["decoupled_weight_decay"] = draw(st.booleans())
    return group


@st.composite
def rmsprop_groups(draw: st.DrawFn, kind: str) -> dict:
    centered = draw(st.booleans())
    # alpha in [0, 1] (torch takes any alpha >= 0; above 1 the square average can go negative).
    # Centered, square_avg - grad_avg**2 is alpha**k * (1 - alpha**k) * g**2 for k equal gradients:
    # for alpha near 0 that is rounding noise whose sign (NaN or not) neither library controls.
    alphas = st.floats(0.2, 1.0) if centered else st.sampled_from([0.0, 0.5]) | st.floats(SMALLEST, 1.0)
    return dict(
        lr=draw(LEARNING_RATES), alpha=draw(st.sampled_from([0.99, 0.9]) | alphas),
        eps=draw(st.sampled_from([1e-8, 1e-2, 0.0])), weight_decay=draw(WEIGHT_DECAYS),
        momentum=draw(st.sampled_from([0.0, 0.0, 0.9]) | st.floats(0.0, 0.99)), centered=centered,
        maximize=draw(st.booleans()),
    )


@st.composite
def adagrad_groups(draw: st.DrawFn, kind: str) -> dict:
    return dict(
        lr=draw(LEARNING_RATES), lr_decay=draw(st.sampled_from([0.0, 0.1]) | st.floats(0.0, 1.0)),
        weight_decay=draw(WEIGHT_DECAYS),
        initial_accumulator_value=draw(st.sampled_from([0.0, 0.1]) | st.floats(0.0, 2.0)),
        eps=draw(st.sampled_from([1e-10, 1e-3, 0.0])), maximize=draw(st.booleans()),
    )


GROUPS = {"Adam": adam_groups, "AdamW": adam_groups, "RMSprop": rmsprop_groups, "Adagrad": adagrad_groups}
# The defaults of the fresh optimizer that takes the other library's state_dict: all overwritten.
OTHER = {
    "Adam": dict(lr=0.5, betas=(0.1, 0.2), eps=0.5, weight_decay=0.3, amsgrad=False, decoupled_weight_decay=True),
    "AdamW": dict(lr=0.5, betas=(0.1, 0.2), eps=0.5, weight_decay=0.3, amsgrad=False),
    "RMSprop": dict(lr=0.5, alpha=0.1, eps=0.5, weight_decay=0.3, momentum=0.5, centered=False),
    "Adagrad": dict(lr=0.5, lr_decay=0.3, weight_decay=0.3, initial_accumulator_value=5.0, eps=0.5),
}


@st.composite
def cases(draw: st.DrawFn, kind: str) -> dict:
    dtype = draw(dtypes)
    shapes = draw(st.lists(sizes(max_ndim=2, max_side=4), min_size=1, max_size=3))
    steps = draw(optimizer_steps(shapes, dtype, max_steps=6))
    return dict(
        dtype=dtype, params=[draw(arrays(shape, dtype)) for shape in shapes],
        groups=[draw(GROUPS[kind](kind)) for _ in range(draw(st.integers(1, len(shapes))))], steps=steps,
        torch_to_ours=draw(st.integers(0, len(steps))), ours_to_torch=draw(st.integers(0, len(steps))),
    )


def _build(library: Any, kind: str, params: list, groups: list[dict]) -> Any:
    """One group per hyper-parameter dict, parameters dealt in order; torch's single-tensor loop."""
    per_group = np.array_split(np.arange(len(params)), len(groups))
    param_groups = [{"params": [params[i] for i in indices], **hyper} for indices, hyper in zip(per_group, groups)]
    return getattr(library, kind)(param_groups, foreach=False, **groups[0])


def _to_torch_state(state_dict: dict) -> dict:
    """tinynn's state_dict as torch takes it: arrays as (copied) tensors, ``step`` on the CPU."""
    state = {index: {key: torch.from_numpy(np.array(value)) if key == "step" else to_torch(value)
                     for key, value in entry.items()}
             for index, entry in state_dict["state"].items()}
    return {"state": state, "param_groups": copy.deepcopy(state_dict["param_groups"])}


# ---------------------------------------------------------------------------------------- error bounds
# A bound is 0 only where both libraries must get the entry exactly: it was made from exact zeros
# (zero gradients, an initial accumulator, a factor of 0 or a lerp weight of 0). That keeps a
# square root of an exact 0 exact too (growth 0, not inf), so a step with zero gradients does not
# leave the parameter's bound infinite for every later step.
def _abs(value: Any) -> np.ndarray:
    return np.abs(to_numpy(value).astype(np.float64))


def _add(bound: dict, key: str, terms: np.ndarray, factor: float = 1.0) -> np.ndarray:
    """``bound[key]`` grown by this step's ``terms``; ``factor``: what the state's old value is multiplied
    by (0 throws it away, and its error with it)."""
    bound[key] = (bound.get(key, 0.0) if factor != 0 else 0.0) + terms
    return bound[key]


def _nan_as_inf(value: np.ndarray) -> np.ndarray:
    return np.where(np.isnan(value), np.inf, value)


def _grad_terms(bound: dict, grad: Any, before: np.ndarray, weight_decay: float) -> np.ndarray:
    """The terms of ``grad + weight_decay * param``: with weight decay, the parameter's size and the
    error it may carry (its bound), so that a parameter torch rounded to exactly 0 gives no exact 0."""
    if weight_decay == 0:  # the parameter does not enter (0 * a NaN parameter would be NaN)
        return _abs(grad)
    return _abs(grad) + weight_decay * (_abs(before) + bound.get("param", 0.0))


def _growth(terms: np.ndarray, value: np.ndarray) -> np.ndarray:
    """How much a relative error grows through a value that cancels: terms / value; 0 where the terms
    are 0 (the value is exact), inf where value <= 0 < terms (cancelled to 0 or below)."""
    return np.where(terms == 0, 0.0, np.where(value > 0, terms / value, np.inf))


def _bound_adam(bound: dict, group: dict, before: np.ndarray, grad: np.ndarray, state: dict, decoupled: bool) -> None:
    (beta1, beta2), lr, weight_decay = group["betas"], group["lr"], group["weight_decay"]
    size, grad_terms = _abs(before), _grad_terms(bound, grad, before, 0.0 if decoupled else weight_decay)
    exp_avg = _add(bound, "exp_avg", grad_terms)
    square = (1 - beta2) * grad_terms**2
    _add(bound, "exp_avg_sq", _abs(state["exp_avg_sq"]) + square, factor=beta2)
    key = "max_exp_avg_sq" if group["amsgrad"] else "exp_avg_sq"
    if group["amsgrad"]:
        _add(bound, key, _abs(state[key]) + square)
    step = float(state["step"])
    second = _abs(state[key])
    denom = np.sqrt(second) / (1 - beta2**step) ** 0.5 + group["eps"]
    update = lr / (1 - beta1**step) * exp_avg / denom * (1 + _growth(bound[key], second))
    _add(bound, "param", size * (1 + lr * weight_decay) + _nan_as_inf(update))


def _bound_rmsprop(bound: dict, group: dict, before: np.ndarray, grad: np.ndarray, state: dict) -> None:
    size, alpha = _abs(before), group["alpha"]
    grad_terms = _grad_terms(bound, grad, before, group["weight_decay"])
    square_terms = _add(bound, "square_avg", _abs(state["square_avg"]) + abs(1 - alpha) * grad_terms**2,
                        factor=alpha)
    square = _abs(state["square_avg"])
    if group["centered"]:
        # lerp(grad_avg, grad, 1 - alpha): with weight 0 (alpha 1) grad_avg + 0 * (...) is grad_avg exactly.
        mean_terms = _add(bound, "grad_avg", grad_terms if alpha != 1 else np.zeros_like(grad_terms))
        square = square - _abs(state["grad_avg"]) ** 2  # what the square root is taken of
        square_terms = square_terms + mean_terms**2
    avg = np.sqrt(np.maximum(square, 0.0)) + group["eps"]
    update = _nan_as_inf(grad_terms / avg * (1 + _growth(square_terms, square)))
    if group["momentum"] > 0:
        update = _add(bound, "momentum_buffer", update)
    _add(bound, "param", size + group["lr"] * update)


def _bound_adagrad(bound: dict, group: dict, before: np.ndarray, grad: np.ndarray, state: dict) -> None:
    size = _abs(before)
    grad_terms = _grad_terms(bound, grad, before, group["weight_decay"])
    sum_terms = _add(bound, "sum", _abs(state["sum"]) + grad_terms**2)
    clr = group["lr"] / (1 + (float(state["step"]) - 1) * group["lr_decay"])
    std = np.sqrt(_abs(state["sum"])) + group["eps"]
    update = _nan_as_inf(clr * grad_terms / std * (1 + _growth(sum_terms, _abs(state["sum"]))))
    _add(bound, "param", size + update)


def _bound(kind: str, bound: dict, group: dict, before: np.ndarray, grad: Any, state: dict) -> None:
    """Grow one parameter's error bounds by one step (``state`` is torch's, after the step).

    A bound is inf where first-order bounds give out: a zero denominator (torch's entry is then
    inf or NaN as well) or a square root of a difference that cancelled to 0. A NaN bound is taken as inf."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kind in ("Adam", "AdamW"):
            _bound_adam(bound, group, before, grad, state, kind == "AdamW" or group["decoupled_weight_decay"])
        elif kind == "RMSprop":
            _bound_rmsprop(bound, group, before, grad, state)
        else:
            _bound_adagrad(bound, group, before, grad, state)


# ---------------------------------------------------------------------------------------- comparison
def assert_within(actual: Any, expected: Any, bound: Any, rtol: float, name: str) -> float:
    """Each entry within ``rtol * bound`` of torch's (NaN where torch has NaN); the worst diff / bound."""
    a, e = to_numpy(actual), to_numpy(expected)
    assert a.shape == e.shape and a.dtype == e.dtype, f"{name}: {a.dtype}{a.shape} vs torch's {e.dtype}{e.shape}"
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    if (nan_a != nan_e).any():
        index = np.unravel_index(int(np.argmax(nan_a != nan_e)), a.shape)
        raise AssertionError(f"{name}: NaN mismatch at {index}: {a64[index]!r} vs torch's {e64[index]!r}")
    with np.errstate(invalid="ignore"):
        diff = np.where((a64 == e64) | nan_e, 0.0, np.abs(a64 - e64))
    # A NaN bound (lr 0 times an infinite growth, a NaN parameter) bounds nothing.
    allowed = np.broadcast_to(_nan_as_inf(rtol * np.asarray(bound, dtype=np.float64)), a.shape)
    if not (diff <= allowed).all():
        index = np.unravel_index(int(np.argmax(diff - allowed)), a.shape)
        raise AssertionError(f"{name}: |diff| {diff[index]:.3e} > {rtol:g} * bound {allowed[index] / rtol:.3e} at "
                             f"{index}: {a64[index]!r} vs torch's {e64[index]!r}")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratios = np.where(diff == 0, 0.0, diff / (allowed / rtol))
    return float(ratios.max(initial=0.0))


def _assert_states_match(optimizer: Any, torch_optimizer: Any, params: list, torch_params: list, bounds: list,
                         rtol: float, label: str) -> None:
    for index, (param, torch_param) in enumerate(zip(params, torch_params)):
        assert_within(param.data, torch_param, bounds[index].get("param", 0.0), rtol, f"{label} param {index}")
        ours, theirs = optimizer.state.get(param, {}), torch_optimizer.state.get(torch_param, {})
        assert sorted(ours) == sorted(theirs), f"{label} param {index}: state keys {sorted(ours)} vs {sorted(theirs)}"
        for key, value in theirs.items():
            if key == "step":  # counted in float32 by both, so equal
                assert to_numpy(ours[key]).dtype == to_numpy(value).dtype, f"{label} step dtype"
                assert float(ours[key]) == float(value), f"{label} param {index}: step {ours[key]} vs {value}"
            else:
                assert_within(ours[key], value, bounds[index].get(key, 0.0), rtol, f"{label} param {index} {key}")


def check_against_torch(kind: str, case: dict) -> None:
    rtol = OPTIM_F64_RTOL if case["dtype"] == np.float64 else OPTIM_F32_RTOL
    params = [nn.Parameter(value.copy()) for value in case["params"]]
    torch_params = [torch.nn.Parameter(to_torch(value)) for value in case["params"]]
    groups = case["groups"]
    optimizer, torch_optimizer = _build(optim, kind, params, groups), _build(torch.optim, kind, torch_params, groups)
    per_param = [groups[g] for g, indices in enumerate(np.array_split(np.arange(len(params)), len(groups)))
                 for _ in indices]
    bounds: list[dict] = [{} for _ in params]
    _assert_states_match(optimizer, torch_optimizer, params, torch_params, bounds, rtol, "built")
    for step, (action, step_grads) in enumerate(case["steps"]):
        if step == case["torch_to_ours"]:
            optimizer = _build(optim, kind, params, [OTHER[kind]] * len(groups))
            optimizer.load_state_dict(torch_optimizer.state_dict())
        if step == case["ours_to_torch"]:
            torch_optimizer = _build(torch.optim, kind, torch_params, [OTHER[kind]] * len(groups))
            torch_optimizer.load_state_dict(_to_torch_state(optimizer.state_dict()))
        if action == "grads":
            for param, torch_param, grad in zip(params, torch_params, step_grads):
                param.grad = None if grad is None else grad.copy()
                torch_param.grad = None if grad is None else to_torch(grad)
        else:
            optimizer.zero_grad(set_to_none=action == "zero_grad_to_none")
            torch_optimizer.zero_grad(set_to_none=action == "zero_grad_to_none")
        before = [to_numpy(torch_param).copy() for torch_param in torch_params]
        optimizer.step()
        torch_optimizer.step()
        for index, torch_param in enumerate(torch_params):
            if torch_param.grad is not None:
                _bound(kind, bounds[index], per_param[index], before[index], torch_param.grad,
                       torch_optimizer.state[torch_param])
        _assert_states_match(optimizer, torch_optimizer, params, torch_params, bounds, rtol, f"step {step}")
    state, torch_state = optimizer.state_dict(), torch_optimizer.state_dict()
    assert state["param_groups"] == torch_state["param_groups"]
    assert sorted(state["state"]) == sorted(torch_state["state"])


@given(case=cases("Adam"))
def test_adam_matches_torch_step_by_step_and_across_state_dicts(case):
    check_against_torch("Adam", case)


@given(case=cases("AdamW"))
def test_adamw_matches_torch_step_by_step_and_across_state_dicts(case):
    check_against_torch("AdamW", case)


@given(case=cases("RMSprop"))
def test_rmsprop_matches_torch_step_by_step_and_across_state_dicts(case):
    check_against_torch("RMSprop", case)


@given(case=cases("Adagrad"))
def test_adagrad_matches_torch_step_by_step_and_across_state_dicts(case):
    check_against_torch("Adagrad", case)


# ---------------------------------------------------------------------------------------- the bounds' own test
# A relative error planted in tinynn's parameters on the last step, after a step whose gradients
# were exact zeros: a million times OPTIM_F64_RTOL, so every bound must be finite to catch it.
# (A zero-gradient step used to leave the square root's growth, and so the parameter's bound,
# infinite for good: "0 / 0" of an exact zero second moment.)
PLANTED_ERROR = 1e-6
ADAM = dict(lr=0.1, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False, maximize=False)
RMSPROP = dict(lr=0.01, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False, maximize=False)
# (kind, hyper-parameters, the steps before the planted one: gradients of "zeros" or "random" ones, or
# "zero_grad" of the ones before)
PLANTED = [
    ("Adam", {**ADAM, "decoupled_weight_decay": False}, ["zeros"]),
    ("Adam", {**ADAM, "amsgrad": True, "weight_decay": 0.01, "decoupled_weight_decay": True}, ["zeros"]),
    ("Adam", {**ADAM, "betas": (0.9, 0.0), "decoupled_weight_decay": False}, ["random", "zeros"]),  # v forgets
    ("AdamW", {**ADAM, "weight_decay": 0.01}, ["zeros", "zeros"]),
    ("RMSprop", RMSPROP, ["zeros"]),
    ("RMSprop", {**RMSPROP, "alpha": 0.0, "momentum": 0.9}, ["random", "zero_grad"]),  # square_avg forgets
    ("RMSprop", {**RMSPROP, "alpha": 1.0, "centered": True, "eps": 1e-2}, ["random"]),  # averages stay 0
    ("Adagrad", dict(lr=0.1, lr_decay=0.0, weight_decay=0.0, initial_accumulator_value=0.0, eps=1e-10,
                     maximize=False), ["zeros"]),
]


def _planted_case(hyper: dict, before: list[str]) -> dict:
    rng = np.random.default_rng(15)
    shape = (3,)
    steps = [("zero_grad" if how == "zero_grad" else "grads",
              [np.zeros(shape) if how != "random" else rng.uniform(-2.0, 2.0, shape)]) for how in before]
    steps.append(("grads", [rng.uniform(-2.0, 2.0, shape)]))
    return dict(dtype=np.float64, params=[rng.standard_normal(shape)], groups=[hyper], steps=steps,
                torch_to_ours=len(steps), ours_to_torch=len(steps))


@pytest.mark.parametrize(("kind", "hyper", "before"), PLANTED, ids=lambda value: str(value))
def test_an_error_planted_after_zero_gradients_is_caught(monkeypatch, kind, hyper, before):
    case = _planted_case(hyper, before)
    check_against_torch(kind, case)  # the honest run passes
    honest_step, calls = getattr(optim, kind).step, []

    def planted_step(self, closure=None):
        loss = honest_step(self, closure)
        calls.append(self)
        if len(calls) == len(case["steps"]):
            for group in self.param_groups:
                for param in group["params"]:
                    param.data *= 1 + PLANTED_ERROR
        return loss

    monkeypatch.setattr(getattr(optim, kind), "step", planted_step)
    with pytest.raises(AssertionError, match=f"step {len(before)} param 0: "):
        check_against_torch(kind, case)
