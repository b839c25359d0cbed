"""Properties: linear, activations, flatten, Identity/Lambda and the losses against torch autograd.

Every example draws shapes, values (negatives, exact zeros, ties, large magnitudes), dtypes,
hyper-parameters and a random upstream gradient, then compares the functional forward and
backward, and the module's, with torch on the reference device (see ``tests/strategies.py``).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given
from hypothesis import strategies as st

import tinynn
import tinynn.nn as nn
import tinynn.nn.functional as F
from tests.strategies import (
    SPECIAL_STYLES,
    arrays,
    assert_matches,
    assert_module_steps_match_torch,
    dtypes,
    grads,
    layouts,
    magnitude,
    one_torch_thread,  # noqa: F401 - an autouse fixture
    reference_device,
    relayout,
    sizes,
    to_torch,
    torch_autograd,
)
from tinynn.testing.compare import assert_close

# torch's Linear(0, n) init warns that it does nothing; the drawn weights are loaded afterwards anyway.
pytestmark = pytest.mark.filterwarnings("ignore:Initializing zero-element tensors is a no-op")

TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def _load(module: nn.Module, torch_module: torch.nn.Module, state: dict[str, np.ndarray]) -> None:
    """Give the tinynn module and the torch module the same drawn parameter values."""
    module.load_state_dict(state)
    torch_module.load_state_dict({name: to_torch(value) for name, value in state.items()})


# ---------------------------------------------------------------------------------------- linear
@st.composite
def linear_cases(draw: st.DrawFn) -> dict:
    dtype = draw(dtypes)
    leading = draw(sizes(max_ndim=2, max_side=3))
    in_features, out_features = draw(st.integers(0, 5)), draw(st.integers(0, 4))
    has_bias = draw(st.booleans())
    return dict(
        dtype=dtype, x=relayout(draw(arrays((*leading, in_features), dtype)), draw(layouts)),
        weight=draw(arrays((out_features, in_features), dtype)),
        bias=draw(arrays((out_features,), dtype)) if has_bias else None,
        grad_output=draw(grads((*leading, out_features), dtype)),
    )


@given(case=linear_cases())
def test_linear_functional_matches_torch(case):
    x, weight, bias, grad_output = case["x"], case["weight"], case["bias"], case["grad_output"]
    expected, (grad_x, grad_w, grad_b) = torch_autograd(TF.linear, [x, weight, bias], grad_output)
    assert_matches(F.linear(x, weight, bias), expected, "output", magnitude(x, weight) + magnitude(bias))
    grad_input, grad_weight, grad_bias = F.linear_backward(grad_output, x, weight, has_bias=bias is not None)
    assert_matches(grad_input, grad_x, "grad_input", magnitude(grad_output, weight))
    assert_matches(grad_weight, grad_w, "grad_weight", magnitude(grad_output, x))
    if bias is None:
        assert grad_bias is None
    else:
        assert_matches(grad_bias, grad_b, "grad_bias", magnitude(grad_output))


@given(first=linear_cases(), second_seed=st.integers(0, 2**32 - 1))
def test_linear_module_matches_torch_and_accumulates_grads(first, second_seed):
    dtype, weight, bias = first["dtype"], first["weight"], first["bias"]
    out_features, in_features = weight.shape
    module = nn.Linear(in_features, out_features, bias=bias is not None, dtype=dtype)
    torch_module = torch.nn.Linear(in_features, out_features, bias=bias is not None, dtype=TORCH_DTYPE[dtype],
                                   device=reference_device())
    _load(module, torch_module, {"weight": weight} | ({} if bias is None else {"bias": bias}))
    rng = np.random.default_rng(second_seed)
    second_x = rng.standard_normal(first["x"].shape).astype(dtype)
    second_grad = rng.uniform(-2, 2, first["grad_output"].shape).astype(dtype)
    # Three backwards without zero_grad: parameter grads add up in both libraries, also from the
    # last one, which skips the input gradient (as for a first layer).
    steps = [(first["x"], True), (second_x, True), (second_x, False)]
    upstream = [first["grad_output"], second_grad, first["grad_output"]]
    assert_module_steps_match_torch(module, torch_module, steps, weight, bias, lambda step, _: upstream[step])


# ---------------------------------------------------------------------------------------- activations
@st.composite
def any_arrays(draw: st.DrawFn, max_ndim: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """An input of any shape (0-d and empty included, +-inf and NaN among the values) and an upstream
    gradient of the same shape."""
    dtype = draw(dtypes)
    shape = draw(sizes(max_ndim=max_ndim))
    return relayout(draw(arrays(shape, dtype, SPECIAL_STYLES)), draw(layouts)), draw(grads(shape, dtype))


def dims(ndim: int) -> st.SearchStrategy:
    """A valid dim for an ndim-array, negatives included (a 0-d array takes 0 or -1, as in torch)."""
    return st.integers(-max(ndim, 1), max(ndim, 1) - 1)


@given(case=any_arrays(), inplace=st.booleans(), implementation=st.sampled_from(["engine", "textbook"]))
def test_relu_functional_and_module_match_torch(case, inplace, implementation):
    with tinynn.textbook(implementation == "textbook"):
        _check_relu(case, inplace)


def _check_relu(case: tuple[np.ndarray, np.ndarray], inplace: bool) -> None:
    x, grad_output = case
    expected, (grad_x,) = torch_autograd(TF.relu, [x], grad_output)
    output = F.relu(x)
    assert_matches(output, expected, "output")
    assert_matches(F.relu_backward(grad_output, output), grad_x, "grad_input")
    module = nn.ReLU(inplace=inplace)
    x_copy = x.copy()
    assert_matches(module(x_copy), expected, "module output")
    assert_matches(module.backward(grad_output), grad_x, "module grad_input")
    if inplace:
        assert_matches(x_copy, expected, "input overwritten in place")


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(case=any_arrays(), data=st.data())
def test_softmax_family_functional_and_module_match_torch(name, case, data):
    x, grad_output = case
    dim = data.draw(dims(x.ndim), label="dim")
    torch_fn = getattr(TF, name)
    expected, (grad_x,) = torch_autograd(lambda t: torch_fn(t, dim), [x], grad_output)
    output = getattr(F, name)(x, dim)
    assert_matches(output, expected, "output")
    # dX = y * (dY - sum(dY * y)) or dY - softmax * sum(dY): terms up to |dY| (times the dim's length)
    length = x.shape[dim] if x.ndim and name == "log_softmax" else 1
    terms = float(np.abs(grad_output).max(initial=0.0)) * length
    assert_matches(getattr(F, f"{name}_backward")(grad_output, output, dim), grad_x, "grad_input", terms)
    module = {"softmax": nn.Softmax, "log_softmax": nn.LogSoftmax}[name](dim)
    assert_matches(module(x), expected, "module output")
    assert_matches(module.backward(grad_output), grad_x, "module grad_input", terms)
    # dtype= casts the input first, as torch's does.
    other = np.float32 if x.dtype == np.float64 else np.float64
    assert_matches(getattr(F, name)(x, dim, dtype=other), torch_fn(to_torch(x), dim, dtype=TORCH_DTYPE[other]),
                   "output with dtype=")


# ---------------------------------------------------------------------------------------- reshapes
def _torch_error(fn):
    """The exception type torch raises for ``fn()`` (None when it does not)."""
    try:
        fn()
    except (IndexError, RuntimeError) as error:
        return type(error)
    return None


@given(case=any_arrays(), data=st.data())
def test_flatten_functional_and_module_match_torch_including_errors(case, data):
    x, _ = case
    out_of_range = st.sampled_from([-max(x.ndim, 1) - 1, max(x.ndim, 1)])
    start = data.draw(dims(x.ndim) | out_of_range, label="start_dim")
    end = data.draw(dims(x.ndim) | out_of_range, label="end_dim")
    error = _torch_error(lambda: torch.flatten(to_torch(x), start, end))
    if error is not None:  # a dim out of range (IndexError), or start_dim after end_dim (RuntimeError)
        with pytest.raises(error):
            F.flatten(x, start, end)
        with pytest.raises(error):
            nn.Flatten(start, end)(x)
        return
    output = F.flatten(x, start, end)
    grad_output = data.draw(grads(output.shape, x.dtype), label="grad_output")
    expected, (grad_x,) = torch_autograd(lambda t: torch.flatten(t, start, end), [x], grad_output)
    assert_matches(output, expected, "output")
    module = nn.Flatten(start, end)
    assert_matches(module(x), expected, "module output")
    assert_matches(module.backward(grad_output), grad_x, "module grad_input")


@given(case=any_arrays(), data=st.data())
def test_identity_and_lambda_reshape_match_torch(case, data):
    x, grad_output = case
    identity = nn.Identity(3, unused=True)
    assert identity(x) is x
    assert identity.backward(grad_output) is grad_output
    # A reshape to a drawn shape with the same number of elements: one -1 side when it is unambiguous.
    factors = data.draw(st.permutations([*x.shape, 1]), label="new shape")
    if x.size:
        factors[data.draw(st.integers(0, len(factors) - 1), label="inferred side")] = -1
    expected, _ = torch_autograd(lambda t: t.reshape(factors), [x], None, differentiable=[False])
    module = nn.Lambda(lambda v: v.reshape(factors))
    output = module(x)
    assert_matches(output, expected, "Lambda output")
    upstream = data.draw(grads(output.shape, x.dtype), label="grad_output")
    _, (grad_x,) = torch_autograd(lambda t: t.reshape(factors), [x], upstream)
    assert_matches(module.backward(upstream), grad_x, "Lambda grad_input")


# ---------------------------------------------------------------------------------------- losses
@st.composite
def loss_cases(draw: st.DrawFn, probability_targets: bool = False) -> dict:
    """Input layouts (C,), (N, C), (N, C, d1[, d2]); targets with ignored entries; weights with zeros."""
    dtype = draw(dtypes)
    n_classes = draw(st.integers(1, 5))
    layout = draw(st.sampled_from(["unbatched", "batched", "spatial"]))
    if layout == "unbatched":
        sample_shape = ()
    elif layout == "batched":
        sample_shape = (draw(st.integers(0, 5)),)
    else:
        sample_shape = (draw(st.integers(0, 3)), *draw(sizes(min_ndim=1, max_ndim=2, max_side=3)))
    input_shape = (n_classes,) if layout == "unbatched" else (sample_shape[0], n_classes, *sample_shape[1:])
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    ignore_choices = [-100, -1] if probability_targets else [-100, -1, *range(n_classes)]
    ignore_index = draw(st.sampled_from(ignore_choices))
    if probability_targets:
        # Not drawn like x: a target equal to softmax(x) makes the exact gradient 0, leaving only
        # rounding noise to compare. Proper distributions half the time; torch accepts any values.
        target = rng.uniform(-1.0, 2.0, size=input_shape)
        if draw(st.booleans()):
            target = np.abs(target) / np.maximum(np.abs(target).sum(axis=1 if len(input_shape) > 1 else 0,
                                                                   keepdims=True), 1e-3)
        target = target.astype(dtype)
    weight = None
    if draw(st.booleans()):
        weight = np.abs(draw(arrays((n_classes,), dtype)))  # exact zeros included: a zero total weight
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    label_smoothing = draw(st.sampled_from([0.0, 0.0, 0.1, 1.0]) | st.floats(0.0, 1.0))
    if not probability_targets:
        target = rng.integers(0, n_classes, size=sample_shape)
        target[rng.random(sample_shape) < draw(st.sampled_from([0.0, 0.3, 1.0]))] = ignore_index
        # torch takes Byte class indices too, though not for spatial inputs (nor, a torch limitation,
        # with smoothing and weights), and Byte holds no negative ignore_index.
        byte = (layout != "spatial" and target.min(initial=0) >= 0 and not (label_smoothing and weight is not None)
                and draw(st.booleans()))
        target = np.asarray(target, dtype=np.uint8 if byte else np.int64)
    return dict(
        x=draw(arrays(input_shape, dtype)), target=target, weight=weight, ignore_index=ignore_index,
        reduction=reduction, label_smoothing=label_smoothing,
        grad_output=draw(grads(sample_shape if reduction == "none" else (), dtype)),
    )


def _torch_loss(fn, case: dict, **extra):
    kwargs = dict(ignore_index=case["ignore_index"], reduction=case["reduction"], **extra)
    # torch's own devices disagree on one case, and tinynn follows the CPU (see the test below).
    device = torch.device("cpu") if _unbatched_mean_of_ignored_target(case) else None
    return torch_autograd(lambda x, target, weight: fn(x, target, weight, **kwargs),
                          [case["x"], case["target"], case["weight"]], case["grad_output"],
                          differentiable=[True, False, False], device=device)


def _unbatched_mean_of_ignored_target(case: dict) -> bool:
    return (case["x"].ndim == 1 and case["reduction"] == "mean"
            and not np.issubdtype(case["target"].dtype, np.floating) and case["target"] == case["ignore_index"])


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
def test_torch_cuda_gives_0_where_cpu_and_tinynn_give_nan_for_unbatched_mean_of_an_ignored_target():
    # A mean over no kept targets is NaN (torch's docs, and pytorch#64572), which torch's CPU kernel
    # and its CUDA kernels for batched and spatial inputs return. The CUDA kernel for an unbatched
    # (C,) input writes 0 instead (nll_loss_forward_reduce_cuda_kernel_1d in Loss.cu). If this test
    # starts failing, torch has made its devices agree and _torch_loss can drop its CPU detour.
    x, target = np.array([0.5, -1.0, 2.0]), np.array(1)
    args = dict(ignore_index=1, reduction="mean")
    assert float(TF.nll_loss(torch.from_numpy(x).cuda(), torch.from_numpy(target).cuda(), **args)) == 0.0
    assert np.isnan(float(TF.nll_loss(torch.from_numpy(x), torch.from_numpy(target), **args)))
    assert np.isnan(F.nll_loss(x, target, **args))


@given(case=loss_cases())
def test_nll_loss_functional_and_module_match_torch(case):
    x, target, weight, grad_output = case["x"], case["target"], case["weight"], case["grad_output"]
    kwargs = dict(ignore_index=case["ignore_index"], reduction=case["reduction"])
    expected, (grad_x, _, _) = _torch_loss(TF.nll_loss, case)
    loss_terms = _loss_terms(case, x)[0]
    assert_matches(F.nll_loss(x, target, weight, **kwargs), expected, "loss", loss_terms)
    assert_matches(F.nll_loss_backward(grad_output, x, target, weight, **kwargs), grad_x, "grad_input")
    module = nn.NLLLoss(weight, **kwargs)
    assert_matches(module(x, target), expected, "module loss", loss_terms)
    assert_matches(module.backward(grad_output), grad_x, "module grad_input")


@pytest.mark.parametrize("probability_targets", [False, True], ids=["class-indices", "probabilities"])
@given(data=st.data())
def test_cross_entropy_functional_and_module_match_torch(probability_targets, data):
    case = data.draw(loss_cases(probability_targets), label="case")
    x, target, weight, grad_output = case["x"], case["target"], case["weight"], case["grad_output"]
    kwargs = dict(ignore_index=case["ignore_index"], reduction=case["reduction"],
                  label_smoothing=case["label_smoothing"])
    expected, (grad_x, _, _) = _torch_loss(TF.cross_entropy, case, label_smoothing=case["label_smoothing"])
    log_probs = TF.log_softmax(to_torch(x), 1 if x.ndim > 1 else 0)
    loss_terms, grad_terms = _loss_terms(case, log_probs, probability_targets)
    assert_matches(F.cross_entropy(x, target, weight, **kwargs), expected, "loss", loss_terms)
    grad_input = F.cross_entropy_backward(grad_output, x, target, weight, **kwargs)
    assert_matches(grad_input, grad_x, "grad_input", grad_terms)
    module = nn.CrossEntropyLoss(weight, **kwargs)
    assert_matches(module(x, target), expected, "module loss", loss_terms)
    assert_matches(module.backward(grad_output), grad_x, "module grad_input", grad_terms)


def _loss_terms(case: dict, log_probs, probability_targets: bool = False) -> tuple[float, float]:
    """Sizes of the terms that the loss and dL/dinput sum (see ``assert_matches``).

    loss = sum of -w * t * log_prob over samples and classes, / denominator for 'mean';
    dX = G - softmax * sum_c(G) with |G| <= |upstream| * |w| * |t| / denominator.
    """
    x, target, weight = case["x"], case["target"], case["weight"]
    n_classes = x.shape[1 if x.ndim > 1 else 0]
    if case["reduction"] != "mean":
        denominator = 1.0
    elif probability_targets:
        denominator = x.size // n_classes
    else:
        kept = target[target != case["ignore_index"]].astype(np.int64)
        denominator = float(weight[kept].sum()) if weight is not None else kept.size
    if not denominator:  # nothing kept or all weights 0: NaN or nothing to compare, no scale needed
        return 0.0, 0.0
    per_term = (1.0 if weight is None else magnitude(weight)) / denominator
    if probability_targets:
        per_term *= max(1.0, magnitude(target))
    return per_term * magnitude(log_probs), (n_classes + 1) * per_term * magnitude(case["grad_output"])


# ---------------------------------------------------------------------------------------- the comparison
def test_assert_close_takes_equal_infinities_silently_and_names_nan_mismatches_by_int_index():
    # Both met by the properties above: max-pooling windows of +-inf, and NaN gradients from torch.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert assert_close(np.array([np.inf, -np.inf, 1.0]), np.array([np.inf, -np.inf, 1.0]), rtol=0.0) == 0.0
    with pytest.raises(AssertionError, match=r"NaN mismatch at index \(1,\): 1.0 vs expected nan"):
        assert_close(np.array([0.0, 1.0]), np.array([0.0, np.nan]), rtol=0.0)
