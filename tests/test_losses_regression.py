"""mse/l1/smooth_l1/huber: torch's defaults, warnings, kinks, empty inputs and errors; finite differences.

The random comparisons with torch live in tests/test_properties_losses.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import tinynn
from tests.helpers import random_array, torch_tensor
from tinynn import nn
from tinynn.nn import functional as F
from tinynn.testing import assert_close, gradcheck
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_RTOL

# name: (tinynn F, its backward, tinynn module, torch F, options beside reduction)
LOSSES = {
    "mse": (F.mse_loss, F.mse_loss_backward, nn.MSELoss, TF.mse_loss, {}),
    "l1": (F.l1_loss, F.l1_loss_backward, nn.L1Loss, TF.l1_loss, {}),
    "smooth_l1": (F.smooth_l1_loss, F.smooth_l1_loss_backward, nn.SmoothL1Loss, TF.smooth_l1_loss, {"beta": 0.7}),
    "huber": (F.huber_loss, F.huber_loss_backward, nn.HuberLoss, TF.huber_loss, {"delta": 0.7}),
}
REDUCTIONS = ["mean", "sum", "none"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(11)


def _torch_value_and_grad(torch_fn, x, target, grad_output, **kwargs):
    """torch's loss and dloss/dinput (the input may broadcast against the target)."""
    x_t = torch_tensor(x, True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the broadcast warning, compared on its own below
        loss = torch_fn(x_t, torch_tensor(target), **kwargs)
    loss.backward(torch_tensor(grad_output))
    return loss, x_t.grad


def _ours(name, x, target, grad_output, **kwargs):
    """tinynn's F loss and backward, and the module's, as two (loss, grad) pairs."""
    loss_fn, backward_fn, module_class, _, _ = LOSSES[name]
    module = module_class(**kwargs)
    functional = loss_fn(x, target, **kwargs), backward_fn(grad_output, x, target, **kwargs)
    return functional, (module(x, target), module.backward(grad_output))


# ------------------------------------------------------------------------------ against torch
@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_loss_and_grad_match_torch(rng, name, reduction, dtype):
    x = random_array(rng, (4, 3), dtype=dtype) * 2
    target = random_array(rng, (4, 3), dtype=dtype)
    target[0, 0] = x[0, 0]  # a tie: d = 0
    grad_output = rng.uniform(-2, 2, (4, 3) if reduction == "none" else ()).astype(dtype)
    kwargs = dict(reduction=reduction, **LOSSES[name][4])
    loss_t, grad_t = _torch_value_and_grad(LOSSES[name][3], x, target, grad_output, **kwargs)
    tolerance = dict(rtol=TORCH_F64_RTOL) if dtype == np.float64 else dict(rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL)
    for label, (loss, grad) in zip(["F", "module"], _ours(name, x, target, grad_output, **kwargs)):
        assert np.asarray(loss).dtype == grad.dtype == dtype, label
        assert_close(loss, loss_t, name=f"{label} loss", **tolerance)
        assert_close(grad, grad_t, name=f"{label} grad", **tolerance)


@pytest.mark.parametrize("name", LOSSES)
def test_module_gradient_matches_finite_differences_away_from_the_kinks(rng, name):
    x = rng.standard_normal((3, 4))
    target = x + rng.choice([-1.0, 1.0], x.shape) * rng.uniform(0.1, 0.5, x.shape)  # 0.1 < |d| < 0.5
    target[0] = x[0] + rng.choice([-1.0, 1.0], 4) * rng.uniform(0.9, 2.0, 4)  # beyond beta = delta = 0.7
    for reduction in REDUCTIONS:
        assert gradcheck(LOSSES[name][2](reduction=reduction, **LOSSES[name][4]), x, target)


@pytest.mark.parametrize("name", LOSSES)
def test_target_of_another_shape_warns_with_torch_words_and_broadcasts(rng, name):
    x, target = rng.standard_normal((3, 1)), rng.standard_normal(3)
    with pytest.warns(UserWarning) as ours:
        LOSSES[name][0](x, target)
    with pytest.warns(UserWarning) as theirs:
        LOSSES[name][3](torch_tensor(x), torch_tensor(target))
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    assert "Using a target size (torch.Size([3])) that is different to the input size (torch.Size([3, 1]))" in str(
        ours[0].message)
    for reduction in REDUCTIONS:  # the (3, 3) losses, and the input's gradient summed back to (3, 1)
        grad_output = rng.uniform(-1, 1, (3, 3) if reduction == "none" else ())
        kwargs = dict(reduction=reduction, **LOSSES[name][4])
        loss_t, grad_t = _torch_value_and_grad(LOSSES[name][3], x, target, grad_output, **kwargs)
        with pytest.warns(UserWarning):
            functional, module = _ours(name, x, target, grad_output, **kwargs)
        for label, (loss, grad) in zip(["F", "module"], [functional, module]):
            assert_close(loss, loss_t, rtol=TORCH_F64_RTOL, name=f"{label} loss")
            assert_close(grad, grad_t, rtol=TORCH_F64_RTOL, name=f"{label} grad")


def test_same_shapes_do_not_warn_and_backward_never_warns(rng):
    x = rng.standard_normal((2, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        F.mse_loss(x, x + 1)
        F.mse_loss_backward(1.0, x, x[0])  # the warning belongs to the forward, as in torch


def test_unbroadcastable_shapes_raise_torch_error():
    with pytest.raises(RuntimeError, match=r"The size of tensor a \(3\) must match the size of tensor b \(4\) at "
                                           r"non-singleton dimension 1"), pytest.warns(UserWarning):
        F.l1_loss(np.zeros((2, 3)), np.zeros((2, 4)))


# ------------------------------------------------------------------------------ kinks, ties and special values
def test_l1_gradient_at_a_tie_and_at_nan_is_zero_as_torch_sign():
    x = np.array([1.0, 2.0, np.nan, -1.0])
    target = np.array([1.0, 1.0, 0.0, 0.0])
    _, grad_t = _torch_value_and_grad(TF.l1_loss, x, target, np.array(1.0), reduction="sum")
    np.testing.assert_array_equal(grad_t.numpy(), [0.0, 1.0, 0.0, -1.0])
    np.testing.assert_array_equal(F.l1_loss_backward(1.0, x, target, "sum"), grad_t.numpy())


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_smooth_l1_with_beta_zero_is_l1_including_its_zero_gradient_at_ties(rng, reduction):
    x = np.array([0.5, -1.0, 2.0, 2.0])
    target = np.array([0.5, 1.0, 2.0, 1.0])  # two ties, where the smooth_l1 kernel would give +-1
    grad_output = rng.uniform(-1, 1, 4) if reduction == "none" else np.array(0.8)
    loss_t, grad_t = _torch_value_and_grad(TF.smooth_l1_loss, x, target, grad_output, reduction=reduction, beta=0.0)
    (loss, grad), (module_loss, module_grad) = _ours("smooth_l1", x, target, grad_output, reduction=reduction,
                                                     beta=0.0)
    np.testing.assert_array_equal(grad_t.numpy()[[0, 2]], [0.0, 0.0])
    for actual, expected in [(loss, loss_t), (grad, grad_t), (module_loss, loss_t), (module_grad, grad_t)]:
        assert_close(actual, expected, rtol=TORCH_F64_RTOL)


@pytest.mark.parametrize("name", ["smooth_l1", "huber"])
@pytest.mark.parametrize("kink", [0.75, 0.1])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exactly_at_the_kink_matches_torch_bit_for_bit(name, kink, dtype):
    # d = kink, -kink, -kink exactly, then a tie and a point inside. At |d| == beta torch's smooth_l1
    # takes the linear piece (forward) and the sign (backward): for beta = 0.1 the two forward
    # pieces round differently, so the branch shows. huber's pieces agree bit for bit there
    # (halving is exact: 0.5 d d == d (d - 0.5 d), and g d == g delta), so its branch cannot show.
    # float32 gets float32(0.1) itself: for a kink float32 cannot hold, torch's loops use the double
    # (scalar loop) or its float rounding (vectorized loop), which differ by an ulp.
    kink = kink if dtype == np.float64 else float(np.float32(kink))
    x = np.array([kink, -kink, 0.0, 2 * kink, 0.5 * kink], dtype=dtype)
    target = np.array([0.0, 0.0, kink, 2 * kink, 0.0], dtype=dtype)
    option = {"beta": kink} if name == "smooth_l1" else {"delta": kink}
    grad_output = np.array([0.3, -1.1, 0.7, 2.0, 1.5], dtype=dtype)
    loss_t, grad_t = _torch_value_and_grad(LOSSES[name][3], x, target, grad_output, reduction="none", **option)
    (loss, grad), _ = _ours(name, x, target, grad_output, reduction="none", **option)
    np.testing.assert_array_equal(loss, loss_t.detach().numpy())
    np.testing.assert_array_equal(grad, grad_t.numpy())


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_empty_input_mean_is_nan_sum_is_zero_as_torch(name, dtype):
    loss_fn, backward_fn = LOSSES[name][:2]
    x = np.zeros((0, 3), dtype)
    assert np.isnan(loss_fn(x, x)) and torch.isnan(LOSSES[name][3](torch_tensor(x), torch_tensor(x)))
    assert loss_fn(x, x, reduction="sum") == 0.0
    assert loss_fn(x, x, reduction="none").shape == (0, 3)
    assert backward_fn(1.0, x, x).shape == (0, 3)


@pytest.mark.parametrize("name", LOSSES)
def test_zero_dimensional_inputs(name):
    x, target = np.array(1.5), np.array(-0.25)
    loss_t, grad_t = _torch_value_and_grad(LOSSES[name][3], x, target, np.array(0.5), **LOSSES[name][4])
    (loss, grad), (module_loss, module_grad) = _ours(name, x, target, np.array(0.5), **LOSSES[name][4])
    assert np.ndim(loss) == 0 and grad.shape == ()
    for actual, expected in [(loss, loss_t), (grad, grad_t), (module_loss, loss_t), (module_grad, grad_t)]:
        assert_close(actual, expected, rtol=TORCH_F64_RTOL)


def test_infinities_give_torch_nans_without_numpy_warnings():
    x = np.array([np.inf, np.inf, -np.inf, 1.0])
    target = np.array([np.inf, 0.0, 1.0, np.nan])
    for name in LOSSES:  # RuntimeWarnings from tinynn are errors in this suite (pyproject.toml)
        loss_t, grad_t = _torch_value_and_grad(LOSSES[name][3], x, target, np.ones(4), reduction="none",
                                               **LOSSES[name][4])
        (loss, grad), _ = _ours(name, x, target, np.ones(4), reduction="none", **LOSSES[name][4])
        assert_close(loss, loss_t, rtol=TORCH_F64_RTOL, name=f"{name} loss")
        assert_close(grad, grad_t, rtol=TORCH_F64_RTOL, name=f"{name} grad")


# ------------------------------------------------------------------------------ modules
def test_defaults_and_keyword_only_arguments_follow_torch():
    assert nn.MSELoss().reduction == nn.L1Loss().reduction == "mean"
    assert (nn.SmoothL1Loss().beta, nn.HuberLoss().delta) == (1.0, 1.0)
    assert nn.HuberLoss("sum", 2.0).delta == 2.0  # torch's HuberLoss has no deprecated arguments before these
    with pytest.raises(TypeError):
        nn.MSELoss("sum")  # torch's first positional arguments are the deprecated size_average and reduce
    with pytest.raises(TypeError):
        nn.SmoothL1Loss("sum", 2.0)


@pytest.mark.parametrize("name", LOSSES)
def test_repr_and_empty_state_dict_match_torch(name):
    module_class = LOSSES[name][2]
    torch_class = getattr(torch.nn, module_class.__name__)
    kwargs = dict(reduction="sum", **LOSSES[name][4])
    assert repr(module_class(**kwargs)) == repr(torch_class(**kwargs)) == f"{module_class.__name__}()"
    assert list(module_class().state_dict()) == list(torch_class().state_dict()) == []


def test_module_backward_protocol():
    criterion = nn.HuberLoss(reduction="none")
    with pytest.raises(RuntimeError, match="run a forward first"):
        criterion.backward()
    x = np.zeros((2, 2), np.float32)
    criterion(x, x + 1)
    with pytest.raises(RuntimeError, match=r"shape \(2, 2\), got \(\)"):
        criterion.backward()  # 'none' needs one upstream gradient per element
    criterion(x, x + 1)
    assert criterion.backward(needs_input_grad=False) is None
    with tinynn.no_grad():
        criterion(x, x)
    with pytest.raises(RuntimeError, match="no_grad"):
        criterion.backward()


def test_module_default_backward_is_dloss_dinput():
    x, target = np.array([1.0, 2.0, 4.0]), np.array([0.0, 2.0, 1.0])
    criterion = nn.MSELoss()
    criterion(x, target)
    np.testing.assert_allclose(criterion.backward(), 2 * (x - target) / 3)


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("name", LOSSES)
def test_argument_errors(name):
    loss_fn = LOSSES[name][0]
    x = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"^avg is not a valid value for reduction \(expected 'none', 'mean' or "
                                         r"'sum'\)$"):
        loss_fn(x, x, reduction="avg")
    with pytest.raises(TypeError, match="expected a floating-point input, got Long"):
        loss_fn(np.zeros(3, np.int64), np.zeros(3, np.int64))
    with pytest.raises(RuntimeError, match=r"target dtype float64 differs from input dtype float32.*"
                                           r"astype\(np\.float32"):
        loss_fn(x, np.zeros(3))
    with pytest.raises(TypeError, match="argument 'target' must be a NumPy array, not list"):
        loss_fn(x, [0.0, 0.0, 0.0])


def test_beta_and_delta_checks_use_torch_words():
    x = np.zeros(3)
    with pytest.raises(RuntimeError, match=r"smooth_l1_loss does not support negative values for beta\."):
        F.smooth_l1_loss(x, x, beta=-0.5)
    for delta in (0.0, -1.0):
        with pytest.raises(RuntimeError, match=r"huber_loss does not support non-positive values for delta\."):
            F.huber_loss(x, x, delta=delta)
    with pytest.raises(TypeError, match="delta must be a float or int, got: <class 'str'>"):
        nn.HuberLoss(delta="1")
