"""The elementwise activations beyond relu: defaults and repr as torch's, errors, the gradient at each
kink, large |x| without warnings, NaN and inf, in-place semantics, dtypes, and gelu's erf."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tinynn.nn as nn
import tinynn.nn.functional as F
from tests.helpers import assert_close, torch_tensor
from tinynn.nn._special import erf
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_RTOL

INF, NAN = np.inf, np.nan
MODULES = ["Sigmoid", "Tanh", "LeakyReLU", "ELU", "GELU", "SiLU", "Softplus", "Hardtanh"]

# name: (tinynn forward, tinynn backward from (dY, x, y), torch forward), hyper-parameters chosen so
# that each kink and each special value shows.
OPS = {
    "sigmoid": (F.sigmoid, lambda g, x, y: F.sigmoid_backward(g, y), torch.sigmoid),
    "tanh": (F.tanh, lambda g, x, y: F.tanh_backward(g, y), torch.tanh),
    "leaky_relu": (lambda x: F.leaky_relu(x, 0.2), lambda g, x, y: F.leaky_relu_backward(g, x, 0.2),
                   lambda t: TF.leaky_relu(t, 0.2)),
    "elu": (lambda x: F.elu(x, 1.5), lambda g, x, y: F.elu_backward(g, x, 1.5), lambda t: TF.elu(t, 1.5)),
    "gelu": (F.gelu, lambda g, x, y: F.gelu_backward(g, x), TF.gelu),
    "gelu_tanh": (lambda x: F.gelu(x, "tanh"), lambda g, x, y: F.gelu_backward(g, x, "tanh"),
                  lambda t: TF.gelu(t, approximate="tanh")),
    "silu": (F.silu, lambda g, x, y: F.silu_backward(g, x), TF.silu),
    "softplus": (lambda x: F.softplus(x, 2.0, 10.0), lambda g, x, y: F.softplus_backward(g, x, 2.0, 10.0),
                 lambda t: TF.softplus(t, 2.0, 10.0)),
    "hardtanh": (lambda x: F.hardtanh(x, -0.5, 2.0), lambda g, x, y: F.hardtanh_backward(g, y, -0.5, 2.0),
                 lambda t: TF.hardtanh(t, -0.5, 2.0)),
}
# Kinks (0, hardtanh's -0.5 and 2, softplus's threshold 10 / beta 2 = 5), both zeros, huge values
# (exp overflows past 709), infinities. NaN is separate: see test_gradient_at_nan_inputs.
SPECIAL_POINTS = np.array([0.0, -0.0, -0.5, 2.0, 5.0, 1e-300, -1e-300, 0.3, -0.7, 40.0, -40.0, 800.0, -800.0,
                           1e300, -1e300, INF, -INF])


def _torch_reference(torch_forward, x: np.ndarray, grad_output: np.ndarray):
    x_t = torch_tensor(x, True)
    output = torch_forward(x_t)
    output.backward(torch_tensor(grad_output))
    return output.detach().numpy(), x_t.grad.numpy()


@pytest.mark.parametrize("name", list(OPS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kinks_large_values_and_infinities_match_torch_without_warnings(name, dtype):
    forward, backward, torch_forward = OPS[name]
    x = (SPECIAL_POINTS if dtype == np.float64 else np.clip(SPECIAL_POINTS, -1e30, 1e30)).astype(dtype)
    x[-2:] = [INF, -INF]  # (clip kept them finite)
    grad_output = np.linspace(-1.5, 2.0, x.size).astype(dtype)
    expected, expected_grad = _torch_reference(torch_forward, x, grad_output)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow or invalid-value warnings at any magnitude
        output = forward(x.copy())
        grad_input = backward(grad_output, x, output)
    assert output.dtype == grad_input.dtype == dtype
    rtol, atol = (TORCH_F64_RTOL, 0.0) if dtype == np.float64 else (TORCH_F32_RTOL, TORCH_F32_ATOL)
    if name == "gelu" and dtype == np.float32:  # torch's vectorized float32 gelu(+inf) is NaN, its scalar one inf
        expected[x == INF] = INF
    assert_close(output, expected, rtol=rtol, atol=atol, name=f"{name} output")
    assert_close(grad_input, expected_grad, rtol=rtol, atol=atol, name=f"{name} grad")
    # The kinks exactly as torch (the same side of each), and the same signed zeros.
    if name in ("leaky_relu", "elu", "hardtanh"):
        np.testing.assert_array_equal(grad_input[:5], expected_grad[:5])
    expected_zeros = expected[:2]
    if name == "gelu" and dtype == np.float32:
        # torch's float32 erf-GELU gives gelu(-0) = +0 on an AVX2 EPYC and -0 on the AVX-512 Xeon where
        # this test first passed (its vector kernels differ): hold tinynn to torch's float64 answer,
        # -0 * Phi(-0) = -0, which is the same on both.
        zeros = x[:2].astype(np.float64)
        expected_zeros = _torch_reference(torch_forward, zeros, np.ones_like(zeros))[0]
    np.testing.assert_array_equal(np.signbit(output[:2]), np.signbit(expected_zeros))


def test_kink_conventions_spelled_out():
    g = np.array([3.0, 3.0, 3.0])
    slope = 3.0 * 0.1
    np.testing.assert_array_equal(F.leaky_relu_backward(g, np.array([0.0, -0.0, 1.0]), 0.1), [slope, slope, 3.0])
    np.testing.assert_array_equal(F.elu_backward(g, np.array([0.0, -0.0, 1.0]), 2.0), [6.0, 6.0, 3.0])
    # hardtanh: the gradient passes strictly inside (min_val, max_val) only.
    y = F.hardtanh(np.array([-1.0, 1.0, 0.999]))
    np.testing.assert_array_equal(F.hardtanh_backward(g, y), [0.0, 0.0, 3.0])
    # softplus: x itself where beta * x > threshold, strictly.
    assert F.softplus(np.array([10.0, 10.5]), 2.0, 20.0)[1] == 10.5
    assert F.softplus(np.array([10.0]), 2.0, 20.0)[0] != 10.0


def test_gradient_at_nan_inputs():
    # torch 2.13's CPU elu and hardtanh backward at a NaN input depend on the NaN's position (NaN or
    # 0 in the vectorized loop, dY in the scalar tail); tinynn gives the vectorized loop's answer.
    x, g = np.array([NAN]), np.array([2.0])
    assert np.isnan(F.elu_backward(g, x, 1.0)).all()
    assert np.isnan(F.elu_backward(g, F.elu(x), 1.0, is_result=True)).all()
    assert F.hardtanh_backward(g, F.hardtanh(x))[0] == 0.0
    # float32 gelu(+inf): torch's vectorized loop gives NaN, its scalar loop and float64 inf; tinynn inf.
    assert F.gelu(np.float32([INF]))[0] == INF and F.gelu(np.array([INF]))[0] == INF
    # The rest agree with torch wherever the NaN sits.
    for name in ["sigmoid", "tanh", "leaky_relu", "gelu", "gelu_tanh", "silu", "softplus"]:
        forward, backward, torch_forward = OPS[name]
        expected, expected_grad = _torch_reference(torch_forward, x, g)
        np.testing.assert_array_equal(forward(x), expected)
        np.testing.assert_array_equal(backward(g, x, forward(x)), expected_grad)


def test_sigmoid_and_silu_are_exact_limits_for_huge_inputs():
    x = np.array([-1000.0, 1000.0, -1e300])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(F.sigmoid(x), [0.0, 1.0, 0.0])
        np.testing.assert_array_equal(F.silu(x), [-0.0, 1000.0, -0.0])
        np.testing.assert_array_equal(F.softplus(np.array([1e300, -1e300])), [1e300, 0.0])
        np.testing.assert_array_equal(F.sigmoid(np.array([-100.0, 100.0], dtype=np.float32)), [0.0, 1.0])


@pytest.mark.parametrize("name", MODULES)
def test_module_defaults_and_repr_match_torch(name):
    assert repr(getattr(nn, name)()) == repr(getattr(torch.nn, name)())


@pytest.mark.parametrize(("name", "kwargs"), [
    ("LeakyReLU", dict(negative_slope=0.2, inplace=True)), ("LeakyReLU", dict(negative_slope=-1)),
    ("ELU", dict(alpha=0.5, inplace=True)), ("GELU", dict(approximate="tanh")), ("SiLU", dict(inplace=True)),
    ("Softplus", dict(beta=2, threshold=5.5)), ("Hardtanh", dict(min_val=-2, max_val=3, inplace=True)),
    ("Hardtanh", dict(min_val=0.0, max_val=6.0)),
])
def test_module_arguments_and_repr_match_torch(name, kwargs):
    module, torch_module = getattr(nn, name)(**kwargs), getattr(torch.nn, name)(**kwargs)
    assert repr(module) == repr(torch_module)
    for key in kwargs:
        assert getattr(module, key) == getattr(torch_module, key)


def test_errors_match_torch():
    with pytest.raises(RuntimeError, match=r"^approximate argument must be either none or tanh\.$"):
        F.gelu(np.ones(2), approximate="exact")
    with pytest.raises(RuntimeError, match="approximate argument"):
        F.gelu_backward(np.ones(2), np.ones(2), approximate="Tanh")
    module = nn.GELU("exact")  # as torch: accepted here, refused at forward
    assert repr(module) == "GELU(approximate='exact')"
    with pytest.raises(RuntimeError, match="approximate argument"):
        module(np.ones(2))
    with pytest.raises(ValueError, match=r"^min_val cannot be greater than max_val$"):
        F.hardtanh(np.ones(2), 2.0, 1.0)
    np.testing.assert_array_equal(F.hardtanh(np.array([0.0, 2.0]), 1.0, 1.0), [1.0, 1.0])  # F allows min == max
    with pytest.raises(AssertionError, match=r"max_val \(1.0\) must be greater than min_val \(1.0\)"):
        nn.Hardtanh(1.0, 1.0)


@pytest.mark.parametrize(("module_class", "torch_forward", "kwargs"), [
    (nn.LeakyReLU, TF.leaky_relu, dict(negative_slope=-0.5)), (nn.ELU, TF.elu, dict(alpha=-0.5)),
])
def test_inplace_backward_with_a_negative_slope_is_refused_like_torch(module_class, torch_forward, kwargs):
    x = np.array([-1.0, 0.5, 2.0])
    x_t = torch_tensor(x, True)
    with pytest.raises(RuntimeError) as torch_error:
        torch_forward(x_t.clone(), inplace=True, **kwargs).backward(torch.ones(3, dtype=torch.float64))
    module = module_class(inplace=True, **kwargs)
    module(x.copy())
    with pytest.raises(RuntimeError) as error:
        module.backward(np.ones(3))
    assert str(error.value) == str(torch_error.value)
    # Out of place, the input is kept and a negative slope is fine.
    out_of_place = module_class(**kwargs)
    out_of_place(x)
    torch_out = torch_forward(x_t, **kwargs)
    torch_out.backward(torch.ones(3, dtype=torch.float64))
    assert_close(out_of_place.backward(np.ones(3)), x_t.grad, rtol=TORCH_F64_RTOL, name="grad")


@pytest.mark.parametrize(("name", "kwargs"), [("LeakyReLU", dict(negative_slope=0.3)), ("ELU", dict(alpha=0.7)),
                                              ("SiLU", {}), ("Hardtanh", dict(min_val=-0.5, max_val=0.8))])
def test_inplace_modules_overwrite_their_input_and_backprop_like_torch(name, kwargs):
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.standard_normal(20), [0.0, -0.5, 0.8]])
    grad_output = rng.uniform(-2, 2, x.shape)
    x_t = torch_tensor(x, True)
    expected = getattr(torch.nn, name)(inplace=True, **kwargs)(x_t.clone())
    expected.backward(torch_tensor(grad_output))
    module = getattr(nn, name)(inplace=True, **kwargs)
    x_copy = x.copy()
    output = module(x_copy)
    assert output is x_copy  # written into the input, as torch's op_
    assert_close(x_copy, expected, rtol=TORCH_F64_RTOL, name="overwritten input")
    # The backward still sees the right values: the output (leaky_relu, elu, hardtanh) or a copy of
    # the input taken before it was overwritten (silu).
    assert_close(module.backward(grad_output), x_t.grad, rtol=TORCH_F64_RTOL, name="grad")
    # Out of place, the input is left alone.
    y = x.copy()
    getattr(nn, name)(**kwargs)(y)
    np.testing.assert_array_equal(y, x)


@pytest.mark.parametrize("name", MODULES)
def test_modules_keep_float32_skip_the_input_grad_and_need_a_forward(name):
    module = getattr(nn, name)()
    x = np.linspace(-3, 3, 12, dtype=np.float32).reshape(3, 4)
    assert module(x).dtype == np.float32
    assert module.backward(np.ones_like(x)).dtype == np.float32
    module(x)
    assert module.backward(np.ones_like(x), needs_input_grad=False) is None
    with pytest.raises(RuntimeError, match="run a forward first"):
        module.backward(np.ones_like(x))


def test_erf_matches_math_erf_to_a_few_ulps():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-7, 7, 20000), np.linspace(1.99, 2.01, 2001),
                        10.0 ** rng.uniform(-300, 0, 2000) * rng.choice([-1, 1], 2000), [0.0, -0.0, 5e-324, 1e300]])
    expected = np.array([math.erf(value) for value in x])
    # 16 ulps: measured 12 at worst over 900,000 points (tinynn/nn/_special.py); a wrong term, a
    # truncated series or a too-shallow fraction is off by far more.
    assert (np.abs(erf(x) - expected) <= 16 * np.spacing(np.abs(expected))).all()
    np.testing.assert_array_equal(erf(np.array([INF, -INF, 0.0, -0.0])), [1.0, -1.0, 0.0, -0.0])
    assert np.isnan(erf(np.array([NAN]))).all() and erf(np.float32([0.5])).dtype == np.float32
    assert erf(np.array(0.25)).shape == ()


def test_gelu_matches_torch_over_a_wide_range_in_float64():
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-10, 10, 100000), 10.0 ** rng.uniform(-300, 1, 10000) * rng.choice([-1, 1], 10000)])
    grad_output = rng.uniform(-2, 2, x.shape)
    expected, expected_grad = _torch_reference(TF.gelu, x, grad_output)
    assert_close(F.gelu(x), expected, rtol=TORCH_F64_RTOL, name="gelu")
    assert_close(F.gelu_backward(grad_output, x), expected_grad, rtol=TORCH_F64_RTOL, name="gelu grad")
    # Entry by entry: 1e-10 relative where gelu is not a cancelled tail (x >= -3); below that both
    # compute 1 + erf(x / sqrt 2) ~ 1e-3..0, right to about an ulp of 1 times |x|.
    body = x >= -3
    assert (np.abs(F.gelu(x) - expected)[body] <= 1e-10 * np.abs(expected[body])).all()
    assert (np.abs(F.gelu(x) - expected)[~body] <= 4 * np.finfo(np.float64).eps * np.abs(x[~body])).all()


@pytest.mark.parametrize("name", ["leaky_relu", "elu", "gelu", "silu", "softplus"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_integer_and_bool_inputs_are_refused_with_torchs_error(name, dtype):
    import torch

    x = np.array([1, 0, 1], dtype=dtype)
    with pytest.raises(NotImplementedError) as theirs:
        getattr(torch.nn.functional, name)(torch.from_numpy(x))
    with pytest.raises(NotImplementedError) as ours:
        getattr(F, name)(x)
    assert str(ours.value) == str(theirs.value)
