"""relu / softmax / log_softmax and their modules: finite differences, torch parity, dtype, layout, errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import tinynn
from tests.helpers import assert_close, check_grad, random_array, random_grad, torch_tensor
from tinynn._engine.elementwise import _ZEROS
from tinynn.nn import LogSoftmax, ReLU, Softmax
from tinynn.nn.functional import (
    log_softmax,
    log_softmax_backward,
    relu,
    relu_backward,
    softmax,
    softmax_backward,
)
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_RTOL

SOFTMAX_OPS = [
    ("softmax", softmax, softmax_backward, torch.softmax),
    ("log_softmax", log_softmax, log_softmax_backward, torch.log_softmax),
]
SOFTMAX_CASES = [((4, 5), 1), ((4, 5), 0), ((4, 5), -1), ((7,), 0), ((2, 3, 4), 1), ((2, 3, 4), -1), ((2, 3, 2, 2), 1)]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(99)


def _channels_last_view(rng: np.random.Generator, dtype=np.float32) -> np.ndarray:
    """An NCHW-shaped view of an NHWC array (how a channels-last activation looks)."""
    return random_array(rng, (2, 5, 5, 3), dtype=dtype).transpose(0, 3, 1, 2)


# ------------------------------------------------------------------------------ relu
def test_relu_forward_and_backward_match_torch_including_zeros(rng):
    x = random_array(rng, (6, 7), zero_fraction=0.3)
    assert (x == 0).any() and (x < 0).any()
    grad_output = random_grad(rng, x.shape)
    xt = torch_tensor(x, True)
    out_t = torch.relu(xt)
    out_t.backward(torch_tensor(grad_output))
    out = relu(x)
    assert_close(out, out_t, rtol=TORCH_F64_RTOL, name="output")
    # torch's gradient at exactly 0 is 0: the kinks are checked here, against torch.
    assert_close(relu_backward(grad_output, out), xt.grad, rtol=TORCH_F64_RTOL, name="grad_input")


def test_relu_backward_matches_finite_differences_away_from_the_kink(rng):
    x = random_array(rng, (5, 6), zero_fraction=0.0)
    x[np.abs(x) < 0.01] = 0.5  # finite differences need |x| > step
    grad_output = random_grad(rng, x.shape)
    check_grad(relu, x, grad_output, relu_backward(grad_output, relu(x)))


def test_relu_keeps_float32_and_channels_last_layout(rng):
    x = _channels_last_view(rng)
    grad_output = _channels_last_view(rng)
    out = relu(x)
    grad_input = relu_backward(grad_output, out)
    assert out.dtype == grad_input.dtype == np.float32
    assert out.strides == x.strides and grad_input.strides == x.strides
    assert not out.flags.c_contiguous


def test_relu_backward_gives_zero_for_nan_upstream_at_inactive_units():
    out = np.array([0.0, 2.0, 0.0], dtype=np.float32)
    grad = relu_backward(np.array([np.nan, 1.5, 3.0], dtype=np.float32), out)
    np.testing.assert_array_equal(grad, np.array([0.0, 1.5, 0.0], dtype=np.float32))


def test_relu_backward_of_infinite_upstream_gradients_at_inactive_units_is_zero_without_warnings():
    # inf * 0 in the masked product is NaN (and NumPy's "invalid value" warning, an error under
    # the test settings); torch's threshold_backward gives 0 there, silently.
    x = np.array([-1.0, 2.0, -0.0, 0.0, np.nan, 3.0], dtype=np.float32)
    grad_output = np.array([np.inf, 1.0, -np.inf, np.inf, np.inf, -np.inf], dtype=np.float32)
    xt = torch_tensor(x, True)
    torch.relu(xt).backward(torch_tensor(grad_output))
    np.testing.assert_array_equal(relu_backward(grad_output, relu(x)), xt.grad.numpy())


def test_relu_backward_passes_the_gradient_at_nan_outputs_like_torch():
    # Found by the property tests: a "y > 0" mask dropped dY where relu's output is NaN.
    x = np.array([np.nan, np.inf, -np.inf, 0.0, 1.0])
    grad_output = np.array([0.5, -1.5, 2.0, 3.0, -0.25])
    xt = torch_tensor(x, True)
    torch.relu(xt).backward(torch_tensor(grad_output))
    assert_close(relu_backward(grad_output, relu(x)), xt.grad, rtol=TORCH_F64_RTOL, name="grad")


def test_relu_inplace_writes_into_the_input():
    x = np.array([-1.0, 0.0, 2.0], dtype=np.float32)
    out = relu(x, inplace=True)
    assert out is x
    np.testing.assert_array_equal(x, [0.0, 0.0, 2.0])
    y = np.array([-1.0, 3.0])
    relu(y)
    np.testing.assert_array_equal(y, [-1.0, 3.0])


@pytest.mark.parametrize("layout", ["C", "channels_last", "every_other", "reversed", "broadcast", "0-d", "empty"])
def test_relu_of_any_layout_matches_maximum_with_zero_and_never_writes_its_shared_zeros(rng, layout):
    base = rng.standard_normal((3, 4, 5, 6))
    x = {"C": base, "channels_last": np.ascontiguousarray(base.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2),
         "every_other": base[:, ::2], "reversed": base[..., ::-1], "broadcast": np.broadcast_to(base[:1], base.shape),
         "0-d": np.array(-1.5), "empty": base[:0]}[layout]
    out = relu(x)
    np.testing.assert_array_equal(out, np.maximum(x, 0.0))
    assert out.dtype == x.dtype
    inplace = np.array(x)  # a writable copy of the same values
    assert relu(inplace, inplace=True) is inplace
    np.testing.assert_array_equal(inplace, np.maximum(x, 0.0))
    for buffer in _ZEROS.values():
        assert not buffer.flags.writeable and not buffer.any()


def test_ReLU_module_forward_backward_and_repr(rng):
    x = random_array(rng, (3, 4))
    grad_output = random_grad(rng, (3, 4))
    module = ReLU()
    out = module(x)
    assert_close(module.backward(grad_output), np.where(x > 0, grad_output, 0.0), rtol=0.0, name="grad")
    module(x)
    assert module.backward(grad_output, needs_input_grad=False) is None
    assert repr(ReLU()) == "ReLU()" and repr(ReLU(inplace=True)) == "ReLU(inplace=True)"
    inplace = ReLU(inplace=True)
    x_copy = x.copy()
    assert inplace(x_copy) is x_copy
    np.testing.assert_array_equal(x_copy, out)
    with pytest.raises(RuntimeError, match="run a forward first"):
        ReLU().backward(grad_output)


def test_ReLU_backward_after_no_grad_raises(rng):
    module = ReLU()
    with tinynn.no_grad():
        module(random_array(rng, (2, 2)))
    with pytest.raises(RuntimeError, match="no_grad"):
        module.backward(np.ones((2, 2)))


# ------------------------------------------------------------------------------ softmax / log_softmax
@pytest.mark.parametrize(("name", "forward", "backward", "torch_op"), SOFTMAX_OPS)
@pytest.mark.parametrize(("shape", "dim"), SOFTMAX_CASES)
def test_softmax_family_matches_torch_float64(rng, name, forward, backward, torch_op, shape, dim):
    x = random_array(rng, shape) * 3
    grad_output = random_grad(rng, shape)
    xt = torch_tensor(x, True)
    out_t = torch_op(xt, dim)
    out_t.backward(torch_tensor(grad_output))
    out = forward(x, dim)
    assert_close(out, out_t, rtol=TORCH_F64_RTOL, name=f"{name} output")
    assert_close(backward(grad_output, out, dim), xt.grad, rtol=TORCH_F64_RTOL, name=f"{name} grad")


@pytest.mark.parametrize(("name", "forward", "backward", "torch_op"), SOFTMAX_OPS)
@pytest.mark.parametrize(("shape", "dim"), [((4, 5), 1), ((3, 4), 0), ((2, 3, 2), -2), ((6,), 0)])
def test_softmax_family_backward_matches_finite_differences(rng, name, forward, backward, torch_op, shape, dim):
    x = random_array(rng, shape)
    grad_output = random_grad(rng, shape)
    check_grad(lambda v: forward(v, dim), x, grad_output, backward(grad_output, forward(x, dim), dim), name=name)


@pytest.mark.parametrize(("name", "forward", "backward", "torch_op"), SOFTMAX_OPS)
def test_softmax_family_float32_matches_torch_and_keeps_float32(rng, name, forward, backward, torch_op):
    x = random_array(rng, (8, 10), dtype=np.float32) * 4
    grad_output = random_grad(rng, (8, 10), dtype=np.float32)
    xt = torch_tensor(x, True)
    out_t = torch_op(xt, 1)
    out_t.backward(torch_tensor(grad_output))
    out = forward(x, 1)
    grad_input = backward(grad_output, out, 1)
    assert out.dtype == grad_input.dtype == np.float32
    assert_close(out, out_t, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name=f"{name} output")
    assert_close(grad_input, xt.grad, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name=f"{name} grad")


@pytest.mark.parametrize(("name", "forward", "backward", "torch_op"), SOFTMAX_OPS)
def test_softmax_family_is_stable_for_huge_inputs(name, forward, backward, torch_op):
    x = np.array([[1000.0, 999.0, -1000.0], [-5000.0, -5001.0, -5000.5]], dtype=np.float32)
    out = forward(x, 1)
    assert np.isfinite(out[:, :2]).all()
    assert_close(out, torch_op(torch_tensor(x), 1), rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name=name)


@pytest.mark.parametrize(("name", "forward", "backward", "torch_op"), SOFTMAX_OPS)
@pytest.mark.parametrize("x", [[np.inf, 1.0, 0.0], [-np.inf, 1.0, 0.0], [-np.inf, -np.inf, 2.0], np.array(-np.inf)])
def test_softmax_family_of_infinities_matches_torch_without_warnings(name, forward, backward, torch_op, x):
    # Found by the property tests: inf - inf is NaN here as in torch, but NumPy warned about it.
    x = np.asarray(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = forward(x, 0)
    assert_close(out, torch_op(torch_tensor(x), 0), rtol=TORCH_F64_RTOL, name=name)


@pytest.mark.parametrize(("name", "forward", "backward", "torch_op"), SOFTMAX_OPS)
@pytest.mark.parametrize(("ndim", "implicit_dim"), [(1, 0), (2, 1), (3, 0), (4, 1)])
def test_softmax_family_without_dim_warns_and_uses_torch_legacy_dim(rng, name, forward, backward, torch_op,
                                                                    ndim, implicit_dim):
    x = random_array(rng, (2, 3, 2, 3)[:ndim])
    with pytest.warns(UserWarning, match=f"Implicit dimension choice for {name} has been deprecated"):
        out = forward(x)
    assert_close(out, torch_op(torch_tensor(x), implicit_dim), rtol=TORCH_F64_RTOL, name=name)


@pytest.mark.parametrize(("name", "forward", "backward", "torch_op"), SOFTMAX_OPS)
def test_softmax_family_0d_and_empty_inputs_match_torch(name, forward, backward, torch_op):
    scalar = np.array(0.7)
    assert_close(forward(scalar, 0), torch_op(torch_tensor(scalar), 0), rtol=TORCH_F64_RTOL, name="0-d")
    assert backward(np.array(2.0), forward(scalar, 0), 0) == 0.0
    empty = np.zeros((0, 5), dtype=np.float32)
    assert forward(empty, 0).shape == (0, 5) and forward(empty, 0).dtype == np.float32


@pytest.mark.parametrize(("name", "forward", "backward", "torch_op"), SOFTMAX_OPS)
def test_softmax_family_dtype_argument_casts_first(rng, name, forward, backward, torch_op):
    x = random_array(rng, (3, 4), dtype=np.float32)
    out = forward(x, 1, dtype=tinynn.float64)
    assert out.dtype == np.float64
    assert_close(out, torch_op(torch_tensor(x), 1, dtype=torch.float64), rtol=TORCH_F64_RTOL, name=name)


@pytest.mark.parametrize("forward", [softmax, log_softmax])
def test_softmax_family_dim_out_of_range_raises_index_error(forward):
    with pytest.raises(IndexError, match=r"Dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
        forward(np.zeros((2, 3)), 2)
    with pytest.raises(IndexError, match=r"but got -3\)"):
        forward(np.zeros((2, 3)), -3)


@pytest.mark.parametrize("forward", [softmax, log_softmax])
def test_softmax_family_integer_input_raises(forward):
    with pytest.raises(TypeError, match=r"expected a floating-point input, got Long .*astype\(np\.float32\)"):
        forward(np.arange(6).reshape(2, 3), 1)
    with pytest.raises(TypeError, match="must be a NumPy array, not list"):
        forward([1.0, 2.0], 0)


@pytest.mark.parametrize(("module_class", "forward", "backward"), [(Softmax, softmax, softmax_backward),
                                                                   (LogSoftmax, log_softmax, log_softmax_backward)])
def test_softmax_modules_forward_backward_repr(rng, module_class, forward, backward):
    x = random_array(rng, (3, 4, 2))
    grad_output = random_grad(rng, x.shape)
    module = module_class(dim=-2)
    out = module(x)
    assert_close(out, forward(x, -2), rtol=0.0, name="output")
    assert_close(module.backward(grad_output), backward(grad_output, out, -2), rtol=0.0, name="grad")
    assert repr(module) == f"{module_class.__name__}(dim=-2)"
    assert repr(module_class()) == f"{module_class.__name__}(dim=None)"
    with pytest.raises(RuntimeError, match="run a forward first"):
        module.backward(grad_output)
    module(x)
    assert module.backward(grad_output, needs_input_grad=False) is None


@pytest.mark.parametrize("module_class", [Softmax, LogSoftmax])
def test_softmax_modules_without_dim_warn_and_backprop_along_the_implicit_dim(rng, module_class):
    x = random_array(rng, (3, 4))
    grad_output = random_grad(rng, x.shape)
    xt = torch_tensor(x, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch_module = getattr(torch.nn, module_class.__name__)()
        out_t = torch_module(xt)
    out_t.backward(torch_tensor(grad_output))
    module = module_class()
    with pytest.warns(UserWarning, match="Implicit dimension choice"):
        out = module(x)
    assert_close(out, out_t, rtol=TORCH_F64_RTOL, name="output")
    assert_close(module.backward(grad_output), xt.grad, rtol=TORCH_F64_RTOL, name="grad")
