"""Dropout and Dropout2d: torch's masks replayed (tinynn.testing.replay_torch_dropout) give torch's
outputs and gradients bit for bit; eval identity, p's edge values and errors, dropout2d's ranks and
warnings, seeding, the keep rate, gradcheck, and the replay's own errors."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import tinynn
import tinynn.nn as nn
import tinynn.nn.functional as F
from tests.helpers import assert_close
from tests.strategies import sizes
from tinynn.testing import gradcheck, replay_torch_dropout
from tinynn.testing.tolerances import DROPOUT_KEEP_RATE_SIGMAS, TORCH_F64_RTOL

# p: the edges (no draw at 0 or 1), common values, and any float in between.
probabilities = st.sampled_from([0.0, 1.0, 0.5, 0.1, 0.9]) | st.floats(0.0, 1.0)
ignore_rank_warnings = pytest.mark.filterwarnings("ignore:dropout2d. Received a")


def _torch_step(torch_module: torch.nn.Module, x: np.ndarray, grad_output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x_t = torch.from_numpy(x.copy()).requires_grad_()
    output = torch_module(x_t * 1)  # * 1: an in-place dropout must not overwrite a leaf
    output.backward(torch.from_numpy(grad_output))
    return output.detach().numpy(), x_t.grad.numpy()


def _assert_identical(actual: np.ndarray, expected: np.ndarray, name: str) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, name
    assert np.array_equal(actual, expected, equal_nan=True), f"{name}: not bit for bit equal"
    zeros = expected == 0
    assert np.array_equal(np.signbit(actual[zeros]), np.signbit(expected[zeros])), f"{name}: signed zeros differ"


# ---------------------------------------------------------------------------------- same masks as torch
@ignore_rank_warnings
@given(p=probabilities, channelwise=st.booleans(), inplace=st.booleans(), data=st.data())
def test_dropout_modules_match_torch_bit_for_bit_with_torch_masks(p, channelwise, inplace, data):
    shape = data.draw(sizes(max_ndim=5, min_ndim=2 if channelwise else 0, max_side=5), label="shape")
    dtype = data.draw(st.sampled_from([np.float64, np.float32]), label="dtype")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    x = rng.standard_normal(shape).astype(dtype)
    grad_output = rng.uniform(-2, 2, shape).astype(dtype)
    name = "Dropout2d" if channelwise else "Dropout"
    torch_module, module = getattr(torch.nn, name)(p, inplace), getattr(nn, name)(p, inplace)
    with replay_torch_dropout(torch_module) as masks:
        for step in range(2):  # a second step takes the second mask, not the first again
            expected, expected_grad = _torch_step(torch_module, x, grad_output)
            output = module(x.copy())
            _assert_identical(output, expected, f"output, step {step}")
            _assert_identical(module.backward(grad_output), expected_grad, f"grad_input, step {step}")
    drew = 0 < p < 1 and x.size > 0
    assert masks.used == (2 if drew else 0)


@ignore_rank_warnings
@settings(max_examples=300)  # one torch forward and one tinynn forward each; the module test covers the rest
@given(p=probabilities, channelwise=st.booleans(), data=st.data())
def test_functional_dropout_takes_the_same_masks(p, channelwise, data):
    shape = data.draw(sizes(max_ndim=4, min_ndim=2 if channelwise else 0, max_side=5), label="shape")
    x = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1))).standard_normal(shape)
    torch_module = (torch.nn.Dropout2d if channelwise else torch.nn.Dropout)(p)
    with replay_torch_dropout(torch_module):
        expected = torch_module(torch.from_numpy(x)).numpy()
        output = (F.dropout2d if channelwise else F.dropout)(x, p)
    _assert_identical(output, expected, "output")


def _torch_cnn(p_channels: float, p_features: float) -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Dropout2d(p_channels),
        torch.nn.Flatten(), torch.nn.Linear(4 * 5 * 5, 16), torch.nn.Dropout(p_features), torch.nn.ReLU(),
        torch.nn.Linear(16, 16), torch.nn.Dropout(p_features, inplace=True), torch.nn.Linear(16, 3),
    ).double()


def _tinynn_cnn(p_channels: float, p_features: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Dropout2d(p_channels),
        nn.Flatten(), nn.Linear(4 * 5 * 5, 16), nn.Dropout(p_features), nn.ReLU(),
        nn.Linear(16, 16), nn.Dropout(p_features, inplace=True), nn.Linear(16, 3),
    ).double()


def test_several_dropouts_in_a_network_follow_torch_over_several_training_steps():
    torch.manual_seed(0)
    torch_model, model = _torch_cnn(0.3, 0.4), _tinynn_cnn(0.3, 0.4)
    model.load_state_dict({key: value.detach().numpy() for key, value in torch_model.state_dict().items()})
    torch_opt = torch.optim.SGD(torch_model.parameters(), lr=0.1)
    opt = tinynn.optim.SGD(model.parameters(), lr=0.1)
    rng = np.random.default_rng(5)
    with replay_torch_dropout(torch_model) as masks:
        for step in range(4):
            x, grad_output = rng.standard_normal((6, 2, 5, 5)), rng.uniform(-1, 1, (6, 3))
            expected, expected_grad = _torch_step(torch_model, x, grad_output)
            output = model(x)
            assert_close(output, expected, rtol=TORCH_F64_RTOL, name=f"output, step {step}")
            assert_close(model.backward(grad_output), expected_grad, rtol=TORCH_F64_RTOL, name=f"grad, step {step}")
            for (name, param), torch_param in zip(model.named_parameters(), torch_model.parameters()):
                assert_close(param.grad, torch_param.grad, rtol=TORCH_F64_RTOL, name=f"{name}.grad, step {step}")
            torch_opt.step()
            torch_opt.zero_grad()
            opt.step()
            opt.zero_grad()
        # Evaluation draws nothing in either library, so the queue stays in step.
        torch_model.eval()
        model.eval()
        x = rng.standard_normal((2, 2, 5, 5))
        assert_close(model(x), torch_model(torch.from_numpy(x)), rtol=TORCH_F64_RTOL, name="eval output")
    assert masks.used == 4 * 3 and masks.pending() == 0


# ---------------------------------------------------------------------------------- torch's edge cases
@pytest.mark.parametrize("module_class", [nn.Dropout, nn.Dropout2d])
def test_eval_mode_and_p_zero_are_the_identity_on_the_input_itself(module_class):
    x, grad_output = np.ones((2, 3, 4, 4)), np.full((2, 3, 4, 4), 2.0)
    for module in (module_class(0.5).eval(), module_class(0.0)):
        assert module(x) is x
        assert module.backward(grad_output) is grad_output
    forward = F.dropout2d if module_class is nn.Dropout2d else F.dropout
    assert forward(x, 0.5, training=False) is x and forward(x, 0.0) is x
    empty = np.ones((0, 3, 2, 2))
    assert forward(empty, 0.5) is empty


def test_p_one_multiplies_by_zero_like_torch():
    x = np.array([1.0, -2.0, np.inf, np.nan])
    expected = torch.nn.functional.dropout(torch.from_numpy(x), 1.0).numpy()
    _assert_identical(F.dropout(x, 1.0), expected, "p = 1")  # 0, -0, NaN, NaN
    module = nn.Dropout(1.0)
    module(x)
    _assert_identical(module.backward(np.array([np.inf, 1.0, 2.0, 3.0])), np.array([np.nan, 0.0, 0.0, 0.0]), "grad")


@pytest.mark.parametrize("p", [1.5, -0.1])
def test_probability_outside_zero_one_raises_like_torch(p):
    message = f"dropout probability has to be between 0 and 1, but got {p}"
    for make in (lambda: nn.Dropout(p), lambda: nn.Dropout2d(p), lambda: F.dropout(np.ones(3), p),
                 lambda: F.dropout2d(np.ones((1, 2, 2, 2)), p), lambda: F.dropout(np.ones(3), p, training=False)):
        with pytest.raises(ValueError, match=f"^{message}$"):
            make()
    with pytest.raises(ValueError, match=f"^{message}$"):
        torch.nn.Dropout(p)


def test_repr_and_defaults_match_torch():
    for args in [(), (0.2,), (0.3, True)]:
        assert repr(nn.Dropout(*args)) == repr(torch.nn.Dropout(*args))
        assert repr(nn.Dropout2d(*args)) == repr(torch.nn.Dropout2d(*args))


def test_inplace_dropout_writes_into_its_input():
    tinynn.manual_seed(1)
    x = np.ones((50,))
    assert F.dropout(x, 0.5, inplace=True) is x
    assert set(np.unique(x)) == {0.0, 2.0}
    y = np.ones((50,))
    nn.Dropout(0.5)(y)
    assert (y == 1).all()


@pytest.mark.parametrize("ndim", [2, 3, 5])
def test_dropout2d_of_other_ranks_warns_and_drops_dim_1_channels_like_torch(ndim):
    shape = (3, 4, 2, 3, 2)[:ndim]
    with warnings.catch_warnings(record=True) as torch_warnings:
        warnings.simplefilter("always")
        torch.nn.functional.dropout2d(torch.ones(shape), 0.5)
    with warnings.catch_warnings(record=True) as ours:
        warnings.simplefilter("always")
        tinynn.manual_seed(0)
        output = F.dropout2d(np.ones(shape), 0.5)
    assert [str(w.message) for w in ours] == [str(w.message) for w in torch_warnings]
    per_channel = output.reshape(3, 4, -1)
    assert (per_channel == per_channel[..., :1]).all()  # a 3-D input is (N, C, L), as torch 2.13


def test_dropout2d_of_a_1d_input_warns_then_raises_like_torch():
    with pytest.warns(UserWarning, match="Received a 1-D input"), pytest.raises(RuntimeError) as torch_error:
        torch.nn.functional.dropout2d(torch.ones(4), 0.5)
    with pytest.warns(UserWarning, match="Received a 1-D input"), pytest.raises(RuntimeError) as error:
        F.dropout2d(np.ones(4), 0.5)
    assert str(error.value) == str(torch_error.value)


def test_integer_input_is_refused_when_a_mask_is_drawn_like_torch():
    with pytest.raises(RuntimeError, match="result type Float can't be cast to the desired output type Long"):
        F.dropout(np.arange(3), 0.5)


# ---------------------------------------------------------------------------------- tinynn's own draws
def test_manual_seed_makes_masks_repeatable():
    x = np.ones((4, 8, 3, 3))
    draws = []
    for seed in (3, 3, 4):
        tinynn.manual_seed(seed)
        draws.append((nn.Dropout(0.4)(x), nn.Dropout2d(0.4)(x)))
    assert all(np.array_equal(a, b) for a, b in zip(draws[0], draws[1]))
    assert not any(np.array_equal(a, b) for a, b in zip(draws[0], draws[2]))


@pytest.mark.parametrize("p", [0.1, 0.5, 0.85])
@pytest.mark.parametrize("channelwise", [False, True])
def test_keep_rate_is_one_minus_p_and_kept_values_are_scaled(p, channelwise):
    tinynn.manual_seed(11)
    n = 1_000_000
    x = np.ones((1000, 1000, 1, 1)) if channelwise else np.ones(n, dtype=np.float32)
    output = (F.dropout2d if channelwise else F.dropout)(x, p)
    kept = output != 0
    sigma = math.sqrt(p * (1 - p) / n)  # see DROPOUT_KEEP_RATE_SIGMAS
    assert abs(kept.mean() - (1 - p)) <= DROPOUT_KEEP_RATE_SIGMAS * sigma
    scale = x.dtype.type(1) / x.dtype.type(1 - p)  # torch's noise: 1 / (1 - p) in the input's dtype
    assert (output[kept] == scale).all()


@pytest.mark.parametrize("module_class", [nn.Dropout, nn.Dropout2d])
def test_gradcheck_with_a_fixed_mask(module_class):
    class FixedMask(nn.Module):
        """The same mask at every forward (gradcheck runs many): re-seed before each draw."""

        def __init__(self, inner: nn.Module) -> None:
            super().__init__()
            self.inner = inner

        def forward(self, x):
            tinynn.manual_seed(123)
            return self.inner(x)

        def backward(self, grad_output, needs_input_grad=True):
            return self.inner.backward(grad_output, needs_input_grad)

    x = np.random.default_rng(0).standard_normal((2, 3, 2, 2))
    module = FixedMask(module_class(0.4))
    gradcheck(module, x)
    assert (module(x) == 0).any()  # the check had dropped entries to get right


# ---------------------------------------------------------------------------------- replay's own errors
def test_replay_explains_shape_mismatches_empty_queues_and_unused_masks():
    real = tinynn.default_generator()
    torch_module = torch.nn.Sequential(torch.nn.Dropout(0.5))
    with pytest.raises(RuntimeError, match=r"asked for a mask of shape \(3,\), but torch's dropouts left none"):
        with replay_torch_dropout(torch_module):
            F.dropout(np.ones(3), 0.5)
    mismatch = r"shape \(3,\), but torch's next one, from its module '0', has shape \(4,\)"
    with pytest.raises(RuntimeError, match=mismatch):
        with replay_torch_dropout(torch_module, strict=False):
            torch_module(torch.ones(4))
            F.dropout(np.ones(3), 0.5)
    with pytest.raises(RuntimeError, match="1 of torch's dropout masks were never used"):
        with replay_torch_dropout(torch_module):
            torch_module(torch.ones(4))
    assert tinynn.default_generator() is real  # put back after every exit
    assert not torch_module[0]._forward_hooks and not torch_module[0]._forward_pre_hooks
    with replay_torch_dropout(torch_module):  # other draws (a DataLoader's shuffle) go to the real generator
        assert sorted(tinynn.default_generator().permutation(5)) == [0, 1, 2, 3, 4]


def test_replay_leaves_torch_random_stream_as_without_it():
    x = torch.ones(1000)
    torch.manual_seed(9)
    torch.nn.functional.dropout(x, 0.5)
    without = torch.rand(3)
    torch.manual_seed(9)
    module = torch.nn.Dropout(0.5)
    with replay_torch_dropout(module):
        module(x)
        F.dropout(np.ones(1000), 0.5)
    assert torch.equal(torch.rand(3), without)
