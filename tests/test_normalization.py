"""BatchNorm1d/2d, LayerNorm, GroupNorm: torch's defaults, printing, state_dict, errors and modes.

The numbers are held to torch over random cases in tests/test_properties_normalization.py; here
each torch behaviour is pinned by one readable case, mostly against torch run beside it.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import tinynn
import tinynn.nn as nn
import tinynn.nn.functional as F
from tinynn.nn import naive
from tinynn.testing import assert_close, assert_matches_torch, gradcheck
from tinynn.testing.tolerances import TORCH_F64_RTOL

BATCH_NORMS = [(nn.BatchNorm1d, torch.nn.BatchNorm1d, (6, 3, 5)), (nn.BatchNorm2d, torch.nn.BatchNorm2d, (4, 3, 2, 5))]
CONFIGS = [dict(), dict(momentum=None), dict(affine=False), dict(track_running_stats=False), dict(bias=False),
           dict(eps=1e-3, momentum=0.5, affine=False, track_running_stats=False)]


@pytest.fixture(params=["engine", "textbook"])
def implementation(request):
    with tinynn.textbook(request.param == "textbook"):
        yield request.param


def _random(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


# ---------------------------------------------------------------------------------------- construction
@pytest.mark.parametrize("ours, theirs, _", BATCH_NORMS)
@pytest.mark.parametrize("config", CONFIGS)
def test_batch_norm_defaults_repr_and_state_dict_are_torchs(ours, theirs, _, config):
    module, reference = ours(3, **config), theirs(3, **config)
    assert repr(module) == repr(reference)
    assert list(module.state_dict()) == list(reference.state_dict())
    assert [name for name, _ in module.named_buffers()] == [name for name, _ in reference.named_buffers()]
    for name, value in reference.state_dict().items():
        mine = module.state_dict()[name]
        assert mine.dtype == {torch.float32: np.float32, torch.int64: np.int64}[value.dtype]
        assert mine.shape == tuple(value.shape) and np.array_equal(mine, value.numpy())
    for name in ("running_mean", "running_var", "num_batches_tracked"):
        assert (getattr(module, name) is None) == (getattr(reference, name) is None)
    assert (module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats) == (
        reference.num_features, reference.eps, reference.momentum, reference.affine, reference.track_running_stats)


def test_layer_norm_and_group_norm_defaults_repr_and_state_dict_are_torchs():
    pairs = [((4,), {}), (([2, 3],), dict(bias=False)), (((5,), 1e-3), dict(elementwise_affine=False))]
    made = [(nn.LayerNorm(*args, **kwargs), torch.nn.LayerNorm(*args, **kwargs)) for args, kwargs in pairs]
    groups = [((2, 4), {}), ((3, 6), dict(affine=False)), ((1, 2), dict(eps=0.1, bias=False))]
    made += [(nn.GroupNorm(*args, **kwargs), torch.nn.GroupNorm(*args, **kwargs)) for args, kwargs in groups]
    for module, reference in made:
        assert repr(module) == repr(reference)
        assert list(module.state_dict()) == list(reference.state_dict())
        for name, value in reference.state_dict().items():
            mine = module.state_dict()[name]
            assert np.array_equal(mine, value.numpy()) and mine.dtype == np.float32
    assert nn.LayerNorm(4).normalized_shape == (4,) and nn.LayerNorm(4, dtype=np.float64).weight.dtype == np.float64
    assert nn.GroupNorm(2, 4, dtype=torch.float64).bias.dtype == np.float64


def test_dtype_argument_and_casts_move_floating_buffers_only():
    module = nn.BatchNorm2d(3, dtype=torch.float64)
    assert module.weight.dtype == module.running_mean.dtype == module.running_var.dtype == np.float64
    module.float()
    assert module.running_var.dtype == np.float32 and module.num_batches_tracked.dtype == np.int64


# ---------------------------------------------------------------------------------------- errors
def _torch_error(fn):
    try:
        fn()
    except (ValueError, RuntimeError, IndexError) as error:
        return type(error), str(error)
    raise AssertionError("torch accepted the case")


def _prefix(message: str) -> str:
    """torch's message up to the point where it prints a torch.Size (tinynn prints a tuple)."""
    return message.split("torch.Size")[0]


BN_ERRORS = [
    ("BatchNorm1d on 4D", lambda m: m.BatchNorm1d(3), (2, 3, 4, 5), True),
    ("BatchNorm1d on 1D", lambda m: m.BatchNorm1d(3), (3,), True),
    ("BatchNorm2d on 3D", lambda m: m.BatchNorm2d(3), (2, 3, 4), True),
    ("running_mean size", lambda m: m.BatchNorm1d(3), (2, 4), True),
    ("running_mean size in eval", lambda m: m.BatchNorm1d(3), (2, 4), False),
    ("weight size", lambda m: m.BatchNorm1d(3, track_running_stats=False), (2, 4), True),
    ("one value per channel", lambda m: m.BatchNorm1d(3), (1, 3), True),
    ("one value per channel, 2d", lambda m: m.BatchNorm2d(3), (1, 3, 1, 1), True),
    ("one value, no running stats, eval", lambda m: m.BatchNorm1d(3, track_running_stats=False), (1, 3), False),
    ("eps 0 when training", lambda m: m.BatchNorm1d(3, eps=0.0), (2, 3), True),
    ("eps negative in eval", lambda m: m.BatchNorm1d(3, eps=-1.0), (2, 3), False),
]


@pytest.mark.parametrize("case", BN_ERRORS, ids=[case[0] for case in BN_ERRORS])
def test_batch_norm_errors_are_torchs_and_leave_the_module_untouched(case, implementation):
    _, make, shape, training = case
    module, reference = make(nn).train(training), make(torch.nn).train(training)
    kind, message = _torch_error(lambda: reference(torch.zeros(shape)))
    before = {name: np.array(value, copy=True) for name, value in module.state_dict().items()}
    with pytest.raises(kind, match=re.escape(_prefix(message))):
        module(np.zeros(shape, dtype=np.float32))
    for name, value in module.state_dict().items():  # torch counts the batch before it raises; tinynn does not
        assert np.array_equal(value, before[name]), name


FUNCTIONAL_ERRORS = [
    ("no running stats in eval", lambda f, t: f.batch_norm(t((2, 3)), None, None, training=False)),
    ("one running stat", lambda f, t: f.batch_norm(t((2, 3)), t((3,)), None, training=True)),
    ("1-D input", lambda f, t: f.batch_norm(t((3,)), None, None, training=True)),
    ("bias size", lambda f, t: f.batch_norm(t((2, 3)), None, None, bias=t((4,)), training=True)),
    ("layer_norm input shape", lambda f, t: f.layer_norm(t((2, 3)), (4,))),
    ("layer_norm input too small", lambda f, t: f.layer_norm(t((3,)), [3, 4])),
    ("layer_norm weight shape", lambda f, t: f.layer_norm(t((2, 3)), (3,), weight=t((4,)))),
    ("layer_norm bias shape", lambda f, t: f.layer_norm(t((2, 3)), (3,), bias=t((1, 3)))),
    ("layer_norm empty shape", lambda f, t: f.layer_norm(t((2, 3)), ())),
    ("group_norm divisibility", lambda f, t: f.group_norm(t((2, 4, 3)), 3)),
    ("group_norm 1-D", lambda f, t: f.group_norm(t((4,)), 2)),
    ("group_norm one value", lambda f, t: f.group_norm(t((1, 2)), 2)),
    ("group_norm weight size", lambda f, t: f.group_norm(t((2, 4)), 2, weight=t((3,)))),
    # torch prints the weight's shape ([0] when absent) in this one; tinynn the bias's: compare the start
    ("group_norm bias size", lambda f, t: f.group_norm(t((2, 4)), 2, bias=t((8,)))),
]


@pytest.mark.parametrize("case", FUNCTIONAL_ERRORS, ids=[case[0] for case in FUNCTIONAL_ERRORS])
def test_functional_errors_are_torchs(case):
    name, call = case
    kind, message = _torch_error(lambda: call(torch.nn.functional, lambda shape: torch.ones(shape)))
    if name == "group_norm bias size":
        message = message.split(" but got")[0]
    with pytest.raises(kind, match=re.escape(_prefix(message))):
        call(F, lambda shape: np.ones(shape, dtype=np.float32))


def test_group_norm_constructor_error_and_dtype_mismatch():
    with pytest.raises(ValueError, match=re.escape("num_channels (4) must be divisible by num_groups (3)")):
        nn.GroupNorm(3, 4)
    for module, reference in [(nn.BatchNorm1d(3), torch.nn.BatchNorm1d(3)), (nn.LayerNorm(3), torch.nn.LayerNorm(3)),
                              (nn.GroupNorm(1, 3), torch.nn.GroupNorm(1, 3))]:  # as torch: no silent cast
        for ours, theirs in [(np.float64, torch.float64), (np.float32, torch.float32)]:
            if ours == np.float32:
                module.double(), reference.double()
            kind, message = _torch_error(lambda r=reference, t=theirs: r(torch.ones((2, 3), dtype=t)))
            with pytest.raises(kind, match=re.escape(message)):
                module(np.ones((2, 3), dtype=ours))


# ---------------------------------------------------------------------------------------- modes and statistics
def test_momentum_none_is_the_cumulative_average_of_the_batches(implementation):
    module = nn.BatchNorm1d(3, momentum=None, dtype=np.float64)
    batches = [_random((5, 3), seed) for seed in range(4)]
    for batch in batches:
        module(batch)
    assert module.num_batches_tracked.shape == () and int(module.num_batches_tracked) == 4
    assert_close(module.running_mean, np.mean([b.mean(0) for b in batches], axis=0), rtol=TORCH_F64_RTOL)
    assert_close(module.running_var, np.mean([b.var(0, ddof=1) for b in batches], axis=0), rtol=TORCH_F64_RTOL)


def test_running_stats_use_the_unbiased_variance_and_update_in_place(implementation):
    module = nn.BatchNorm2d(3, momentum=0.25, dtype=np.float64)
    running_mean, running_var, count = module.running_mean, module.running_var, module.num_batches_tracked
    x = _random((4, 3, 2, 5))
    module(x)
    assert module.running_mean is running_mean and module.running_var is running_var
    assert module.num_batches_tracked is count and int(count) == 1
    assert_close(running_mean, 0.25 * x.mean((0, 2, 3)), rtol=TORCH_F64_RTOL)
    assert_close(running_var, 0.75 + 0.25 * x.var((0, 2, 3), ddof=1), rtol=TORCH_F64_RTOL)
    stats = np.zeros(3), np.ones(3)
    F.batch_norm(x, *stats, training=True, momentum=1.0)  # the functional form updates in place too
    assert_close(stats[1], x.var((0, 2, 3), ddof=1), rtol=TORCH_F64_RTOL)


@pytest.mark.parametrize("ours, theirs, shape", BATCH_NORMS)
@pytest.mark.parametrize("config", CONFIGS)
def test_train_then_eval_matches_torch(ours, theirs, shape, config, implementation):
    module, reference = ours(3, dtype=np.float64, **config), theirs(3, dtype=torch.float64, **config)
    for seed in range(3):  # train: batch statistics, the running ones move
        assert_matches_torch(module, reference, _random(shape, seed))
    for name, value in reference.state_dict().items():
        assert_close(module.state_dict()[name], value, rtol=TORCH_F64_RTOL, name=name)
    module.eval(), reference.eval()  # eval: the running statistics (batch ones when not tracked)
    assert_matches_torch(module, reference, _random(shape, 9))
    assert_matches_torch(module, reference, _random((1, *shape[1:]), 10))  # one sample is fine in eval


def test_eval_backward_is_the_affine_one(implementation):
    module = nn.BatchNorm2d(3, dtype=np.float64)
    module.running_mean[...], module.running_var[...] = [1.0, -2.0, 0.5], [4.0, 0.25, 1.0]
    module.weight.data[...] = [2.0, -1.0, 3.0]
    module.eval()
    x, grad = _random((2, 3, 2, 2)), _random((2, 3, 2, 2), 1)
    module(x)
    scale = (module.weight.data / np.sqrt(module.running_var + module.eps)).reshape(1, 3, 1, 1)
    assert_close(module.backward(grad), grad * scale, rtol=TORCH_F64_RTOL)


def test_backward_accumulates_and_honours_requires_grad_and_no_grad(implementation):
    module = nn.BatchNorm1d(3, dtype=np.float64)
    x, grad = _random((5, 3)), _random((5, 3), 1)
    module(x)
    module.backward(grad)
    first = module.weight.grad.copy()
    module(x)
    assert module.backward(grad, needs_input_grad=False) is None
    assert_close(module.weight.grad, 2 * first, rtol=TORCH_F64_RTOL)
    module.bias.requires_grad_(False)
    module.bias.grad = None
    module(x)
    module.backward(grad)
    assert module.bias.grad is None
    with tinynn.no_grad():
        module(x)
    with pytest.raises(RuntimeError, match="no_grad"):
        module.backward(grad)


def test_a_sum_loss_gives_a_zero_input_gradient_which_is_why_the_tests_draw_random_ones():
    module = nn.BatchNorm1d(3, dtype=np.float64)
    module(_random((6, 3)))
    assert np.abs(module.backward(np.ones((6, 3)))).max() < 1e-12


def test_load_state_dict_from_torch_then_eval_matches():
    reference = torch.nn.BatchNorm2d(3, dtype=torch.float64)
    reference(torch.from_numpy(_random((4, 3, 2, 2)) * 3 + 1))
    module = nn.BatchNorm2d(3, dtype=np.float64)
    module.load_state_dict(reference.state_dict())
    assert int(module.num_batches_tracked) == 1
    module.eval(), reference.eval()
    assert_matches_torch(module, reference, _random((2, 3, 2, 2), 5))


def test_reset_running_stats_and_parameters():
    module = nn.BatchNorm1d(3)
    module(_random((4, 3)).astype(np.float32))
    module.weight.data[...] = 5
    module.reset_parameters()
    assert np.all(module.running_mean == 0) and np.all(module.running_var == 1) and int(module.num_batches_tracked) == 0
    assert np.all(module.weight.data == 1) and np.all(module.bias.data == 0)


def test_empty_batch_leaves_the_running_stats_and_gives_zero_parameter_grads(implementation):
    module, reference = nn.BatchNorm1d(3, dtype=np.float64), torch.nn.BatchNorm1d(3, dtype=torch.float64)
    assert_matches_torch(module, reference, np.zeros((0, 3)))
    assert np.all(module.running_mean == 0) and np.all(module.running_var == 1) and int(module.num_batches_tracked) == 1


# ---------------------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("make, shape", [
    (lambda: nn.BatchNorm1d(3, dtype=np.float64), (4, 3)),
    (lambda: nn.BatchNorm1d(2, momentum=None, dtype=np.float64), (3, 2, 4)),
    (lambda: nn.BatchNorm2d(2, affine=False, dtype=np.float64), (2, 2, 3, 2)),
    (lambda: nn.BatchNorm2d(3, track_running_stats=False, dtype=np.float64), (2, 3, 2, 2)),
    (lambda: nn.LayerNorm((3, 4), dtype=np.float64), (2, 3, 4)),
    (lambda: nn.LayerNorm(5, bias=False, dtype=np.float64), (3, 5)),
    (lambda: nn.GroupNorm(2, 4, dtype=np.float64), (2, 4, 3)),
    (lambda: nn.GroupNorm(3, 3, affine=False, dtype=np.float64), (2, 3, 2, 2)),
], ids=["bn1d", "bn1d-3d", "bn2d-no-affine", "bn2d-untracked", "ln", "ln-no-bias", "gn", "gn-no-affine"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_backward_matches_finite_differences(make, shape, mode, implementation):
    module = make()
    if mode == "eval" and getattr(module, "running_var", None) is not None:
        module(_random(shape, 3) * 2 + 1)  # running statistics that are not the initial 0 and 1
    assert gradcheck(module.train(mode == "train"), _random(shape))


def test_the_staged_chain_rule_gives_the_compact_formula():
    x, grad, weight = _random((4, 3, 2, 5)), _random((4, 3, 2, 5), 1), _random((3,), 2)
    staged = naive.batch_norm_backward(grad, x, weight, eps=1e-3)
    for textbook in (True, False):
        with tinynn.textbook(textbook):
            compact = F.batch_norm_backward(grad, x, None, None, weight, training=True, eps=1e-3)
        for mine, reference in zip(compact, staged):
            assert_close(mine, reference, rtol=TORCH_F64_RTOL)
