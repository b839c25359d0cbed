"""linear / linear_backward / Linear / Identity: finite differences, torch parity, dtype, init, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinynn
from tests.helpers import assert_close, check_grad, random_array, random_grad, torch_tensor
from tinynn.nn import Identity, Linear
from tinynn.nn.functional import linear, linear_backward
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_RTOL

INPUT_SHAPES = [(5, 4), (2, 3, 4), (4,), (0, 4)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _torch_linear(x, w, b, grad_output):
    xt, wt = torch_tensor(x, True), torch_tensor(w, True)
    bt = None if b is None else torch_tensor(b, True)
    out = torch.nn.functional.linear(xt, wt, bt)
    out.backward(torch_tensor(grad_output))
    return out, xt.grad, wt.grad, None if bt is None else bt.grad


@pytest.mark.parametrize("input_shape", INPUT_SHAPES)
@pytest.mark.parametrize("has_bias", [True, False])
def test_linear_forward_and_backward_match_torch_float64(rng, input_shape, has_bias):
    x = random_array(rng, input_shape)
    w = random_array(rng, (3, 4))
    b = random_array(rng, (3,)) if has_bias else None
    grad_output = random_grad(rng, (*input_shape[:-1], 3))
    out_t, gx_t, gw_t, gb_t = _torch_linear(x, w, b, grad_output)
    assert_close(linear(x, w, b), out_t, rtol=TORCH_F64_RTOL, name="output")
    gx, gw, gb = linear_backward(grad_output, x, w, has_bias=has_bias)
    assert_close(gx, gx_t, rtol=TORCH_F64_RTOL, name="grad_input")
    assert_close(gw, gw_t, rtol=TORCH_F64_RTOL, name="grad_weight")
    if has_bias:
        assert_close(gb, gb_t, rtol=TORCH_F64_RTOL, name="grad_bias")
    else:
        assert gb is None


@pytest.mark.parametrize("input_shape", [(5, 4), (2, 3, 4), (4,)])
def test_linear_backward_matches_finite_differences(rng, input_shape):
    x = random_array(rng, input_shape)
    w = random_array(rng, (3, 4))
    b = random_array(rng, (3,))
    grad_output = random_grad(rng, (*input_shape[:-1], 3))
    gx, gw, gb = linear_backward(grad_output, x, w)
    check_grad(lambda v: linear(v, w, b), x, grad_output, gx, name="grad_input")
    check_grad(lambda v: linear(x, v, b), w, grad_output, gw, name="grad_weight")
    check_grad(lambda v: linear(x, w, v), b, grad_output, gb, name="grad_bias")


def test_linear_backward_skips_input_grad_when_not_needed(rng):
    x, w = random_array(rng, (5, 4)), random_array(rng, (3, 4))
    grad_input, grad_weight, grad_bias = linear_backward(random_grad(rng, (5, 3)), x, w, needs_input_grad=False)
    assert grad_input is None
    assert grad_weight.shape == (3, 4) and grad_bias.shape == (3,)


def test_linear_float32_matches_torch_and_keeps_float32(rng):
    x = random_array(rng, (16, 30), dtype=np.float32)
    w = random_array(rng, (7, 30), dtype=np.float32)
    b = random_array(rng, (7,), dtype=np.float32)
    grad_output = random_grad(rng, (16, 7), dtype=np.float32)
    out_t, gx_t, gw_t, gb_t = _torch_linear(x, w, b, grad_output)
    out = linear(x, w, b)
    gx, gw, gb = linear_backward(grad_output, x, w)
    for name, ours, theirs in [("output", out, out_t), ("grad_input", gx, gx_t), ("grad_weight", gw, gw_t),
                               ("grad_bias", gb, gb_t)]:
        assert ours.dtype == np.float32, name
        assert_close(ours, theirs, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name=name)


def test_linear_1d_input_gives_1d_output(rng):
    w, b = random_array(rng, (3, 4)), random_array(rng, (3,))
    x = random_array(rng, (4,))
    assert linear(x, w, b).shape == (3,)
    gx, gw, gb = linear_backward(random_grad(rng, (3,)), x, w)
    assert gx.shape == (4,) and gw.shape == (3, 4) and gb.shape == (3,)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(("input_shape", "mat1"), [((64, 785), "64x785"), ((2, 3, 785), "6x785"), ((785,), "1x785")])
def test_linear_wrong_width_raises_torch_message(input_shape, mat1):
    w = np.zeros((10, 784), dtype=np.float32)
    with pytest.raises(RuntimeError, match=rf"mat1 and mat2 shapes cannot be multiplied \({mat1} and 784x10\)"):
        linear(np.zeros(input_shape, dtype=np.float32), w)


def test_linear_integer_input_raises_dtype_error_with_hint():
    w = np.zeros((10, 784), dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"must have the same dtype, but got Long and Float.*astype\(np\.float32\)"):
        linear(np.zeros((64, 784), dtype=np.int64), w)


def test_linear_float64_input_to_float32_weight_raises_instead_of_upcasting():
    w = np.zeros((10, 784), dtype=np.float32)
    with pytest.raises(RuntimeError, match=r"but got Double and Float.*model\.double\(\)"):
        linear(np.zeros((64, 784)), w)


def test_linear_float32_input_to_float64_weight_raises():
    with pytest.raises(RuntimeError, match=r"but got Float and Double.*model\.float\(\)"):
        Linear(784, 10, dtype=np.float64)(np.zeros((64, 784), dtype=np.float32))


def test_linear_0d_input_raises():
    with pytest.raises(RuntimeError, match="at least 1D, but they are 0D and 2D"):
        linear(np.zeros((), dtype=np.float32), np.zeros((3, 4), dtype=np.float32))


def test_linear_non_array_input_raises_type_error():
    with pytest.raises(TypeError, match="argument 'input' must be a NumPy array, not list"):
        linear([[1.0, 2.0]], np.zeros((3, 2), dtype=np.float32))


def test_linear_bias_of_wrong_shape_raises():
    with pytest.raises(RuntimeError, match=r"bias must have shape \(3,\).*got shape \(4,\)"):
        linear(np.zeros((2, 4), np.float32), np.zeros((3, 4), np.float32), np.zeros(4, np.float32))


def test_linear_weight_not_2d_raises():
    with pytest.raises(RuntimeError, match=r"weight must be 2-D .*got shape \(2, 3, 4\)"):
        linear(np.zeros((2, 4), np.float32), np.zeros((2, 3, 4), np.float32))


# ------------------------------------------------------------------------------ Linear module
def test_Linear_parameters_shapes_dtype_and_repr():
    layer = Linear(784, 10)
    assert layer.weight.shape == (10, 784) and layer.bias.shape == (10,)
    assert layer.weight.dtype == np.float32 and layer.bias.dtype == np.float32
    assert repr(layer) == "Linear(in_features=784, out_features=10, bias=True)"
    no_bias = Linear(3, 2, bias=False, dtype=tinynn.float64)
    assert no_bias.bias is None and [name for name, _ in no_bias.named_parameters()] == ["weight"]
    assert no_bias.weight.dtype == np.float64
    assert repr(no_bias) == "Linear(in_features=3, out_features=2, bias=False)"


def test_Linear_init_is_uniform_within_one_over_sqrt_fan_in():
    tinynn.manual_seed(0)
    layer = Linear(400, 300)
    bound = 1 / math.sqrt(400)
    weight, bias = layer.weight.data, layer.bias.data
    assert np.abs(weight).max() <= bound and np.abs(bias).max() <= bound
    # Spread over the whole interval, not a narrower one: U(-a, a) has std a / sqrt(3).
    assert np.abs(weight).max() > 0.999 * bound and weight.min() < -0.999 * bound
    assert weight.std() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert abs(weight.mean()) < 0.01 * bound
    assert np.abs(bias).max() > 0.9 * bound and bias.std() == pytest.approx(bound / math.sqrt(3), rel=0.15)
    before = weight.copy()
    layer.reset_parameters()
    assert not np.array_equal(before, layer.weight.data)


def test_Linear_matches_torch_module_float64(rng):
    layer = Linear(4, 3, dtype=np.float64)
    torch_layer = torch.nn.Linear(4, 3, dtype=torch.float64)
    layer.load_state_dict(torch_layer.state_dict())
    x = random_array(rng, (6, 4))
    grad_output = random_grad(rng, (6, 3))
    xt = torch_tensor(x, True)
    out_t = torch_layer(xt)
    out_t.backward(torch_tensor(grad_output))
    assert_close(layer(x), out_t, rtol=TORCH_F64_RTOL, name="output")
    assert_close(layer.backward(grad_output), xt.grad, rtol=TORCH_F64_RTOL, name="grad_input")
    assert_close(layer.weight.grad, torch_layer.weight.grad, rtol=TORCH_F64_RTOL, name="weight.grad")
    assert_close(layer.bias.grad, torch_layer.bias.grad, rtol=TORCH_F64_RTOL, name="bias.grad")


def test_Linear_grads_accumulate_over_two_backwards(rng):
    layer = Linear(4, 3, dtype=np.float64)
    x1, x2 = random_array(rng, (5, 4)), random_array(rng, (2, 4))
    g1, g2 = random_grad(rng, (5, 3)), random_grad(rng, (2, 3))
    layer(x1)
    layer.backward(g1)
    layer(x2)
    layer.backward(g2)
    _, gw1, gb1 = linear_backward(g1, x1, layer.weight.data)
    _, gw2, gb2 = linear_backward(g2, x2, layer.weight.data)
    assert_close(layer.weight.grad, gw1 + gw2, rtol=TORCH_F64_RTOL, name="weight.grad")
    assert_close(layer.bias.grad, gb1 + gb2, rtol=TORCH_F64_RTOL, name="bias.grad")


def test_Linear_needs_input_grad_false_returns_none_but_fills_param_grads(rng):
    layer = Linear(4, 3)
    layer(random_array(rng, (5, 4), dtype=np.float32))
    assert layer.backward(random_grad(rng, (5, 3), dtype=np.float32), needs_input_grad=False) is None
    assert layer.weight.grad.dtype == np.float32 and layer.bias.grad.dtype == np.float32
    assert np.abs(layer.weight.grad).sum() > 0


def test_Linear_float32_output_and_grads_stay_float32(rng):
    layer = Linear(4, 3)
    out = layer(random_array(rng, (2, 5, 4), dtype=np.float32))
    grad_input = layer.backward(random_grad(rng, (2, 5, 3), dtype=np.float32))
    assert out.dtype == grad_input.dtype == layer.weight.grad.dtype == np.float32
    assert grad_input.shape == (2, 5, 4)


def test_Linear_backward_before_forward_raises():
    with pytest.raises(RuntimeError, match="run a forward first"):
        Linear(4, 3).backward(np.zeros((2, 3), np.float32))


def test_Linear_backward_after_no_grad_forward_raises():
    layer = Linear(4, 3)
    with tinynn.no_grad():
        layer(np.zeros((2, 4), np.float32))
    with pytest.raises(RuntimeError, match="no_grad"):
        layer.backward(np.zeros((2, 3), np.float32))


def test_Linear_backward_with_wrong_grad_shape_raises(rng):
    layer = Linear(4, 3)
    layer(np.zeros((2, 4), np.float32))
    with pytest.raises(RuntimeError, match=r"grad_output has shape \(2, 4\), expected \(2, 3\)"):
        layer.backward(np.zeros((2, 4), np.float32))


def test_Identity_passes_input_and_gradient_through():
    identity = Identity(54, unused_argument_name=0.1)
    x = np.arange(6.0).reshape(2, 3)
    assert identity(x) is x
    grad = np.ones((2, 3))
    assert identity.backward(grad) is grad
    identity(x)
    assert identity.backward(grad, needs_input_grad=False) is None
    assert repr(identity) == "Identity()"
    with pytest.raises(RuntimeError, match="run a forward first"):
        identity.backward(grad)


@pytest.mark.parametrize("input_shape,weight_shape", [((2, 3, 0), (4, 0)), ((2, 3, 5), (0, 5)), ((0,), (2, 0))])
def test_linear_backward_with_zero_features_matches_torch(input_shape, weight_shape):
    # Found by the property tests: reshape(-1, 0) cannot infer the row count of an empty array.
    rng = np.random.default_rng(3)
    x, w = random_array(rng, input_shape), random_array(rng, weight_shape)
    grad_output = random_grad(rng, (*input_shape[:-1], weight_shape[0]))
    _, gx_t, gw_t, gb_t = _torch_linear(x, w, np.zeros(weight_shape[0]), grad_output)
    gx, gw, gb = linear_backward(grad_output, x, w)
    assert_close(gx, gx_t, rtol=TORCH_F64_RTOL, name="grad_input")
    assert_close(gw, gw_t, rtol=TORCH_F64_RTOL, name="grad_weight")
    assert_close(gb, gb_t, rtol=TORCH_F64_RTOL, name="grad_bias")
