"""binary_cross_entropy (plain and with logits) and kl_div: torch's defaults, buffers and state_dict,
clamps, stability at huge logits, warnings and errors; finite differences.

The random comparisons with torch live in tests/test_properties_losses.py.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

from tests.helpers import torch_tensor
from tinynn import nn
from tinynn.nn import functional as F
from tinynn.testing import assert_close, gradcheck
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_RTOL

REDUCTIONS = ["mean", "sum", "none"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(13)


def _torch_value_and_grad(torch_fn, x, target, grad_output, **kwargs):
    x_t = torch_tensor(x, True)
    kwargs = {key: torch_tensor(value) if isinstance(value, np.ndarray) else value for key, value in kwargs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kl_div's 'mean' warning, compared on its own below
        loss = torch_fn(x_t, torch_tensor(target), **kwargs)
    loss.backward(torch_tensor(grad_output))
    return loss, x_t.grad


def _check_against_torch(ours, theirs, dtype=np.float64):
    tolerance = dict(rtol=TORCH_F64_RTOL) if dtype == np.float64 else dict(rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL)
    for label, actual, expected in zip(["loss", "grad"], ours, theirs):
        assert np.asarray(actual).dtype == dtype, label
        assert_close(actual, expected, name=label, **tolerance)


def _upstream(rng, reduction, shape, dtype=np.float64):
    return rng.uniform(-2, 2, shape if reduction == "none" else ()).astype(dtype)


# ------------------------------------------------------------------------------ binary_cross_entropy
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("weight_shape", [None, (3,), (4, 1), (4, 3)])
def test_bce_functional_and_module_match_torch(rng, reduction, dtype, weight_shape):
    p = rng.uniform(0, 1, (4, 3)).astype(dtype)
    p[0, :] = [0.0, 1.0, 0.5]  # the clamped logs and the 1e-12 floor of the gradient's denominator
    target = rng.choice([0.0, 0.3, 1.0], (4, 3)).astype(dtype)
    weight = None if weight_shape is None else rng.uniform(-1, 2, weight_shape).astype(dtype)
    grad_output = _upstream(rng, reduction, (4, 3), dtype)
    expected = _torch_value_and_grad(TF.binary_cross_entropy, p, target, grad_output, weight=weight,
                                     reduction=reduction)
    _check_against_torch((F.binary_cross_entropy(p, target, weight, reduction=reduction),
                          F.binary_cross_entropy_backward(grad_output, p, target, weight, reduction)), expected, dtype)
    module = nn.BCELoss(weight, reduction=reduction)
    _check_against_torch((module(p, target), module.backward(grad_output)), expected, dtype)


def test_bce_clamps_each_log_at_minus_100_as_torch():
    p, target = np.array([0.0, 1.0, 0.0, 1.0]), np.array([0.0, 1.0, 1.0, 0.0])
    loss_t, grad_t = _torch_value_and_grad(TF.binary_cross_entropy, p, target, np.ones(4), reduction="none")
    np.testing.assert_array_equal(F.binary_cross_entropy(p, target, reduction="none"), [0.0, 0.0, 100.0, 100.0])
    np.testing.assert_array_equal(F.binary_cross_entropy(p, target, reduction="none"), loss_t.detach().numpy())
    np.testing.assert_array_equal(F.binary_cross_entropy_backward(np.ones(4), p, target, reduction="none"),
                                  grad_t.numpy())  # (p - t) / 1e-12 with aten's float 1e-12: +-1.000000004e12


def test_bce_module_gradient_matches_finite_differences(rng):
    p, target = rng.uniform(0.1, 0.9, (3, 4)), rng.uniform(0, 1, (3, 4))
    for reduction in REDUCTIONS:
        assert gradcheck(nn.BCELoss(rng.uniform(0.5, 2, 4), reduction=reduction), p, target)


def test_bce_argument_errors_follow_torch():
    p = np.full(3, 0.5)
    for bad in (1.5, -0.1, np.nan):
        with pytest.raises(RuntimeError, match=r"^all elements of input should be between 0 and 1$"):
            F.binary_cross_entropy(np.array([0.5, bad]), np.array([0.5, 0.5]))
        with pytest.raises(RuntimeError, match=r"^all elements of target should be between 0 and 1$"):
            F.binary_cross_entropy(np.array([0.5, 0.5]), np.array([0.5, bad]))
    with pytest.raises(ValueError, match=r"Using a target size \(torch.Size\(\[3, 1\]\)\) that is different to the "
                                         r"input size \(torch.Size\(\[3\]\)\) is deprecated. Please ensure they have "
                                         r"the same size."):
        F.binary_cross_entropy(p, p[:, None])
    with pytest.raises(RuntimeError, match=r"output with shape \[3\] doesn't match the broadcast shape \[2, 3\]"):
        F.binary_cross_entropy(p, p, np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"The size of tensor a \(3\) must match the size of tensor b \(2\)"):
        F.binary_cross_entropy(p, p, np.ones(2))
    with pytest.raises(RuntimeError, match=r"expected scalar type Float but found Double.*weight\.astype"):
        F.binary_cross_entropy(p.astype(np.float32), p.astype(np.float32), np.ones(3))
    with pytest.raises(ValueError, match=r"^avg is not a valid value for reduction"):
        F.binary_cross_entropy(p, p, reduction="avg")


# ------------------------------------------------------------------------------ with logits
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("weight_shape", "pos_weight_shape"), [(None, None), ((3,), None), (None, (3,)),
                                                                ((4, 1), (4, 3)), ((), (1, 3))])
def test_bce_with_logits_functional_and_module_match_torch(rng, reduction, dtype, weight_shape, pos_weight_shape):
    x = (rng.standard_normal((4, 3)) * 3).astype(dtype)
    target = rng.choice([0.0, 0.25, 1.0], (4, 3)).astype(dtype)
    weight = None if weight_shape is None else rng.uniform(-1, 2, weight_shape).astype(dtype)
    pos_weight = None if pos_weight_shape is None else rng.uniform(0, 3, pos_weight_shape).astype(dtype)
    grad_output = _upstream(rng, reduction, (4, 3), dtype)
    expected = _torch_value_and_grad(TF.binary_cross_entropy_with_logits, x, target, grad_output, weight=weight,
                                     reduction=reduction, pos_weight=pos_weight)
    kwargs = dict(reduction=reduction, pos_weight=pos_weight)
    _check_against_torch((F.binary_cross_entropy_with_logits(x, target, weight, **kwargs),
                          F.binary_cross_entropy_with_logits_backward(grad_output, x, target, weight, **kwargs)),
                         expected, dtype)
    module = nn.BCEWithLogitsLoss(weight, **kwargs)
    _check_against_torch((module(x, target), module.backward(grad_output)), expected, dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_bce_with_logits_is_stable_at_huge_logits(dtype):
    x = np.array([1e3, -1e3, 1.5e3, -1.5e3, 800.0, -800.0], dtype=dtype)
    target = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.5], dtype=dtype)
    pos_weight = np.array([2.0, 2.0, 0.5, 0.5, 3.0, 3.0], dtype=dtype)
    grad_output = np.linspace(-1, 1, 6).astype(dtype)
    for kwargs in ({}, {"pos_weight": pos_weight}):
        loss_t, grad_t = _torch_value_and_grad(TF.binary_cross_entropy_with_logits, x, target, grad_output,
                                               reduction="none", **kwargs)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no overflow in exp, no inf - inf
            loss = F.binary_cross_entropy_with_logits(x, target, reduction="none", **kwargs)
            grad = F.binary_cross_entropy_with_logits_backward(grad_output, x, target, reduction="none", **kwargs)
        assert np.isfinite(loss).all() and np.isfinite(grad).all()
        _check_against_torch((loss, grad), (loss_t, grad_t), dtype)


def test_bce_with_logits_module_gradient_matches_finite_differences(rng):
    x, target = rng.standard_normal((3, 4)) * 2, rng.uniform(0, 1, (3, 4))
    for reduction in REDUCTIONS:
        module = nn.BCEWithLogitsLoss(rng.uniform(0.5, 2, (3, 1)), reduction=reduction,
                                      pos_weight=rng.uniform(0.5, 3, 4))
        assert gradcheck(module, x, target)


def test_bce_with_logits_argument_errors_follow_torch():
    x = np.zeros(3)
    with pytest.raises(ValueError, match=r"^Target size \(torch.Size\(\[3, 1\]\)\) must be the same as input size "
                                         r"\(torch.Size\(\[3\]\)\)$"):
        F.binary_cross_entropy_with_logits(x, x[:, None])
    with pytest.raises(RuntimeError, match=r"output with shape \[3\] doesn't match the broadcast shape \[2, 3\]"):
        F.binary_cross_entropy_with_logits(x, x, pos_weight=np.ones((2, 3)))
    with pytest.raises(RuntimeError, match=r"found Double.*pos_weight\.astype\(np\.float32\)"):
        F.binary_cross_entropy_with_logits(x.astype(np.float32), x.astype(np.float32), pos_weight=np.ones(3))


# ------------------------------------------------------------------------------ kl_div
@pytest.mark.parametrize("reduction", ["batchmean", *REDUCTIONS])
@pytest.mark.parametrize("log_target", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kl_div_functional_and_module_match_torch(rng, reduction, log_target, dtype):
    log_q = np.log(rng.dirichlet(np.ones(5), 4)).astype(dtype)
    p = rng.dirichlet(np.ones(5), 4)
    p[0, :2] = 0.0  # xlogy: 0 log 0 = 0
    target = (np.log(p + 0.1) if log_target else p).astype(dtype)  # log targets: any values
    grad_output = _upstream(rng, reduction, (4, 5), dtype)
    kwargs = dict(reduction=reduction, log_target=log_target)
    expected = _torch_value_and_grad(TF.kl_div, log_q, target, grad_output, **kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'mean' warns; see the test below
        _check_against_torch((F.kl_div(log_q, target, **kwargs), F.kl_div_backward(grad_output, log_q, target,
                                                                                    **kwargs)), expected, dtype)
        module = nn.KLDivLoss(**kwargs)
        _check_against_torch((module(log_q, target), module.backward(grad_output)), expected, dtype)


def test_kl_div_batchmean_divides_by_the_batch_and_mean_by_every_element(rng):
    log_q, p = np.log(rng.dirichlet(np.ones(5), 4)), rng.dirichlet(np.ones(5), 4)
    total = F.kl_div(log_q, p, reduction="sum")
    assert_close(F.kl_div(log_q, p, reduction="batchmean"), total / 4, rtol=1e-15)
    with pytest.warns(UserWarning):
        assert_close(F.kl_div(log_q, p), total / 20, rtol=1e-15)
    assert_close(F.kl_div(np.array(-1.0), np.array(0.5), reduction="batchmean"),  # 0-d: not divided
                 TF.kl_div(torch.tensor(-1.0, dtype=torch.float64), torch.tensor(0.5, dtype=torch.float64),
                           reduction="batchmean"), rtol=TORCH_F64_RTOL)


def test_kl_div_mean_warns_with_torch_words_and_the_other_reductions_do_not(rng):
    x, target = np.zeros(3), np.full(3, 1 / 3)
    with pytest.warns(UserWarning) as ours:
        nn.KLDivLoss()(x, target)
    with pytest.warns(UserWarning) as theirs:
        torch.nn.KLDivLoss()(torch_tensor(x), torch_tensor(target))
    assert [str(w.message) for w in ours] == [str(w.message) for w in theirs]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for reduction in ("batchmean", "sum", "none"):
            F.kl_div(x, target, reduction=reduction)
        F.kl_div_backward(1.0, x, target)  # the warning belongs to the forward


def test_kl_div_broadcasts_silently_as_torch_and_sums_the_gradient_back(rng):
    log_q, target = np.log(rng.dirichlet(np.ones(3), 1)), rng.dirichlet(np.ones(3), 4)  # (1, 3) against (4, 3)
    for reduction in ("batchmean", "sum", "none"):
        grad_output = _upstream(rng, reduction, (4, 3))
        expected = _torch_value_and_grad(TF.kl_div, log_q, target, grad_output, reduction=reduction)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            _check_against_torch((F.kl_div(log_q, target, reduction=reduction),
                                  F.kl_div_backward(grad_output, log_q, target, reduction)), expected)
    with pytest.raises(RuntimeError, match=r"The size of tensor a \(4\) must match the size of tensor b \(3\)"):
        F.kl_div(np.zeros(3), np.zeros(4), reduction="sum")  # torch names the target "a"


def test_kl_div_special_targets_and_empty_batches_match_torch():
    x = np.array([-np.inf, 0.2, -1.0, 0.5])
    target = np.array([0.0, 0.0, -1.0, np.nan])  # 0 * -inf = NaN, 0 log 0 = 0, log of a negative, NaN
    expected = _torch_value_and_grad(TF.kl_div, x, target, np.ones(4), reduction="none")
    _check_against_torch((F.kl_div(x, target, reduction="none"), F.kl_div_backward(np.ones(4), x, target, "none")),
                         expected)
    empty = np.zeros((0, 3))
    assert np.isnan(F.kl_div(empty, empty, reduction="batchmean"))
    assert F.kl_div(empty, empty, reduction="sum") == 0.0
    assert F.kl_div_backward(1.0, empty, empty, "batchmean").shape == (0, 3)


def test_kl_div_module_gradient_matches_finite_differences(rng):
    log_q, p = np.log(rng.dirichlet(np.ones(4), 3)), rng.dirichlet(np.ones(4), 3)
    for reduction in ("batchmean", "sum", "none"):
        for log_target in (False, True):
            assert gradcheck(nn.KLDivLoss(reduction=reduction, log_target=log_target), log_q,
                             np.log(p) if log_target else p)


def test_kl_div_bad_reduction_lists_batchmean():
    with pytest.raises(ValueError, match=r"^avg is not a valid value for reduction \(expected 'none', 'batchmean', "
                                         r"'sum' or 'mean'\)$"):
        F.kl_div(np.zeros(3), np.zeros(3), reduction="avg")


# ------------------------------------------------------------------------------ modules: defaults, buffers
def test_defaults_and_keyword_only_arguments_follow_torch():
    assert nn.BCELoss().weight is None and nn.BCELoss().reduction == "mean"
    module = nn.BCEWithLogitsLoss()
    assert module.weight is None and module.pos_weight is None and module.reduction == "mean"
    assert nn.KLDivLoss().reduction == "mean" and nn.KLDivLoss().log_target is False
    with pytest.raises(TypeError):
        nn.BCELoss(None, "sum")  # torch: (weight, size_average, reduce, reduction)
    with pytest.raises(TypeError):
        nn.KLDivLoss("sum")


@pytest.mark.parametrize("name", ["BCELoss", "BCEWithLogitsLoss", "KLDivLoss"])
def test_repr_matches_torch(name):
    assert repr(getattr(nn, name)(reduction="sum")) == repr(getattr(torch.nn, name)(reduction="sum")) == f"{name}()"


def test_weights_are_buffers_with_torch_state_dict_keys_and_load_from_torch(rng):
    weight, pos_weight = rng.uniform(0.5, 2, 3), rng.uniform(0.5, 2, 3)
    cases = [
        (nn.BCELoss(weight.copy()), torch.nn.BCELoss(torch_tensor(weight * 2))),
        (nn.BCEWithLogitsLoss(weight.copy(), pos_weight=pos_weight.copy()),
         torch.nn.BCEWithLogitsLoss(torch_tensor(weight * 2), pos_weight=torch_tensor(pos_weight * 2))),
        (nn.BCEWithLogitsLoss(pos_weight=pos_weight.copy()),
         torch.nn.BCEWithLogitsLoss(pos_weight=torch_tensor(pos_weight * 2))),
        (nn.BCELoss(), torch.nn.BCELoss()),
    ]
    for module, torch_module in cases:
        assert list(module.state_dict()) == list(torch_module.state_dict())
        assert not list(module.parameters())  # buffers, not parameters: no gradient, no optimizer step
        module.load_state_dict(torch_module.state_dict())
        for key, value in torch_module.state_dict().items():
            np.testing.assert_array_equal(getattr(module, key), value.numpy())
    module = nn.BCEWithLogitsLoss(weight.astype(np.float32)).double()  # buffers follow the module's dtype
    assert module.weight.dtype == np.float64


def test_module_uses_the_weights_of_its_forward(rng):
    p, target = rng.uniform(0.1, 0.9, 3), rng.uniform(0, 1, 3)
    module = nn.BCELoss(np.array([1.0, 2.0, 3.0]), reduction="sum")
    module(p, target)
    module.weight = np.zeros(3)  # replaced between forward and backward: the saved forward still holds
    np.testing.assert_allclose(module.backward(), F.binary_cross_entropy_backward(1.0, p, target,
                                                                                  np.array([1.0, 2.0, 3.0]), "sum"))
