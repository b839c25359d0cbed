"""nll_loss / cross_entropy, their backwards and modules: finite differences, torch parity, dtype, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import tinynn
from tests.helpers import assert_close, check_grad, random_array, random_grad, torch_tensor
from tinynn.nn import CrossEntropyLoss, NLLLoss
from tinynn.nn.functional import (
    cross_entropy,
    cross_entropy_backward,
    log_softmax,
    nll_loss,
    nll_loss_backward,
)
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_RTOL

C = 5
# (input shape, target shape): batched, unbatched (C,) with a 0-d target, and (N, C, d1, d2).
SHAPES = [((6, C), (6,)), ((C,), ()), ((3, C, 2, 2), (3, 2, 2))]
REDUCTIONS = ["mean", "sum", "none"]


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def _class_targets(rng, target_shape, ignore_index=None):
    """Random class indices; with ``ignore_index`` it appears in the targets (not everywhere)."""
    target = rng.integers(0, C, size=target_shape)
    if ignore_index is not None:
        flat = target.reshape(-1)
        if flat.size > 1:
            flat[1] = ignore_index
    return np.asarray(target, dtype=np.int64)


def _upstream(rng, reduction, sample_shape, dtype=np.float64):
    """A random dL/dloss: a scalar for 'mean'/'sum', one per sample for 'none'."""
    return random_grad(rng, sample_shape if reduction == "none" else (), dtype=dtype)


def _torch_loss(fn, x, target, grad_output, **kwargs):
    """torch's loss and dloss/dinput via autograd's backward(grad_output)."""
    xt = torch_tensor(x, True)
    if kwargs.get("weight") is not None:
        kwargs["weight"] = torch_tensor(kwargs["weight"])
    loss = fn(xt, torch.tensor(target), **kwargs)
    loss.backward(torch_tensor(grad_output))
    return loss, xt.grad


# ------------------------------------------------------------------------------ nll_loss
@pytest.mark.parametrize(("input_shape", "target_shape"), SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 3])
def test_nll_loss_matches_torch_float64_and_finite_differences(rng, input_shape, target_shape, reduction,
                                                               use_weight, ignore_index):
    x = random_array(rng, input_shape)
    target = _class_targets(rng, target_shape, ignore_index if ignore_index != -100 else None)
    weight = rng.uniform(0.2, 2.0, C) if use_weight else None
    grad_output = _upstream(rng, reduction, target_shape)
    kwargs = dict(weight=weight, ignore_index=ignore_index, reduction=reduction)
    loss_t, grad_t = _torch_loss(F.nll_loss, x, target, grad_output, **kwargs)
    loss = nll_loss(x, target, **kwargs)
    grad = nll_loss_backward(grad_output, x, target, weight, ignore_index, reduction)
    assert_close(loss, loss_t, rtol=TORCH_F64_RTOL, name="loss")
    assert_close(grad, grad_t, rtol=TORCH_F64_RTOL, name="grad")
    check_grad(lambda v: nll_loss(v, target, **kwargs), x, grad_output, grad)


def test_nll_loss_float32_matches_torch_and_keeps_float32(rng):
    x = random_array(rng, (16, C), dtype=np.float32)
    target = _class_targets(rng, (16,), ignore_index=2)
    weight = rng.uniform(0.5, 1.5, C).astype(np.float32)
    for reduction in REDUCTIONS:
        grad_output = _upstream(rng, reduction, (16,), dtype=np.float32)
        kwargs = dict(weight=weight, ignore_index=2, reduction=reduction)
        loss_t, grad_t = _torch_loss(F.nll_loss, x, target, grad_output, **kwargs)
        loss = nll_loss(x, target, **kwargs)
        grad = nll_loss_backward(grad_output, x, target, weight, 2, reduction)
        assert loss.dtype == grad.dtype == np.float32
        assert_close(loss, loss_t, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name="loss")
        assert_close(grad, grad_t, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name="grad")


def test_nll_loss_uint8_targets_work_as_torch_byte_targets(rng):
    x = random_array(rng, (4, C))
    target = np.array([0, 255, 4, 2], dtype=np.uint8)
    expected = F.nll_loss(torch_tensor(x), torch.tensor(target), ignore_index=255)
    assert_close(nll_loss(x, target, ignore_index=255), expected, rtol=TORCH_F64_RTOL, name="loss")


# ------------------------------------------------------------------------------ cross_entropy, class indices
@pytest.mark.parametrize(("input_shape", "target_shape"), SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 3])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.3])
def test_cross_entropy_class_indices_match_torch_float64_and_finite_differences(
        rng, input_shape, target_shape, reduction, use_weight, ignore_index, label_smoothing):
    x = random_array(rng, input_shape) * 2
    target = _class_targets(rng, target_shape, ignore_index if ignore_index != -100 else None)
    weight = rng.uniform(0.2, 2.0, C) if use_weight else None
    grad_output = _upstream(rng, reduction, target_shape)
    kwargs = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=label_smoothing)
    loss_t, grad_t = _torch_loss(F.cross_entropy, x, target, grad_output, **kwargs)
    loss = cross_entropy(x, target, **kwargs)
    grad = cross_entropy_backward(grad_output, x, target, **kwargs)
    assert_close(loss, loss_t, rtol=TORCH_F64_RTOL, name="loss")
    assert_close(grad, grad_t, rtol=TORCH_F64_RTOL, name="grad")
    check_grad(lambda v: cross_entropy(v, target, **kwargs), x, grad_output, grad)


@pytest.mark.parametrize(("input_shape", "target_shape"), SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("use_weight", [False, True])
@pytest.mark.parametrize("label_smoothing", [0.0, 0.25])
def test_cross_entropy_probability_targets_match_torch_float64_and_finite_differences(
        rng, input_shape, target_shape, reduction, use_weight, label_smoothing):
    x = random_array(rng, input_shape) * 2
    target = rng.dirichlet(np.ones(C), size=target_shape)
    target = np.moveaxis(target, -1, 1) if len(input_shape) > 1 else target  # classes on dim 1
    weight = rng.uniform(0.2, 2.0, C) if use_weight else None
    grad_output = _upstream(rng, reduction, target_shape)
    kwargs = dict(weight=weight, reduction=reduction, label_smoothing=label_smoothing)
    loss_t, grad_t = _torch_loss(F.cross_entropy, x, target, grad_output, **kwargs)
    loss = cross_entropy(x, target, **kwargs)
    grad = cross_entropy_backward(grad_output, x, target, **kwargs)
    assert_close(loss, loss_t, rtol=TORCH_F64_RTOL, name="loss")
    assert_close(grad, grad_t, rtol=TORCH_F64_RTOL, name="grad")
    check_grad(lambda v: cross_entropy(v, target, **kwargs), x, grad_output, grad)


@pytest.mark.parametrize("variant", ["plain", "weight+ignore+smoothing", "probabilities"])
def test_cross_entropy_float32_matches_torch_and_keeps_float32(rng, variant):
    x = random_array(rng, (64, 10), dtype=np.float32) * 3
    kwargs: dict = {}
    if variant == "probabilities":
        target = rng.dirichlet(np.ones(10), size=64).astype(np.float32)
    else:
        target = rng.integers(0, 10, 64)
    if variant == "weight+ignore+smoothing":
        target[::5] = 4
        kwargs = dict(weight=rng.uniform(0.5, 2, 10).astype(np.float32), ignore_index=4, label_smoothing=0.1)
    for reduction in REDUCTIONS:
        grad_output = _upstream(rng, reduction, (64,), dtype=np.float32)
        loss_t, grad_t = _torch_loss(F.cross_entropy, x, target, grad_output, reduction=reduction, **kwargs)
        loss = cross_entropy(x, target, reduction=reduction, **kwargs)
        grad = cross_entropy_backward(grad_output, x, target, reduction=reduction, **kwargs)
        assert loss.dtype == grad.dtype == np.float32, reduction
        assert_close(loss, loss_t, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name=f"loss {reduction}")
        assert_close(grad, grad_t, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name=f"grad {reduction}")


def test_cross_entropy_is_stable_for_huge_logits():
    x = np.array([[1000.0, -1000.0, 0.0], [-800.0, -900.0, -1000.0]], dtype=np.float32)
    target = np.array([0, 2])
    loss_t, grad_t = _torch_loss(F.cross_entropy, x, target, np.float32(1.0))
    assert np.isfinite(cross_entropy(x, target))
    assert_close(cross_entropy(x, target), loss_t, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name="loss")
    assert_close(cross_entropy_backward(1.0, x, target), grad_t, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL,
                 name="grad")


def test_cross_entropy_backward_accepts_the_saved_log_probs(rng):
    x = random_array(rng, (5, C))
    target = _class_targets(rng, (5,), ignore_index=1)
    kwargs = dict(weight=rng.uniform(0.5, 2, C), ignore_index=1, label_smoothing=0.2)
    expected = cross_entropy_backward(0.7, x, target, **kwargs)
    actual = cross_entropy_backward(0.7, x, target, **kwargs, log_probs=log_softmax(x, 1))
    assert_close(actual, expected, rtol=TORCH_F64_RTOL, name="grad")


def test_cross_entropy_negative_label_smoothing_means_none_as_in_torch(rng):
    x = random_array(rng, (4, C))
    target = _class_targets(rng, (4,))
    loss_t, _ = _torch_loss(F.cross_entropy, x, target, np.array(1.0), label_smoothing=-0.1)
    assert_close(cross_entropy(x, target, label_smoothing=-0.1), loss_t, rtol=TORCH_F64_RTOL, name="loss")


# ------------------------------------------------------------------------------ edge cases
@pytest.mark.parametrize("fn", [nll_loss, cross_entropy])
@pytest.mark.parametrize("use_weight", [False, True])
def test_all_targets_ignored_gives_torch_nan_mean_zero_sum_and_zero_grad(rng, fn, use_weight):
    x = random_array(rng, (3, C))
    target = np.full(3, -100)
    weight = rng.uniform(0.5, 2, C) if use_weight else None
    assert np.isnan(fn(x, target, weight))
    assert torch.isnan(F.nll_loss(torch_tensor(x), torch.tensor(target)))
    assert np.isnan(fn(x[0], np.array(-100), weight))  # unbatched, its one target ignored
    assert fn(x, target, weight, reduction="sum") == 0.0
    backward = nll_loss_backward if fn is nll_loss else cross_entropy_backward
    np.testing.assert_array_equal(backward(1.0, x, target, weight), np.zeros_like(x))
    if fn is cross_entropy:
        assert np.isnan(cross_entropy(x, target, weight, label_smoothing=0.2))


@pytest.mark.parametrize("fn", [nll_loss, cross_entropy])
def test_empty_batch_gives_nan_mean_and_zero_sum_as_torch(fn):
    x = np.zeros((0, C), dtype=np.float32)
    target = np.zeros(0, dtype=np.int64)
    assert np.isnan(fn(x, target)) and torch.isnan(F.nll_loss(torch_tensor(x), torch.tensor(target)))
    assert fn(x, target, reduction="sum") == 0.0
    assert fn(x, target, reduction="none").shape == (0,)


def test_ignore_index_inside_the_class_range_is_ignored(rng):
    x = random_array(rng, (6, C))
    target = np.array([0, 1, 2, 1, 4, 3])
    loss_t, grad_t = _torch_loss(F.cross_entropy, x, target, np.array(1.3), ignore_index=1)
    assert_close(cross_entropy(x, target, ignore_index=1), loss_t, rtol=TORCH_F64_RTOL, name="loss")
    assert_close(cross_entropy_backward(1.3, x, target, ignore_index=1), grad_t, rtol=TORCH_F64_RTOL, name="grad")


# ------------------------------------------------------------------------------ modules
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_CrossEntropyLoss_module_matches_torch_module(rng, reduction):
    x = random_array(rng, (8, C), dtype=np.float32)
    target = _class_targets(rng, (8,), ignore_index=0)
    weight = rng.uniform(0.5, 2, C).astype(np.float32)
    options = dict(ignore_index=0, reduction=reduction, label_smoothing=0.1)
    criterion = CrossEntropyLoss(weight, **options)
    torch_criterion = torch.nn.CrossEntropyLoss(torch_tensor(weight), **options)
    grad_output = _upstream(rng, reduction, (8,), dtype=np.float32)
    xt = torch_tensor(x, True)
    loss_t = torch_criterion(xt, torch.tensor(target))
    loss_t.backward(torch_tensor(grad_output))
    loss = criterion(x, target)
    assert loss.dtype == np.float32
    assert_close(loss, loss_t, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name="loss")
    grad = criterion.backward(grad_output)
    assert grad.dtype == np.float32
    assert_close(grad, xt.grad, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name="grad")


def test_CrossEntropyLoss_default_backward_is_dloss_dinput_and_item_works(rng):
    x = random_array(rng, (64, 10), dtype=np.float32)
    target = rng.integers(0, 10, 64)
    criterion = CrossEntropyLoss()
    loss = criterion(x, target)
    assert isinstance(loss.item(), float) and loss.dtype == np.float32
    _, grad_t = _torch_loss(F.cross_entropy, x, target, np.float32(1.0))
    assert_close(criterion.backward(), grad_t, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name="grad")
    criterion(x, target)
    assert criterion.backward(needs_input_grad=False) is None


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_NLLLoss_module_matches_functional(rng, reduction):
    x = random_array(rng, (3, C, 2))
    target = _class_targets(rng, (3, 2), ignore_index=-100)
    weight = rng.uniform(0.5, 2, C)
    criterion = NLLLoss(weight, reduction=reduction)
    grad_output = _upstream(rng, reduction, (3, 2))
    loss_t, grad_t = _torch_loss(F.nll_loss, x, target, grad_output, weight=weight, reduction=reduction)
    assert_close(criterion(x, target), loss_t, rtol=TORCH_F64_RTOL, name="loss")
    assert_close(criterion.backward(grad_output), grad_t, rtol=TORCH_F64_RTOL, name="grad")


@pytest.mark.parametrize("module_class", [CrossEntropyLoss, NLLLoss])
def test_loss_module_repr_matches_torch(module_class):
    assert repr(module_class()) == f"{module_class.__name__}()"
    assert repr(module_class(reduction="sum")) == repr(getattr(torch.nn, module_class.__name__)(reduction="sum"))


@pytest.mark.parametrize("module_class", [CrossEntropyLoss, NLLLoss])
def test_loss_module_backward_before_forward_and_after_no_grad_raise(module_class):
    criterion = module_class()
    with pytest.raises(RuntimeError, match="run a forward first"):
        criterion.backward()
    with tinynn.no_grad():
        criterion(np.zeros((2, C), np.float32), np.array([0, 1]))
    with pytest.raises(RuntimeError, match="no_grad"):
        criterion.backward()


def test_loss_module_none_reduction_backward_checks_grad_output_shape():
    criterion = CrossEntropyLoss(reduction="none")
    criterion(np.zeros((4, C), np.float32), np.array([0, 1, 2, 3]))
    with pytest.raises(RuntimeError, match=r"per-sample shape \(4,\), got \(\)"):
        criterion.backward(1.0)


def test_loss_module_mean_backward_rejects_a_per_sample_grad_output():
    criterion = NLLLoss()
    criterion(np.zeros((4, C), np.float32), np.array([0, 1, 2, 3]))
    with pytest.raises(RuntimeError, match=r"single element grad_output for reduction='mean'"):
        criterion.backward(np.ones(4, np.float32))


# ------------------------------------------------------------------------------ errors
FNS = [nll_loss, cross_entropy]


@pytest.mark.parametrize("fn", FNS)
@pytest.mark.parametrize("bad", [10, -1, -7])
def test_out_of_range_class_index_raises_index_error(fn, bad):
    target = np.array([0, bad, 3])
    with pytest.raises(IndexError, match=rf"^Target {bad} is out of bounds\.$"):
        fn(np.zeros((3, 10), np.float32), target)


def test_out_of_range_index_is_caught_beside_ignored_ones():
    with pytest.raises(IndexError, match=r"Target -1 is out of bounds\."):
        cross_entropy(np.zeros((3, 10), np.float32), np.array([-100, -1, 3]))
    with pytest.raises(IndexError, match=r"Target 10 is out of bounds\."):
        nll_loss_backward(1.0, np.zeros((3, 10), np.float32), np.array([-100, 10, 3]))


@pytest.mark.parametrize("fn", FNS)
def test_batch_size_mismatch_raises_value_error(fn):
    with pytest.raises(ValueError, match=r"Expected input batch_size \(64\) to match target batch_size \(32\)\."):
        fn(np.zeros((64, 10), np.float32), np.zeros(32, np.int64))


def test_float_targets_to_nll_loss_raise():
    with pytest.raises(RuntimeError, match=r"target dtype to be Long or Byte, but got Float.*astype\(np\.int64\)"):
        nll_loss(np.zeros((4, C), np.float32), np.zeros(4, np.float32))


def test_int32_targets_raise_as_in_torch():
    with pytest.raises(RuntimeError, match="expected target dtype to be Long or Byte, but got Int"):
        cross_entropy(np.zeros((4, C), np.float32), np.zeros(4, np.int32))


@pytest.mark.parametrize("fn", FNS)
def test_bad_reduction_raises_value_error(fn):
    with pytest.raises(ValueError, match="avg is not a valid value for reduction"):
        fn(np.zeros((4, C), np.float32), np.zeros(4, np.int64), reduction="avg")


@pytest.mark.parametrize("fn", FNS)
def test_weight_of_wrong_length_raises(fn):
    with pytest.raises(RuntimeError, match=r"defined either for all 5 classes or no classes but got weight tensor of "
                                           r"shape: \[3\]"):
        fn(np.zeros((4, C), np.float32), np.zeros(4, np.int64), np.ones(3, np.float32))


def test_weight_of_another_dtype_raises():
    with pytest.raises(RuntimeError, match=r"expected scalar type Float but found Double.*astype\(np\.float32\)"):
        cross_entropy(np.zeros((4, C), np.float32), np.zeros(4, np.int64), np.ones(C))


def test_label_smoothing_above_one_raises():
    with pytest.raises(RuntimeError, match=r"label_smoothing must be between 0\.0 and 1\.0\. Got: 1\.5"):
        cross_entropy(np.zeros((4, C), np.float32), np.zeros(4, np.int64), label_smoothing=1.5)


def test_probability_target_errors():
    x = np.zeros((4, C), np.float32)
    with pytest.raises(RuntimeError, match="floating point type for target with class probabilities, got Long"):
        cross_entropy(x, np.zeros((4, C), np.int64))
    with pytest.raises(RuntimeError, match="ignore_index is not supported for floating point target"):
        cross_entropy(x, np.zeros((4, C), np.float32), ignore_index=1)
    with pytest.raises(RuntimeError, match=r"probability target dtype float64 differs from input dtype float32"):
        cross_entropy(x, np.zeros((4, C)))


@pytest.mark.parametrize("fn", FNS)
def test_target_shape_errors(fn):
    with pytest.raises(RuntimeError, match="0D or 1D target tensor expected, multi-target not supported"):
        fn(np.zeros((4, C), np.float32), np.zeros((4, 2), np.int64))
    with pytest.raises(RuntimeError, match=r"Expected target size \[4, 3\], got \[4, 2\]"):
        fn(np.zeros((4, C, 3), np.float32), np.zeros((4, 2), np.int64))
    with pytest.raises(ValueError, match="For 1D input, 1D target must have size 1, but got target size: 4"):
        fn(np.zeros(C, np.float32), np.zeros(4, np.int64))
    with pytest.raises(ValueError, match=r"Expected 1 or more dimensions \(got 0\)"):
        fn(np.zeros((), np.float32), np.zeros((), np.int64))


@pytest.mark.parametrize("fn", FNS)
def test_non_float_or_non_array_input_raises_type_error(fn):
    with pytest.raises(TypeError, match="expected a floating-point input, got Long"):
        fn(np.zeros((4, C), np.int64), np.zeros(4, np.int64))
    with pytest.raises(TypeError, match="argument 'target' must be a NumPy array, not list"):
        fn(np.zeros((2, C), np.float32), [0, 1])


def test_non_integer_ignore_index_raises_type_error():
    with pytest.raises(TypeError, match="ignore_index must be an int, not bool"):
        nll_loss(np.zeros((4, C), np.float32), np.zeros(4, np.int64), ignore_index=True)


def test_weight_that_is_not_an_array_raises_type_error():
    with pytest.raises(TypeError, match=r"weight must be a NumPy array of shape \(5,\), not list"):
        cross_entropy(np.zeros((4, C), np.float32), np.zeros(4, np.int64), [1.0] * C)


@pytest.mark.parametrize("fn,backward,kwargs", [
    (nll_loss, nll_loss_backward, {}),
    (cross_entropy, cross_entropy_backward, {}),
    (cross_entropy, cross_entropy_backward, {"label_smoothing": 0.3}),
])
def test_mean_over_zero_total_weight_gives_nan_grads_at_kept_samples_like_torch(fn, backward, kwargs):
    # Found by the property tests: tinynn returned 0 where torch divides by the zero total weight.
    rng = np.random.default_rng(5)
    x = random_array(rng, (4, 4))
    target = np.array([1, 2, 3, 1], dtype=np.int64)  # sample 2 is ignored; the others weigh 0
    weight = np.array([1.0, 0.0, 0.0, 1.0])
    torch_fn = {nll_loss: F.nll_loss, cross_entropy: F.cross_entropy}[fn]
    loss_t, grad_t = _torch_loss(torch_fn, x, target, np.array(0.7), weight=weight, ignore_index=3, **kwargs)
    assert_close(fn(x, target, weight, ignore_index=3, **kwargs), loss_t, rtol=TORCH_F64_RTOL, name="loss (NaN)")
    grad = backward(np.array(0.7), x, target, weight, ignore_index=3, **kwargs)
    assert np.isnan(grad[[0, 1, 3]]).any() and not np.isnan(grad[2]).any()
    assert_close(grad, grad_t, rtol=TORCH_F64_RTOL, name="grad")


def test_zero_total_weight_with_a_label_smoothing_that_rounds_to_zero_gives_nan_without_a_warning():
    # Found by the thorough property run: the smoothing term is inf (a sum over a zero total weight)
    # times a label_smoothing that rounds to 0 in float32, which NumPy warns about; torch gives NaN.
    x = np.array([0.12573022, -0.13210486, 0.64042264], dtype=np.float32)
    weight = np.array([2.5, 2.5, 0.0], dtype=np.float32)
    kwargs = dict(reduction="mean", label_smoothing=3.7251248037459387e-264)
    expected = F.cross_entropy(torch.from_numpy(x), torch.tensor(2), torch.from_numpy(weight), **kwargs)
    assert np.isnan(float(expected))
    loss = cross_entropy(x, np.array(2), weight, **kwargs)  # RuntimeWarnings from tinynn are errors here
    assert loss.dtype == np.float32 and np.isnan(loss)


@pytest.mark.parametrize("fn", [nll_loss, cross_entropy])
def test_byte_targets_work_for_batched_input_but_not_spatial_like_torch(fn):
    # Found by the property tests: torch's (N, C, d1, ...) kernels refuse uint8 class indices.
    rng = np.random.default_rng(9)
    x = random_array(rng, (3, C))
    target = np.array([0, 4, 2], dtype=np.uint8)
    expected = {nll_loss: F.nll_loss, cross_entropy: F.cross_entropy}[fn](torch_tensor(x), torch.tensor(target))
    assert_close(fn(x, target), expected, rtol=TORCH_F64_RTOL, name="loss")
    with pytest.raises(RuntimeError, match="expected scalar type Long but found Byte"):
        fn(random_array(rng, (2, C, 2)), np.zeros((2, 2), dtype=np.uint8))
