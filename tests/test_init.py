"""tinynn.nn.init against torch.nn.init: exact fills exactly, random fills by their distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinynn
from tests.helpers import outcome
from tinynn import nn
from tinynn.nn import init
from tinynn.testing.tolerances import INIT_BOUND_RTOL, INIT_STD_RTOL, TORCH_F32_RTOL

SHAPES = [(400, 300), (200, 60, 3, 3), (30, 4000)]  # 120,000 draws each; fan_in != fan_out


def _both(name: str, shape: tuple[int, ...], *args, **kwargs) -> tuple[np.ndarray, np.ndarray]:
    ours = getattr(init, name)(np.empty(shape, np.float32), *args, generator=np.random.default_rng(0), **kwargs)
    theirs = getattr(torch.nn.init, name)(torch.empty(shape), *args, generator=torch.Generator().manual_seed(0),
                                          **kwargs)
    return ours, theirs.numpy()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name, args, kwargs", [
    ("xavier_uniform_", (), {}), ("xavier_uniform_", (0.5,), {}),
    ("kaiming_uniform_", (), {}), ("kaiming_uniform_", (), {"a": math.sqrt(5)}),
    ("kaiming_uniform_", (), {"mode": "fan_out", "nonlinearity": "relu"}),
])
def test_uniform_inits_reach_torchs_bound_and_spread(name, args, kwargs, shape):
    ours, theirs = _both(name, shape, *args, **kwargs)
    assert ours.dtype == np.float32
    bound = np.abs(theirs).max()
    assert abs(np.abs(ours).max() / bound - 1) < INIT_BOUND_RTOL
    assert abs(ours.std() / theirs.std() - 1) < INIT_STD_RTOL


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name, args, kwargs", [
    ("xavier_normal_", (), {}), ("xavier_normal_", (2.0,), {}),
    ("kaiming_normal_", (), {}), ("kaiming_normal_", (), {"mode": "fan_out", "nonlinearity": "relu"}),
    ("kaiming_normal_", (), {"a": 0.2, "mode": "FAN_IN"}),
])
def test_normal_inits_have_torchs_spread(name, args, kwargs, shape):
    ours, theirs = _both(name, shape, *args, **kwargs)
    assert ours.dtype == np.float32
    assert abs(ours.std() / theirs.std() - 1) < INIT_STD_RTOL
    assert abs(ours.mean()) < 5 * theirs.std() / math.sqrt(ours.size)  # five standard errors of the mean


@pytest.mark.parametrize("name, args", [("constant_", (0.25,)), ("ones_", ()), ("zeros_", ()), ("eye_", ())])
@pytest.mark.parametrize("shape", [(3, 5), (4, 4), (2, 3, 4)])
def test_exact_fills_equal_torchs_and_refuse_what_it_refuses(name, args, shape):
    ours = outcome(lambda: getattr(init, name)(np.full(shape, 7.0, np.float32), *args))
    theirs = outcome(lambda: getattr(torch.nn.init, name)(torch.full(shape, 7.0), *args).numpy())
    assert ours[0] == theirs[0]
    if ours[0] == "ok":
        assert ours[1].dtype == np.float32
        np.testing.assert_array_equal(ours[1], theirs[1])
    else:
        assert ours[1] == theirs[1]


def test_inits_fill_a_parameter_in_place_and_return_it():
    weight = nn.Parameter(np.zeros((3, 4), np.float32))
    data = weight.data
    assert init.xavier_uniform_(weight) is weight and weight.data is data and np.abs(data).max() > 0
    assert init.eye_(weight) is weight
    np.testing.assert_array_equal(data, np.eye(3, 4))


@pytest.mark.parametrize("nonlinearity, param", [
    ("linear", None), ("conv1d", None), ("conv_transpose3d", None), ("sigmoid", None), ("tanh", None),
    ("relu", None), ("leaky_relu", None), ("leaky_relu", 0.2), ("leaky_relu", 3), ("leaky_relu", True),
    ("leaky_relu", "0.2"), ("selu", None), ("gelu", None),
])
def test_calculate_gain_gives_torchs_table_and_errors(nonlinearity, param):
    ours = outcome(lambda: init.calculate_gain(nonlinearity, param))
    theirs = outcome(lambda: torch.nn.init.calculate_gain(nonlinearity, param))
    assert ours == theirs


@pytest.mark.parametrize("call", [
    lambda lib, t: lib.kaiming_uniform_(t, mode="fan_avg"),
    lambda lib, t: lib.kaiming_normal_(t[0], mode="fan_in"),
    lambda lib, t: lib.xavier_uniform_(t[0]),
])
def test_fan_errors_match_torch(call):
    ours = outcome(lambda: call(init, np.empty((3, 4), np.float32)))
    theirs = outcome(lambda: call(torch.nn.init, torch.empty(3, 4)))
    assert ours[0] == theirs[0] == "ValueError" and ours[1] == theirs[1]


@pytest.mark.parametrize("name", ["kaiming_uniform_", "kaiming_normal_"])
def test_kaiming_on_zero_elements_warns_like_torch_and_leaves_it(name):
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        getattr(torch.nn.init, name)(torch.empty(0, 3))
    array = np.empty((0, 3), np.float32)
    with pytest.warns(UserWarning, match="Initializing zero-element tensors is a no-op"):
        assert getattr(init, name)(array) is array


def test_a_generator_or_the_global_seed_makes_inits_reproducible():
    first = init.kaiming_normal_(np.empty((5, 6)), generator=np.random.default_rng(11))
    second = init.kaiming_normal_(np.empty((5, 6)), generator=np.random.default_rng(11))
    np.testing.assert_array_equal(first, second)
    tinynn.manual_seed(4)
    third = init.xavier_normal_(np.empty((5, 6)))
    tinynn.manual_seed(4)
    np.testing.assert_array_equal(init.xavier_normal_(np.empty((5, 6))), third)


@pytest.mark.parametrize("kwargs", [
    {}, {"mean": 0.5, "std": 2.0, "a": -1.0, "b": 3.0},  # [a, b] holds most of the normal: normal draws
    {"a": 1.5, "b": 3.0}, {"mean": 1.0, "std": 0.1, "a": 0.0, "b": 0.9},  # a sliver of it: uniform draws
])
def test_trunc_normal_stays_in_bounds_with_torchs_distribution(kwargs):
    ours, theirs = _both("trunc_normal_", SHAPES[0], **kwargs)
    low, high = kwargs.get("a", -2.0), kwargs.get("b", 2.0)
    assert ours.dtype == np.float32 and ours.min() >= np.float32(low) and ours.max() <= np.float32(high)
    assert abs(ours.std() / theirs.std() - 1) < INIT_STD_RTOL
    # Two sample means differ by about sqrt(2) standard errors; five of those is the bound.
    assert abs(ours.mean() - theirs.mean()) < 5 * math.sqrt(2) * theirs.std() / math.sqrt(ours.size)


def test_trunc_normal_warns_like_torch_when_the_mean_is_far_outside():
    message = "mean is more than 2 std from \\[a, b\\] in nn.init.trunc_normal_"
    with pytest.warns(UserWarning, match=message):
        torch.nn.init.trunc_normal_(torch.empty(10), mean=5.0)
    with pytest.warns(UserWarning, match=message):
        values = init.trunc_normal_(np.empty(10, np.float32), mean=5.0)
    assert values.max() <= 2.0


@pytest.mark.parametrize("shape, gain", [((5, 8), 1.0), ((8, 5), 2.0), ((6, 2, 3, 3), 0.5), ((4, 4), 1.0)])
def test_orthogonal_rows_or_columns_are_orthonormal_times_gain_as_in_torch(shape, gain):
    ours, theirs = _both("orthogonal_", shape, gain)
    for name, values in (("ours", ours), ("torch", theirs)):
        flat = values.reshape(shape[0], -1).astype(np.float64)
        gram = flat @ flat.T if flat.shape[0] <= flat.shape[1] else flat.T @ flat
        # Dot products of float32 entries: TORCH_F32_RTOL's K * eps reasoning, at the scale gain^2.
        np.testing.assert_allclose(gram, gain**2 * np.eye(len(gram)), atol=TORCH_F32_RTOL * gain**2, err_msg=name)


@pytest.mark.parametrize("name, shape, args", [
    ("dirac_", (4, 3, 3, 3), ()), ("dirac_", (6, 2, 3, 5), (2,)), ("dirac_", (2, 4, 5), ()), ("dirac_", (3, 3), ()),
    ("dirac_", (5, 2, 3, 3), (2,)), ("orthogonal_", (4,), ()), ("orthogonal_", (0, 3), ()),
])
def test_dirac_and_orthogonal_fill_and_refuse_as_torch(name, shape, args):
    ours = outcome(lambda: getattr(init, name)(np.full(shape, 7.0, np.float32), *args))
    theirs = outcome(lambda: getattr(torch.nn.init, name)(torch.full(shape, 7.0), *args).numpy())
    assert ours[0] == theirs[0]
    if ours[0] == "ok":
        np.testing.assert_array_equal(ours[1], theirs[1])
    else:
        assert ours[1] == theirs[1]


def test_orthogonal_is_uniform_over_rotations_and_reflections_like_torchs():
    # Haar-distributed Q has E[q00] = 0. Without the sign fix from R's diagonal, LAPACK's QR
    # makes q00 negative every time (mean -0.64 on 2x2): 2000 draws, q00's standard error is
    # 1/sqrt(2 * 2000) = 0.016, so 0.1 is six of them.
    rng = np.random.default_rng(0)
    ours = [init.orthogonal_(np.empty((2, 2)), generator=rng)[0, 0] for _ in range(2000)]
    generator = torch.Generator().manual_seed(0)
    theirs = [torch.nn.init.orthogonal_(torch.empty(2, 2), generator=generator)[0, 0].item() for _ in range(2000)]
    assert abs(np.mean(ours)) < 0.1 and abs(np.mean(theirs)) < 0.1


@pytest.mark.parametrize("shape, sparsity", [((300, 400), 0.1), ((7, 3), 0.3), ((10, 3), 0.0), ((4, 2), 1.0)])
def test_sparse_zeroes_as_many_entries_per_column_as_torch_and_spreads_the_rest(shape, sparsity):
    ours, theirs = _both("sparse_", shape, sparsity)
    np.testing.assert_array_equal((ours == 0).sum(axis=0), (theirs == 0).sum(axis=0))
    if ours.size >= 100_000:
        assert abs(ours[ours != 0].std() / theirs[theirs != 0].std() - 1) < INIT_STD_RTOL


def test_sparse_refuses_what_torch_refuses():
    ours = outcome(lambda: init.sparse_(np.empty((2, 3, 4)), 0.5))
    theirs = outcome(lambda: torch.nn.init.sparse_(torch.empty(2, 3, 4), 0.5))
    assert ours == theirs and ours[0] == "ValueError"
