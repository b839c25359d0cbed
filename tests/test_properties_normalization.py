"""Properties: batch_norm, layer_norm, group_norm and their modules against torch autograd.

Every example draws shapes, values, dtypes, hyper-parameters (eps, momentum including None,
affine, bias, track_running_stats, elementwise_affine), memory layouts, the implementation
(engine or textbook) and a random upstream gradient: never a plain sum, under which batch
norm's input gradient is zero and a wrong backward would pass. torch runs on the reference
device (see ``tests/strategies.py``).

Tolerances: each result is held to TORCH_F64/TORCH_F32 relative to the size of the terms it sums
(``assert_matches``'s ``terms``), worked out by ``_terms`` below from the drawn values: a
normalised value is (x - mean) * invstd, so its rounding follows |x| * invstd, not |xhat|.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

import tinynn
import tinynn.nn as nn
import tinynn.nn.functional as F
from tests.strategies import (
    arrays,
    assert_matches,
    dtypes,
    grads,
    layouts,
    magnitude,
    one_torch_thread,  # noqa: F401 - an autouse fixture
    reference_device,
    relayout,
    to_torch,
    torch_autograd,
)

TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
EPS = st.sampled_from([1e-5, 1e-3, 0.1, 1.0])
implementations = st.sampled_from(["engine", "textbook"])


def _terms(x: np.ndarray, grad_output: np.ndarray, axes: tuple[int, ...], eps: float, weight: np.ndarray | None,
           bias: np.ndarray | None, stats: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, float]:
    """The size of the terms behind each result, from float64 statistics over ``axes`` (or ``stats``,
    the running mean and var, broadcastable to x). ``output``: (x - mean) * invstd * gamma + beta;
    ``grad_input``: dY * gamma * invstd times (n dXhat - sum - xhat * sum(dXhat xhat)) / n, whose
    three parts are at most 1, 1 and max|xhat|**2; ``grad_weight``: sum(dY * xhat)."""
    x64 = np.asarray(x, dtype=np.float64)
    if x64.size == 0:
        return dict(output=0.0, grad_input=0.0, grad_weight=0.0, grad_bias=0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, var = stats if stats is not None else (x64.mean(axes, keepdims=True), x64.var(axes, keepdims=True))
        invstd = float(np.max(1 / np.sqrt(np.asarray(var, dtype=np.float64) + eps), initial=0.0))
    spread = float(np.max(np.abs(x64), initial=0.0)) + float(np.max(np.abs(mean), initial=0.0))
    xhat = spread * invstd
    gamma = 1.0 if weight is None else magnitude(weight)
    dy = magnitude(grad_output)
    return dict(output=xhat * gamma + (0.0 if bias is None else magnitude(bias)),
                grad_input=dy * gamma * invstd * (2 + xhat**2), grad_weight=dy * xhat, grad_bias=dy)


def _assert_grads(mine: tuple, theirs: list, terms: dict[str, float], names=("grad_input", "grad_weight", "grad_bias")):
    for name, grad, expected in zip(names, mine, theirs):
        if expected is None:
            assert grad is None, f"{name}: torch has none"
        else:
            assert_matches(grad, expected, name, terms[name])


# ---------------------------------------------------------------------------------------- batch norm
@st.composite
def batch_norm_cases(draw: st.DrawFn, min_batch: int = 0) -> dict:
    dtype = draw(dtypes)
    ndim = draw(st.sampled_from([2, 3, 4]))
    channels = draw(st.integers(1, 4))
    shape = (draw(st.integers(min_batch, 4)), channels, *(draw(st.integers(1, 3)) for _ in range(ndim - 2)))
    training = draw(st.booleans())
    values_per_channel = math.prod(shape) // channels
    assume(not training or values_per_channel != 1)  # torch refuses one value per channel when training
    with_running = not training or draw(st.booleans())
    optional = lambda: draw(arrays((channels,), dtype)) if draw(st.booleans()) else None  # noqa: E731
    return dict(
        dtype=dtype, training=training, x=relayout(draw(arrays(shape, dtype)), draw(layouts)),
        grad_output=draw(grads(shape, dtype)), weight=optional(), bias=optional(),
        running_mean=draw(arrays((channels,), dtype)) if with_running else None,
        running_var=np.abs(draw(arrays((channels,), dtype))) + dtype(0.5) if with_running else None,
        momentum=draw(st.sampled_from([0.1, 0.0, 1.0]) | st.floats(0.0, 1.0)),
        eps=draw(EPS if training else EPS | st.just(0.0)),
    )


def _copy(array: np.ndarray | None) -> np.ndarray | None:
    return None if array is None else array.copy()


@given(case=batch_norm_cases(), implementation=implementations)
def test_batch_norm_functional_matches_torch(case, implementation):
    x, grad_output, weight, bias = case["x"], case["grad_output"], case["weight"], case["bias"]
    training, momentum, eps = case["training"], case["momentum"], case["eps"]
    stats = [to_torch(case[name]) if case[name] is not None else None for name in ("running_mean", "running_var")]
    expected, (grad_x, grad_w, grad_b) = torch_autograd(
        lambda t, w, b: TF.batch_norm(t, *stats, w, b, training, momentum, eps), [x, weight, bias], grad_output)
    axes = (0, *range(2, x.ndim))
    running = None if case["running_mean"] is None else (case["running_mean"].reshape(1, -1, *[1] * (x.ndim - 2)),
                                                         case["running_var"].reshape(1, -1, *[1] * (x.ndim - 2)))
    terms = _terms(x, grad_output, axes, eps, weight, bias, None if training else running)
    running_mean, running_var = _copy(case["running_mean"]), _copy(case["running_var"])
    with tinynn.textbook(implementation == "textbook"):
        output = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
        assert_matches(output, expected, "output", terms["output"])
        if running_mean is not None:  # updated in place when training, untouched otherwise
            spread = magnitude(x) ** 2 * 2
            assert_matches(running_mean, stats[0], "running_mean", magnitude(x) + magnitude(case["running_mean"]))
            assert_matches(running_var, stats[1], "running_var", spread + magnitude(case["running_var"]))
        mine = F.batch_norm_backward(grad_output, x, case["running_mean"], case["running_var"], weight, training, eps,
                                     has_bias=bias is not None)
    _assert_grads(mine, [grad_x, grad_w, grad_b], terms)


MODULES = {"1d": (nn.BatchNorm1d, torch.nn.BatchNorm1d, (2, 3)), "2d": (nn.BatchNorm2d, torch.nn.BatchNorm2d, (4,))}


@st.composite
def batch_norm_module_cases(draw: st.DrawFn) -> dict:
    kind = draw(st.sampled_from(sorted(MODULES)))
    dtype = draw(dtypes)
    channels = draw(st.integers(1, 4))
    ndim = draw(st.sampled_from(MODULES[kind][2]))
    config = dict(eps=draw(EPS), momentum=draw(st.none() | st.sampled_from([0.1, 1.0]) | st.floats(0.0, 1.0)),
                  affine=draw(st.booleans()), track_running_stats=draw(st.booleans()), bias=draw(st.booleans()))
    steps = []  # (training, x, grad_output, needs_input_grad); a batch of 2 or more: batch stats in eval too
    for training in [True] * draw(st.integers(1, 3)) + [False] * draw(st.integers(1, 2)):
        shape = (draw(st.integers(2, 4)), channels, *(draw(st.integers(1, 3)) for _ in range(ndim - 2)))
        steps.append((training, relayout(draw(arrays(shape, dtype)), draw(layouts)), draw(grads(shape, dtype)),
                      draw(st.booleans())))
    return dict(kind=kind, dtype=dtype, channels=channels, config=config, steps=steps,
                weight=draw(arrays((channels,), dtype)), bias=draw(arrays((channels,), dtype)))


@given(case=batch_norm_module_cases(), implementation=implementations)
def test_batch_norm_module_trains_then_evaluates_like_torch(case, implementation):
    ours, theirs, _ = MODULES[case["kind"]]
    dtype, channels, config = case["dtype"], case["channels"], case["config"]
    module = ours(channels, dtype=dtype, **config)
    reference = theirs(channels, dtype=TORCH_DTYPE[dtype], device=reference_device(), **config)
    state = {name: case[name] for name, _ in reference.named_parameters()}
    module.load_state_dict(state, strict=False)
    reference.load_state_dict({name: to_torch(value) for name, value in state.items()}, strict=False)
    weight = None if module.weight is None else module.weight.data
    bias = None if module.bias is None else module.bias.data
    grad_terms = dict(grad_weight=0.0, grad_bias=0.0)
    for step, (training, x, grad_output, needs_input_grad) in enumerate(case["steps"]):
        module.train(training), reference.train(training)
        running = None
        if not training and module.running_mean is not None:
            shape = (1, -1, *[1] * (x.ndim - 2))
            running = (module.running_mean.reshape(shape), module.running_var.reshape(shape))
        terms = _terms(x, grad_output, (0, *range(2, x.ndim)), config["eps"], weight, bias, running)
        x_t = to_torch(x, requires_grad=needs_input_grad)
        output_t = reference(x_t)
        if output_t.requires_grad:  # not when nothing needs a gradient (no input grad, affine=False)
            output_t.backward(to_torch(grad_output))
        with tinynn.textbook(implementation == "textbook"):
            output = module(x)
            grad_input = module.backward(grad_output, needs_input_grad=needs_input_grad)
        assert_matches(output, output_t, f"output {step}", terms["output"])
        if needs_input_grad:
            assert_matches(grad_input, x_t.grad, f"grad_input {step}", terms["grad_input"])
        else:
            assert grad_input is None
        for name, value in reference.named_buffers():
            assert np.shape(module.state_dict()[name]) == tuple(value.shape)
            size = magnitude(x) ** 2 * 2 + 1 if name == "running_var" else magnitude(x) + 1
            assert_matches(getattr(module, name), value, f"{name} after step {step}", size)
        for name in grad_terms:
            grad_terms[name] += terms[name]
    for name, param in reference.named_parameters():
        assert_matches(getattr(module, name).grad, param.grad, f"{name}.grad", grad_terms[f"grad_{name}"])


# ---------------------------------------------------------------------------------------- layer norm
@st.composite
def layer_norm_cases(draw: st.DrawFn) -> dict:
    dtype = draw(dtypes)
    normalized_shape = tuple(draw(st.lists(st.integers(0, 4), min_size=1, max_size=2)))
    shape = (*draw(st.lists(st.integers(0, 3), max_size=2)), *normalized_shape)
    optional = lambda: draw(arrays(normalized_shape, dtype)) if draw(st.booleans()) else None  # noqa: E731
    as_given = draw(st.sampled_from(["tuple", "list", "int"])) if len(normalized_shape) == 1 else "tuple"
    return dict(x=relayout(draw(arrays(shape, dtype)), draw(layouts)), grad_output=draw(grads(shape, dtype)),
                normalized_shape=normalized_shape[0] if as_given == "int" else
                list(normalized_shape) if as_given == "list" else normalized_shape,
                weight=optional(), bias=optional(), eps=draw(EPS))


@given(case=layer_norm_cases(), second_seed=st.integers(0, 2**32 - 1))
def test_layer_norm_functional_and_module_match_torch(case, second_seed):
    x, grad_output, weight, bias, eps = case["x"], case["grad_output"], case["weight"], case["bias"], case["eps"]
    normalized_shape = case["normalized_shape"]
    ndim = 1 if isinstance(normalized_shape, int) else len(normalized_shape)
    as_list = [normalized_shape] if ndim == 1 and isinstance(normalized_shape, int) else normalized_shape  # torch's F
    expected, grads_t = torch_autograd(lambda t, w, b: TF.layer_norm(t, as_list, w, b, eps),
                                       [x, weight, bias], grad_output)
    terms = _terms(x, grad_output, tuple(range(x.ndim - ndim, x.ndim)), eps, weight, bias)
    assert_matches(F.layer_norm(x, normalized_shape, weight, bias, eps), expected, "output", terms["output"])
    mine = F.layer_norm_backward(grad_output, x, normalized_shape, weight, eps, has_bias=bias is not None)
    _assert_grads(mine, grads_t, terms)
    # The module, twice without zero_grad: its weight and bias grads add up as torch's do.
    affine = weight is not None
    module = nn.LayerNorm(normalized_shape, eps, affine, bias=bias is not None, dtype=x.dtype)
    reference = torch.nn.LayerNorm(normalized_shape, eps, affine, bias=bias is not None,
                                   dtype=TORCH_DTYPE[x.dtype.type], device=reference_device())
    if affine:
        state = {"weight": weight} | ({} if bias is None else {"bias": bias})
        module.load_state_dict(state)
        reference.load_state_dict({name: to_torch(value) for name, value in state.items()})
    second = np.random.default_rng(second_seed).standard_normal(x.shape).astype(x.dtype)
    axes, grad_terms = tuple(range(x.ndim - ndim, x.ndim)), dict(grad_weight=0.0, grad_bias=0.0)
    for step, value in enumerate([x, second]):
        step_terms = _terms(value, grad_output, axes, eps, weight, bias)
        x_t = to_torch(value, requires_grad=True)
        output_t = reference(x_t)
        output_t.backward(to_torch(grad_output))
        assert_matches(module(value), output_t, f"module output {step}", step_terms["output"])
        assert_matches(module.backward(grad_output), x_t.grad, f"module grad_input {step}", step_terms["grad_input"])
        for name in grad_terms:
            grad_terms[name] += step_terms[name]
    for name, param in reference.named_parameters():
        assert_matches(getattr(module, name).grad, param.grad, f"{name}.grad", grad_terms[f"grad_{name}"])


# ---------------------------------------------------------------------------------------- group norm
@st.composite
def group_norm_cases(draw: st.DrawFn) -> dict:
    dtype = draw(dtypes)
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 3))
    # No empty input: with a zero-length spatial side torch's weight gradient is NaN (its formula
    # multiplies an empty group's 0/0 mean into the sum) where tinynn's sum over nothing is 0.
    shape = (draw(st.integers(1, 3)), channels, *draw(st.lists(st.integers(1, 3), max_size=2)))
    assume(shape[0] * channels // groups * math.prod(shape[2:]) != 1)  # torch's "more than 1 value" rule
    optional = lambda: draw(arrays((channels,), dtype)) if draw(st.booleans()) else None  # noqa: E731
    return dict(x=relayout(draw(arrays(shape, dtype)), draw(layouts)), grad_output=draw(grads(shape, dtype)),
                groups=groups, weight=optional(), bias=optional(), eps=draw(EPS))


@given(case=group_norm_cases())
def test_group_norm_functional_and_module_match_torch(case):
    x, grad_output, weight, bias, eps, groups = (case[name] for name in
                                                  ("x", "grad_output", "weight", "bias", "eps", "groups"))
    # torch 2.13's group_norm backward fails with a bias and no weight ("tensor does not have a
    # device"): torch then gets a weight of ones, whose gradient is left out.
    ones = np.ones(x.shape[1], x.dtype) if weight is None and bias is not None else None
    expected, grads_t = torch_autograd(lambda t, w, b: TF.group_norm(t, groups, w, b, eps),
                                       [x, weight if ones is None else ones, bias], grad_output)
    grads_t[1] = None if weight is None else grads_t[1]
    terms = _terms(x.reshape(x.shape[0], groups, -1), grad_output, (2,), eps, weight, bias)
    assert_matches(F.group_norm(x, groups, weight, bias, eps), expected, "output", terms["output"])
    _assert_grads(F.group_norm_backward(grad_output, x, groups, weight, eps, has_bias=bias is not None), grads_t, terms)
    if weight is None and bias is not None:
        return  # a module has both or neither (affine)
    module = nn.GroupNorm(groups, x.shape[1], eps, weight is not None, bias=bias is not None, dtype=x.dtype)
    if weight is not None:
        module.load_state_dict({"weight": weight} | ({} if bias is None else {"bias": bias}))
    assert_matches(module(x), expected, "module output", terms["output"])
    _assert_grads((module.backward(grad_output), getattr(module.weight, "grad", None),
                   getattr(module.bias, "grad", None)), grads_t, terms)
