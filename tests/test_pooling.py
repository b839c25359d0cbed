"""Pooling: fast offset loops vs the loop reference vs torch float64, ties, finite differences, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import tinynn
import tinynn.nn as nn
import tinynn.nn.functional as F
from tests.helpers import assert_close, check_grad, random_array, random_grad, torch_tensor
from tests.strategies import relayout
from tinynn.nn import naive as ref
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_RTOL

TF = torch.nn.functional

# (input shape, kernel_size, stride, padding, dilation, ceil_mode)
MAX_CONFIGS = [
    ((2, 3, 8, 8), 2, None, 0, 1, False),
    ((2, 3, 9, 8), 3, 2, 1, 1, False),
    ((2, 3, 9, 8), 3, 2, 1, 1, True),  # ceil_mode: the last window hangs over the padding
    ((1, 2, 10, 7), (3, 2), (2, 1), (1, 0), (2, 1), True),
    ((2, 2, 7, 7), 3, 1, 1, 2, False),  # overlapping dilated windows
    ((1, 2, 6, 9), (2, 4), 3, (1, 2), 1, True),
]
# (input shape, kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
AVG_CONFIGS = [
    ((2, 3, 8, 8), 2, None, 0, False, True, None),
    ((2, 3, 9, 8), 3, 2, 1, False, True, None),
    ((2, 3, 9, 8), 3, 2, 1, True, True, None),
    ((2, 3, 9, 8), 3, 2, 1, True, False, None),
    ((1, 2, 7, 10), (3, 2), (2, 1), (1, 1), True, False, None),
    ((2, 2, 7, 7), 3, 1, 1, False, True, 4),
    ((1, 2, 5, 5), 2, 2, 1, True, True, None),  # windows clipped by the padded edge, not only the input
]
# (input shape, output_size)
ADAPTIVE_CONFIGS = [
    ((2, 3, 8, 8), 1),
    ((2, 3, 8, 8), (4, 2)),
    ((2, 3, 9, 7), (4, 3)),  # sizes that don't divide: overlapping bins
    ((2, 3, 5, 5), (7, 6)),  # output larger than input
    ((1, 2, 6, 7), (None, 3)),
    ((1, 2, 6, 7), (2, None)),
]


def _ids(configs: list) -> list[str]:
    return [str(i) for i in range(len(configs))]


def _torch_grad(fn, x, grad_output):
    tx = torch_tensor(x, True)
    out = fn(tx)
    out = out[0] if isinstance(out, tuple) else out
    out.backward(torch_tensor(np.ascontiguousarray(grad_output)))
    return tx.grad


# ------------------------------------------------------------------------------------ max pool
@pytest.mark.parametrize("config", MAX_CONFIGS, ids=_ids(MAX_CONFIGS))
def test_max_pool2d_matches_reference_and_torch_float64(config):
    shape, kernel, stride, padding, dilation, ceil_mode = config
    rng = np.random.default_rng(0)
    x = random_array(rng, shape)
    args = (kernel, stride, padding, dilation, ceil_mode)
    out, indices = F.max_pool2d(x, *args, return_indices=True)
    t_out, t_indices = TF.max_pool2d(torch_tensor(x), *args, return_indices=True)
    ref_out, ref_indices = ref.max_pool2d(x, *args)
    assert_close(out, t_out, rtol=TORCH_F64_RTOL, name="output")
    assert_close(ref_out, t_out, rtol=TORCH_F64_RTOL, name="reference output")
    np.testing.assert_array_equal(indices, t_indices.numpy())
    np.testing.assert_array_equal(ref_indices, t_indices.numpy())
    grad_output = random_grad(rng, out.shape)
    expected = _torch_grad(lambda t: TF.max_pool2d(t, *args), x, grad_output)
    assert_close(F.max_pool2d_backward(grad_output, x, *args, indices=indices), expected, rtol=TORCH_F64_RTOL,
                 name="grad_input")
    assert_close(F.max_pool2d_backward(grad_output, x, *args), expected, rtol=TORCH_F64_RTOL, name="grad (no indices)")
    assert_close(ref.max_pool2d_backward(grad_output, x, ref_indices), expected, rtol=TORCH_F64_RTOL,
                 name="reference grad_input")


@pytest.mark.parametrize("config", MAX_CONFIGS[1:], ids=_ids(MAX_CONFIGS[1:]))
def test_max_pool2d_ties_send_the_whole_gradient_where_torch_does(config):
    shape, kernel, stride, padding, dilation, ceil_mode = config
    rng = np.random.default_rng(1)
    x = rng.integers(0, 2, shape).astype(np.float64)  # windows full of equal maxima
    args = (kernel, stride, padding, dilation, ceil_mode)
    _, indices = F.max_pool2d(x, *args, return_indices=True)
    np.testing.assert_array_equal(indices, TF.max_pool2d(torch_tensor(x), *args, return_indices=True)[1].numpy())
    grad_output = random_grad(rng, indices.shape)
    expected = _torch_grad(lambda t: TF.max_pool2d(t, *args), x, grad_output)
    assert_close(F.max_pool2d_backward(grad_output, x, *args), expected, rtol=TORCH_F64_RTOL, name="grad_input")


def test_max_pool2d_nan_and_all_minus_inf_windows_pick_torchs_element():
    x = np.array([[[[1.0, np.nan, 2.0, np.nan], [-np.inf, -np.inf, 0.5, np.nan]]]])
    for args in (((1, 4), None, 0), (2, 1, 1), (2, 2, 1)):
        out, indices = F.max_pool2d(x, *args, return_indices=True)
        t_out, t_indices = TF.max_pool2d(torch_tensor(x), *args, return_indices=True)
        np.testing.assert_array_equal(indices, t_indices.numpy())
        np.testing.assert_array_equal(out, t_out.numpy())


def test_max_pool2d_backward_matches_finite_differences_away_from_ties():
    rng = np.random.default_rng(2)
    x = rng.permutation(2 * 2 * 7 * 6).reshape(2, 2, 7, 6) * 0.1 - 4.0  # distinct values: no kinks within FD_STEP
    args = (3, 2, 1, 1, True)
    grad_output = random_grad(rng, F.max_pool2d(x, *args).shape)
    check_grad(lambda v: F.max_pool2d(v, *args), x, grad_output, F.max_pool2d_backward(grad_output, x, *args))


def test_max_pool2d_rejects_indices_outside_their_windows():
    x = np.zeros((1, 1, 4, 4))
    with pytest.raises(RuntimeError, match="indices do not point into their pooling windows"):
        F.max_pool2d_backward(np.ones((1, 1, 2, 2)), x, 2, indices=np.full((1, 1, 2, 2), 15))


# ------------------------------------------------------------------------------------ avg pool
@pytest.mark.parametrize("config", AVG_CONFIGS, ids=_ids(AVG_CONFIGS))
def test_avg_pool2d_matches_reference_and_torch_float64(config):
    shape, *args = config
    rng = np.random.default_rng(3)
    x = random_array(rng, shape)
    out = F.avg_pool2d(x, *args)
    expected = TF.avg_pool2d(torch_tensor(x), *args)
    assert_close(out, expected, rtol=TORCH_F64_RTOL, name="output")
    assert_close(ref.avg_pool2d(x, *args), expected, rtol=TORCH_F64_RTOL, name="reference output")
    grad_output = random_grad(rng, out.shape)
    t_grad = _torch_grad(lambda t: TF.avg_pool2d(t, *args), x, grad_output)
    assert_close(F.avg_pool2d_backward(grad_output, x, *args), t_grad, rtol=TORCH_F64_RTOL, name="grad_input")
    assert_close(ref.avg_pool2d_backward(grad_output, x, *args), t_grad, rtol=TORCH_F64_RTOL,
                 name="reference grad_input")


@pytest.mark.parametrize("config", [AVG_CONFIGS[2], AVG_CONFIGS[4]])
def test_avg_pool2d_backward_matches_finite_differences(config):
    shape, *args = config
    rng = np.random.default_rng(4)
    x = random_array(rng, (1, *shape[1:]))
    grad_output = random_grad(rng, F.avg_pool2d(x, *args).shape)
    check_grad(lambda v: F.avg_pool2d(v, *args), x, grad_output, F.avg_pool2d_backward(grad_output, x, *args))


# ------------------------------------------------------------------------------------ adaptive avg pool
@pytest.mark.parametrize("config", ADAPTIVE_CONFIGS, ids=_ids(ADAPTIVE_CONFIGS))
def test_adaptive_avg_pool2d_matches_reference_and_torch_float64(config):
    shape, output_size = config
    rng = np.random.default_rng(5)
    x = random_array(rng, shape)
    out = F.adaptive_avg_pool2d(x, output_size)
    expected = TF.adaptive_avg_pool2d(torch_tensor(x), output_size)
    assert_close(out, expected, rtol=TORCH_F64_RTOL, name="output")
    assert_close(ref.adaptive_avg_pool2d(x, expected.shape[2:]), expected, rtol=TORCH_F64_RTOL,
                 name="reference output")
    grad_output = random_grad(rng, out.shape)
    t_grad = _torch_grad(lambda t: TF.adaptive_avg_pool2d(t, output_size), x, grad_output)
    assert_close(F.adaptive_avg_pool2d_backward(grad_output, x), t_grad, rtol=TORCH_F64_RTOL, name="grad_input")
    assert_close(ref.adaptive_avg_pool2d_backward(grad_output, x), t_grad, rtol=TORCH_F64_RTOL,
                 name="reference grad_input")


@pytest.mark.parametrize("output_size", [(4, 3), 1])
def test_adaptive_avg_pool2d_backward_matches_finite_differences(output_size):
    rng = np.random.default_rng(6)
    x = random_array(rng, (1, 2, 9, 7))
    grad_output = random_grad(rng, F.adaptive_avg_pool2d(x, output_size).shape)
    check_grad(lambda v: F.adaptive_avg_pool2d(v, output_size), x, grad_output,
               F.adaptive_avg_pool2d_backward(grad_output, x))


def test_the_engines_adaptive_avg_pool2d_backward_is_channels_last_for_the_next_backward():
    x = np.ascontiguousarray(np.ones((4, 5, 5, 10), np.float32)).transpose(0, 3, 1, 2)
    with tinynn.textbook(False):  # a layout the engine chooses for speed; the textbook leaves it to NumPy
        grad = F.adaptive_avg_pool2d_backward(np.ones((4, 10, 1, 1), np.float32), x)
    assert grad.shape == (4, 10, 5, 5) and grad.transpose(0, 2, 3, 1).flags.c_contiguous
    np.testing.assert_array_equal(grad, np.full((4, 10, 5, 5), 1 / 25, np.float32))


# ------------------------------------------------------------------------------------ all three
POOLS = [
    ("max", lambda x: F.max_pool2d(x, 3, 2, 1, ceil_mode=True), lambda t: TF.max_pool2d(t, 3, 2, 1, ceil_mode=True),
     lambda g, x: F.max_pool2d_backward(g, x, 3, 2, 1, ceil_mode=True)),
    ("avg", lambda x: F.avg_pool2d(x, 3, 2, 1, True, False), lambda t: TF.avg_pool2d(t, 3, 2, 1, True, False),
     lambda g, x: F.avg_pool2d_backward(g, x, 3, 2, 1, True, False)),
    ("adaptive", lambda x: F.adaptive_avg_pool2d(x, (3, 4)), lambda t: TF.adaptive_avg_pool2d(t, (3, 4)),
     F.adaptive_avg_pool2d_backward),
    ("global", lambda x: F.adaptive_avg_pool2d(x, 1), lambda t: TF.adaptive_avg_pool2d(t, 1),
     F.adaptive_avg_pool2d_backward),
]


@pytest.mark.parametrize("name, forward, torch_forward, backward", POOLS, ids=[p[0] for p in POOLS])
def test_pooling_float32_matches_torch_and_stays_float32(name, forward, torch_forward, backward):
    rng = np.random.default_rng(7)
    x = random_array(rng, (4, 8, 11, 10), dtype=np.float32)
    out = forward(x)
    grad_output = random_grad(rng, out.shape, dtype=np.float32)
    grad = backward(grad_output, x)
    assert out.dtype == np.float32 and grad.dtype == np.float32
    assert_close(out, torch_forward(torch_tensor(x)), rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name="output")
    assert_close(grad, _torch_grad(torch_forward, x, grad_output), rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL,
                 name="grad_input")


# Shapes whose bins tile the input or not, a width of 1 and 33x33 planes: reducing a strided
# view let NumPy choose the order of additions from the layout, which changed the last bits.
# The engine promises the same bits in every layout; the textbook code reduces whatever view it is
# given, so its last bits may follow the layout (its properties hold it to torch's tolerance).
@pytest.mark.parametrize("shape", [(2, 3, 9, 8), (2, 17, 33, 33), (2, 17, 9, 1), (1, 1, 16, 16)])
@pytest.mark.parametrize("name, forward, torch_forward, backward", POOLS, ids=[p[0] for p in POOLS])
@tinynn.textbook(False)
def test_the_engines_pooling_gives_identical_values_in_every_memory_layout(name, forward, torch_forward, backward,
                                                                           shape):
    rng = np.random.default_rng(8)
    x = random_array(rng, shape)
    out = forward(x)
    grad_output = random_grad(rng, out.shape)
    grad = backward(grad_output, x)
    for layout in ("F", "channels_last", "strided"):
        np.testing.assert_array_equal(forward(relayout(x, layout)), out, err_msg=f"{layout} forward")
        np.testing.assert_array_equal(backward(relayout(grad_output, layout), relayout(x, layout)), grad,
                                      err_msg=f"{layout} backward")


@pytest.mark.parametrize("name, forward, torch_forward, backward", POOLS, ids=[p[0] for p in POOLS])
def test_pooling_accepts_unbatched_3d_input_like_torch(name, forward, torch_forward, backward):
    rng = np.random.default_rng(9)
    x = random_array(rng, (3, 9, 8))
    out = forward(x)
    assert_close(out, torch_forward(torch_tensor(x)), rtol=TORCH_F64_RTOL, name="output")
    grad_output = random_grad(rng, out.shape)
    assert_close(backward(grad_output, x), _torch_grad(torch_forward, x, grad_output), rtol=TORCH_F64_RTOL,
                 name="grad_input")


# ------------------------------------------------------------------------------------ modules
MODULES = [
    ((nn.MaxPool2d, torch.nn.MaxPool2d), (3, 2, 1), {"ceil_mode": True}),
    ((nn.MaxPool2d, torch.nn.MaxPool2d), (2,), {}),
    ((nn.AvgPool2d, torch.nn.AvgPool2d), ((2, 3), 1, 1), {"count_include_pad": False}),
    ((nn.AvgPool2d, torch.nn.AvgPool2d), (2,), {}),
    ((nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d), (1,), {}),
    ((nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool2d), ((None, 3),), {}),
]


@pytest.mark.parametrize("classes, args, kwargs", MODULES, ids=_ids(MODULES))
def test_pooling_modules_match_torch_in_repr_output_and_grad(classes, args, kwargs):
    ours, theirs = classes[0](*args, **kwargs), classes[1](*args, **kwargs)
    assert repr(ours) == repr(theirs)
    rng = np.random.default_rng(10)
    x = random_array(rng, (2, 3, 8, 9))
    out = ours(x)
    grad_output = random_grad(rng, out.shape)
    assert_close(out, theirs(torch_tensor(x)), rtol=TORCH_F64_RTOL, name="output")
    assert_close(ours.backward(grad_output), _torch_grad(theirs, x, grad_output), rtol=TORCH_F64_RTOL, name="grad")
    ours(x)
    assert ours.backward(grad_output, needs_input_grad=False) is None


def test_max_pool2d_module_returns_torchs_indices():
    x = random_array(np.random.default_rng(11), (2, 3, 7, 7))
    out, indices = nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=True)(x)
    t_out, t_indices = torch.nn.MaxPool2d(3, 2, 1, return_indices=True, ceil_mode=True)(torch_tensor(x))
    np.testing.assert_array_equal(out, t_out.numpy())
    np.testing.assert_array_equal(indices, t_indices.numpy())
    assert indices.dtype == np.int64


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("pool", [F.max_pool2d, F.avg_pool2d])
@pytest.mark.parametrize("args, kwargs, message", [
    ((3,), {"padding": 2}, r"pad should be at most half of effective kernel size, but got pad=2, kernel_size=3 and "
                           r"dilation=1"),
    ((3,), {"stride": 0}, "stride should not be zero"),
    ((3,), {"stride": -1}, r"stride should be greater than zero, but got dH: -1 dW: -1"),
    ((0, 1), {}, r"kernel size should be greater than zero, but got kH: 0 kW: 0"),
    ((3,), {"padding": -1}, r"pad must be non-negative, but got pad: -1"),
    (((3, 2, 1),), {}, r"kernel_size must either be a single int, or a tuple of two ints"),
    ((3,), {"stride": (1, 2, 3)}, r"stride must either be omitted, a single int, or a tuple of two ints"),
])
def test_pooling_bad_arguments_raise(pool, args, kwargs, message):
    with pytest.raises(RuntimeError, match=message):
        pool(np.zeros((1, 1, 5, 5)), *args, **kwargs)


def test_max_pool2d_padding_is_bounded_by_half_the_kernel_even_when_dilated():
    # Found by the property tests: ((k - 1) * d + 1) // 2 allowed pad=2 for k=3, d=2, which torch refuses.
    x = np.zeros((1, 1, 7, 7))
    with pytest.raises(RuntimeError, match=r"pad should be smaller than or equal to half of kernel size, but got "
                                           r"padW = 2, padH = 0, kW = 3, kH = 3"):
        F.max_pool2d(x, 3, padding=(0, 2), dilation=2)
    with pytest.raises(RuntimeError, match="half of kernel size"):
        nn.MaxPool2d(2, padding=(1, 2), dilation=3)(x)
    expected = torch.nn.functional.max_pool2d(torch.zeros(1, 1, 7, 7), 3, stride=1, padding=1, dilation=2)
    assert F.max_pool2d(x, 3, stride=1, padding=1, dilation=2).shape == tuple(expected.shape)


def test_pooling_output_too_small_and_bad_rank_raise():
    with pytest.raises(RuntimeError, match=r"Given input size: \(1x2x2\). Calculated output size: \(1x0x0\)"):
        F.max_pool2d(np.zeros((1, 1, 2, 2)), 3)
    with pytest.raises(RuntimeError, match=r"Expected 3D or 4D \(batch mode\) tensor"):
        F.avg_pool2d(np.zeros((5, 5)), 2)
    with pytest.raises(RuntimeError, match=r"dilation should be greater than zero, but got dilationH: 0"):
        F.max_pool2d(np.zeros((1, 1, 5, 5)), 3, dilation=0)
    with pytest.raises(RuntimeError, match="divisor must be not zero"):
        F.avg_pool2d(np.zeros((1, 1, 5, 5)), 3, divisor_override=0)


@pytest.mark.parametrize("shape, output_size, message", [
    ((5, 5), 3, r"adaptive_avg_pool2d\(\): Expected 3D or 4D tensor, but got \[5, 5\]"),
    ((1, 1, 5, 5), (1, 2, 3), "adaptive_avg_pool2d: output_size must be 2"),
    ((1, 1, 5, 5), -1, r"elements of output_size must be greater than or equal to 0 but received \{-1, -1\}"),
    ((1, 1, 0, 5), 2, r"input has sizes \[1, 1, 0, 5\] with dimension 2 being empty"),
])
def test_adaptive_avg_pool2d_bad_input_raises(shape, output_size, message):
    with pytest.raises(RuntimeError, match=message):
        F.adaptive_avg_pool2d(np.zeros(shape), output_size)
