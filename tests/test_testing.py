"""tinynn.testing as a learner uses it: layers written here, outside tinynn, held to gradcheck and torch.

Each check is shown passing a correct layer and failing a layer with one planted mistake, with a
message that names the wrong gradient.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynn.nn as nn
from tests.strategies import one_torch_thread  # noqa: F401 - an autouse fixture
from tinynn.testing import assert_matches_torch, default_grad_output, gradcheck
from tinynn.testing.strategies import adaptive_pool2d_args, conv2d_args, pool2d_args, pool_output_size, relayout

TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


def inputs(shape: tuple[int, ...], dtype: type = np.float64, seed: int = 0) -> np.ndarray:
    """Normal values kept 1e-3 away from 0, so no finite difference straddles a ReLU-style kink."""
    x = np.random.default_rng(seed).standard_normal(shape)
    return np.where(np.abs(x) < 1e-3, 1e-2, x).astype(dtype)


# ---------------------------------------------------------------------------------- layers a learner writes
class LeakyReLU(nn.Module):
    """y = x for x > 0, slope * x otherwise."""

    def __init__(self, slope: float = 0.01) -> None:
        super().__init__()
        self.slope = slope

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.save_for_backward(x)
        return np.where(x > 0, x, x * x.dtype.type(self.slope))

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray:
        (x,) = self.saved_tensors()
        return grad_output * np.where(x > 0, 1.0, self.slope).astype(x.dtype)


class LeakyReLUWrongSlope(LeakyReLU):
    """Planted bug: the backward uses torch's default slope 0.01, not the layer's own."""

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray:
        (x,) = self.saved_tensors()
        return grad_output * np.where(x > 0, 1.0, 0.01).astype(x.dtype)


class Residual(nn.Module):
    """y = x + body(x), body = Linear -> ReLU -> Linear; dL/dx = G + body.backward(G)."""

    def __init__(self, features: int, hidden: int, dtype: type = np.float64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(features, hidden, dtype=dtype), nn.ReLU(),
                                  nn.Linear(hidden, features, dtype=dtype))

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x + self.body(x)

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray:
        return grad_output + self.body.backward(grad_output)


class ResidualWithoutSkipGradient(Residual):
    """Planted bug: the backward forgets the skip path's gradient (the "+ G")."""

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray:
        return self.body.backward(grad_output)


class TorchResidual(torch.nn.Module):
    """The same block in torch, with the same parameter names (body.0.weight, ...)."""

    def __init__(self, features: int, hidden: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(features, hidden, dtype=dtype), torch.nn.ReLU(),
                                        torch.nn.Linear(hidden, features, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class LinearWithScaledWeightGrad(nn.Linear):
    """Planted bug: the weight's gradient comes out 1% too large; the input's and bias's are right."""

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        before = 0.0 if self.weight.grad is None else self.weight.grad.copy()
        grad_input = super().backward(grad_output, needs_input_grad)
        self.weight.grad = before + 1.01 * (self.weight.grad - before)
        return grad_input


class Centering(nn.Module):
    """y = x - mean(x) over the batch (BatchNorm's first step): dL/dx = G - mean(G)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.save_for_backward()
        return x - x.mean(axis=0)

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray:
        self.saved_tensors()
        return grad_output - grad_output.mean(axis=0)


class CenteringZeroGradient(Centering):
    """Planted bug: returns zeros, which is right only when G is constant over the batch (all ones)."""

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray:
        self.saved_tensors()
        return np.zeros_like(grad_output)


class Multiply(nn.Module):
    """y = a * b of two inputs; backward returns (G * b, G * a)."""

    def forward(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        self.save_for_backward(a, b)
        return a * b

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.saved_tensors()
        return grad_output * b, grad_output * a


class MultiplySwappedGradient(Multiply):
    """Planted bug: the second input's gradient uses b instead of a."""

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> tuple[np.ndarray, np.ndarray]:
        _, b = self.saved_tensors()
        return grad_output * b, grad_output * b


# ---------------------------------------------------------------------------------- (a) an activation
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_correct_leaky_relu_passes_gradcheck_and_matches_torch(dtype):
    x = inputs((4, 6), dtype)
    assert gradcheck(LeakyReLU(0.1), x) is True
    assert assert_matches_torch(LeakyReLU(0.1), torch.nn.LeakyReLU(0.1), x) is True


def test_a_leaky_relu_with_the_wrong_backward_slope_fails_both_checks_naming_input_0():
    x = inputs((4, 6))
    with pytest.raises(AssertionError, match=r"input 0: .*worst at index \(\d+, \d+\): analytic .*, numeric"):
        gradcheck(LeakyReLUWrongSlope(0.1), x)
    with pytest.raises(AssertionError, match="input 0 gradient"):
        assert_matches_torch(LeakyReLUWrongSlope(0.1), torch.nn.LeakyReLU(0.1), x)


# ---------------------------------------------------------------------------------- (b) a residual block
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_residual_block_passes_gradcheck_and_matches_torch_by_parameter_name(dtype):
    x = inputs((5, 3), dtype)
    block = Residual(3, 4, dtype)
    assert gradcheck(block, x)
    torch.manual_seed(0)
    assert assert_matches_torch(block, TorchResidual(3, 4, TORCH_DTYPE[dtype]), x)
    # The torch weights were loaded by name, and each parameter got its gradient.
    assert {name for name, _ in block.named_parameters()} == {"body.0.weight", "body.0.bias", "body.2.weight",
                                                              "body.2.bias"}
    assert all(param.grad is not None and param.grad.dtype == dtype for param in block.parameters())


def test_a_residual_block_that_forgets_the_skip_gradient_fails_both_checks():
    x = inputs((5, 3))
    with pytest.raises(AssertionError, match="input 0: analytic and numeric gradients differ"):
        gradcheck(ResidualWithoutSkipGradient(3, 4), x)
    with pytest.raises(AssertionError, match="input 0 gradient"):
        assert_matches_torch(ResidualWithoutSkipGradient(3, 4), TorchResidual(3, 4, torch.float64), x)


# ---------------------------------------------------------------------------------- (c) a parameter gradient
def test_a_wrong_weight_gradient_fails_gradcheck_and_the_torch_check_naming_the_parameter():
    x = inputs((4, 3))
    with pytest.raises(AssertionError, match=r"parameter 'weight': .*analytic .*, numeric"):
        gradcheck(LinearWithScaledWeightGrad(3, 2), x)
    with pytest.raises(AssertionError, match="parameter 'weight' gradient"):
        assert_matches_torch(LinearWithScaledWeightGrad(3, 2, dtype=np.float64),
                             torch.nn.Linear(3, 2, dtype=torch.float64), x)


def test_gradcheck_checks_parameters_of_nested_modules_by_dotted_name():
    block = Residual(3, 4)
    block.body[2] = LinearWithScaledWeightGrad(4, 3, dtype=np.float64)
    with pytest.raises(AssertionError, match=r"parameter 'body\.2\.weight'"):
        gradcheck(block, inputs((5, 3)))


# ---------------------------------------------------------------------------------- (d) nothing changes
@pytest.mark.parametrize("layer", [nn.Linear, LinearWithScaledWeightGrad], ids=["passing", "failing"])
def test_gradcheck_leaves_parameters_data_grads_and_mode_as_they_were(layer):
    module = layer(3, 2)  # float32 parameters: checked in float64, given back in float32
    module.eval()
    weight, bias = module.weight.data, module.bias.data
    weight_values, bias_values = weight.copy(), bias.copy()
    grad = np.full((2, 3), 7.0, dtype=np.float32)
    module.weight.grad = grad
    try:
        gradcheck(module, inputs((4, 3), np.float32))
    except AssertionError:
        assert layer is LinearWithScaledWeightGrad
    assert module.weight.data is weight and module.bias.data is bias
    assert weight.dtype == bias.dtype == np.float32
    np.testing.assert_array_equal(weight, weight_values)
    np.testing.assert_array_equal(bias, bias_values)
    assert module.weight.grad is grad and np.all(grad == 7.0)
    assert module.bias.grad is None
    assert module.training is False


def test_gradcheck_leaves_the_last_forward_ready_for_its_backward():
    module = nn.Linear(3, 2, dtype=np.float64)
    x = inputs((4, 3))
    module(x)
    gradcheck(module, inputs((4, 3), seed=1))
    module.backward(np.ones((4, 2)))  # the caller's forward, not gradcheck's last one
    np.testing.assert_allclose(module.weight.grad, np.ones((2, 4)) @ x)


# ---------------------------------------------------------------------------------- (e) the upstream gradient
def test_gradcheck_default_grad_output_is_not_all_ones_so_a_zero_gradient_is_caught():
    x = inputs((4, 3))
    assert gradcheck(Centering(), x)
    # Under G = 1 the zero gradient is right (sum(x - mean(x)) does not depend on x): an all-ones
    # default would let it through.
    assert gradcheck(CenteringZeroGradient(), x, grad_output=np.ones((4, 3)))
    with pytest.raises(AssertionError, match="input 0"):
        gradcheck(CenteringZeroGradient(), x)
    default = default_grad_output(np.zeros((4, 3)))
    assert default.shape == (4, 3) and np.all(np.abs(default) <= 1) and len(np.unique(default)) > 1


def test_a_loss_gets_grad_output_one_and_its_class_index_target_is_not_differentiated():
    logits, target = inputs((4, 5)), np.array([0, 3, 4, 1])
    assert gradcheck(nn.CrossEntropyLoss(), logits, target)
    assert assert_matches_torch(nn.CrossEntropyLoss(), torch.nn.CrossEntropyLoss(), logits, target)
    assert default_grad_output(np.float64(2.5)) == 1.0


@pytest.mark.parametrize("layout", ["F", "strided", "channels_last"])
def test_gradcheck_perturbs_inputs_in_any_memory_layout(layout):
    x = relayout(inputs((2, 3, 4, 5)), layout)
    assert gradcheck(LeakyReLU(0.1), x)
    with pytest.raises(AssertionError, match="input 0"):
        gradcheck(LeakyReLUWrongSlope(0.1), x)


# ---------------------------------------------------------------------------------- several inputs
def test_gradcheck_checks_every_input_of_a_module_with_several():
    a, b = inputs((3, 4)), inputs((3, 4), seed=1)
    assert gradcheck(Multiply(), a, b)
    with pytest.raises(AssertionError, match="input 1"):
        gradcheck(MultiplySwappedGradient(), a, b)


def test_assert_matches_torch_compares_every_input_gradient_of_a_module_with_several():
    class TorchMultiply(torch.nn.Module):
        def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
            return a * b

    a, b = inputs((3, 4)), inputs((3, 4), seed=1)
    assert assert_matches_torch(Multiply(), TorchMultiply(), a, b)
    with pytest.raises(AssertionError, match="input 1 gradient"):
        assert_matches_torch(MultiplySwappedGradient(), TorchMultiply(), a, b)


def test_assert_matches_torch_reports_a_wrong_output_first():
    with pytest.raises(AssertionError, match="output: max"):
        assert_matches_torch(LeakyReLU(0.2), torch.nn.LeakyReLU(0.1), inputs((4, 6)))


def test_importing_tinynn_testing_imports_neither_torch_nor_hypothesis():
    code = "import sys, tinynn.testing; assert not {'torch', 'hypothesis'} & set(sys.modules), 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------- the strategies
@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@settings(max_examples=100)
@given(args=conv2d_args())
def test_conv2d_args_are_accepted_by_torch(args):
    x, weight, bias, kwargs = args
    output = TF.conv2d(torch.from_numpy(np.array(x)), torch.from_numpy(weight),
                       None if bias is None else torch.from_numpy(bias), **kwargs)
    assert output.shape[-1] >= 1 and output.shape[-2] >= 1


@settings(max_examples=10)
@given(args=conv2d_args(dtype=np.float64, styles=("normal",), batches=(1, 2)))
def test_tinynn_conv2d_passes_gradcheck_on_drawn_arguments(args):
    x, weight, bias, kwargs = args
    out_channels, in_per_group, kh, kw = weight.shape
    module = nn.Conv2d(in_per_group * kwargs["groups"], out_channels, (kh, kw), **kwargs, bias=bias is not None,
                       dtype=np.float64)
    module.load_state_dict({"weight": weight} | ({} if bias is None else {"bias": bias}))
    assert gradcheck(module, x)


@settings(max_examples=100)
@given(kind=st.sampled_from(["max", "avg"]), data=st.data())
def test_pool2d_args_are_accepted_by_torch_with_the_output_size_stated(kind, data):
    x, kwargs = data.draw(pool2d_args(kind))
    pool = TF.max_pool2d if kind == "max" else TF.avg_pool2d
    output = pool(torch.from_numpy(np.array(x)), **kwargs)
    stride = kwargs["stride"] if kwargs["stride"] is not None else kwargs["kernel_size"]
    padding, kernel = kwargs["padding"], kwargs["kernel_size"]
    dilation = kwargs.get("dilation", 1)
    pair = lambda v: (v, v) if isinstance(v, int) else (v[0], v[-1])  # noqa: E731
    expected = tuple(pool_output_size(*args, ceil_mode=kwargs["ceil_mode"]) for args in zip(
        x.shape[-2:], pair(kernel), pair(stride), pair(padding), pair(dilation)))
    assert tuple(output.shape[-2:]) == expected


@settings(max_examples=50)
@given(args=adaptive_pool2d_args())
def test_adaptive_pool2d_args_are_accepted_by_torch(args):
    x, output_size = args
    TF.adaptive_avg_pool2d(torch.from_numpy(np.array(x)), output_size)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA device")
@pytest.mark.parametrize("textbook", [False, True], ids=["engine", "textbook"])
def test_assert_matches_torch_runs_torch_on_the_torch_modules_device(textbook):
    import tinynn

    torch.backends.cudnn.allow_tf32 = False  # TF32 keeps 10 mantissa bits: far outside any float64 check
    module = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, dtype=np.float64), nn.ReLU(),
                           nn.AvgPool2d(2), nn.Flatten(), nn.Linear(16, 2, dtype=np.float64))
    torch_module = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.AvgPool2d(2),
                                       torch.nn.Flatten(), torch.nn.Linear(16, 2)).double().cuda()
    with tinynn.textbook(textbook):
        assert assert_matches_torch(module, torch_module, inputs((2, 3, 4, 4)))
