"""Conv2d: fast im2col path vs the loop reference vs torch float64, finite differences, float32, layouts, errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import tinynn
import tinynn.nn as nn
import tinynn.nn.functional as F
from tests.helpers import assert_close, check_grad, random_array, random_grad, split_batches, torch_tensor
from tinynn.nn import naive
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_ATOL, TORCH_F64_RTOL

# torch warns that it copies the input for 'same' with even kernels; tinynn pads asymmetrically the same way.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

# (input shape, out_channels, kernel_size, stride, padding, dilation, groups, bias)
CONFIGS = [
    ((2, 3, 7, 7), 4, 3, 1, 0, 1, 1, True),
    ((2, 3, 8, 9), 5, 3, 2, 1, 1, 1, True),  # the tutorial's stride-2 layer, non-square input
    ((3, 1, 12, 12), 6, 3, 2, 1, 1, 1, True),  # one input channel: im2col's per-offset copy
    ((2, 4, 9, 7), 6, (3, 2), (2, 1), (1, 0), 1, 2, True),  # tuples everywhere, 2 groups
    ((1, 6, 10, 11), 6, 3, 1, 2, 2, 3, False),  # dilation, 3 groups, no bias
    ((2, 4, 6, 6), 4, 3, 1, "same", 1, 4, True),  # depthwise, 'same'
    ((2, 3, 9, 8), 2, (2, 4), 1, "same", (2, 1), 1, True),  # 'same' with even kernels: asymmetric padding
    ((2, 3, 6, 5), 4, 3, 1, "valid", 1, 1, False),
    ((2, 2, 5, 5), 3, 5, 3, 2, 1, 1, True),  # kernel as large as the padded-away input; stride > kernel/2
    ((2, 2, 4, 4), 3, 1, 1, 0, 1, 1, True),  # 1x1 convolution
    ((2, 3, 7, 6), 4, 2, 3, (0, 1), (1, 2), 1, True),  # stride larger than the kernel
]


def _case(config: tuple, dtype: type = np.float64, seed: int = 0):
    shape, out_channels, kernel, stride, padding, dilation, groups, has_bias = config
    rng = np.random.default_rng(seed)
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = random_array(rng, shape, dtype=dtype)
    weight = random_array(rng, (out_channels, shape[1] // groups, kh, kw), dtype=dtype)
    bias = random_array(rng, (out_channels,), dtype=dtype) if has_bias else None
    return rng, x, weight, bias, dict(stride=stride, padding=padding, dilation=dilation, groups=groups)


def _torch_conv(x, weight, bias, kwargs, grad_output=None):
    tx, tw = torch_tensor(x, True), torch_tensor(weight, True)
    tb = None if bias is None else torch_tensor(bias, True)
    out = torch.nn.functional.conv2d(tx, tw, tb, **kwargs)
    if grad_output is None:
        return out
    out.backward(torch_tensor(np.ascontiguousarray(grad_output)))
    return out, tx.grad, tw.grad, (None if tb is None else tb.grad)


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_conv2d_forward_matches_reference_and_torch_float64(config):
    _, x, weight, bias, kwargs = _case(config)
    fast = F.conv2d(x, weight, bias, **kwargs)
    expected = _torch_conv(x, weight, bias, kwargs)
    assert_close(fast, expected, rtol=TORCH_F64_RTOL, atol=TORCH_F64_ATOL, name="conv2d vs torch")
    assert_close(naive.conv2d(x, weight, bias, **kwargs), expected, rtol=TORCH_F64_RTOL, name="reference vs torch")
    assert_close(fast, naive.conv2d(x, weight, bias, **kwargs), rtol=TORCH_F64_RTOL, name="fast vs reference")


@pytest.mark.parametrize("config", CONFIGS, ids=[str(i) for i in range(len(CONFIGS))])
def test_conv2d_backward_matches_reference_and_torch_float64(config):
    rng, x, weight, bias, kwargs = _case(config)
    grad_output = random_grad(rng, F.conv2d(x, weight, bias, **kwargs).shape)
    _, t_dx, t_dw, t_db = _torch_conv(x, weight, bias, kwargs, grad_output)
    dx, dw, db = F.conv2d_backward(grad_output, x, weight, has_bias=bias is not None, **kwargs)
    ref_dx, ref_dw, ref_db = naive.conv2d_backward(grad_output, x, weight, **kwargs)
    for name, fast, ref, expected in (("grad_input", dx, ref_dx, t_dx), ("grad_weight", dw, ref_dw, t_dw)):
        assert_close(fast, expected, rtol=TORCH_F64_RTOL, name=f"{name} vs torch")
        assert_close(ref, expected, rtol=TORCH_F64_RTOL, name=f"reference {name} vs torch")
    if bias is None:
        assert db is None
    else:
        assert_close(db, t_db, rtol=TORCH_F64_RTOL, name="grad_bias vs torch")
        assert_close(ref_db, t_db, rtol=TORCH_F64_RTOL, name="reference grad_bias vs torch")


@pytest.mark.parametrize("config", [CONFIGS[1], CONFIGS[3], CONFIGS[4], CONFIGS[6]])
def test_conv2d_backward_matches_finite_differences(config):
    shape, out_channels, kernel, stride, padding, dilation, groups, _ = config
    small = ((1, shape[1], min(shape[2], 6), min(shape[3], 6)), out_channels, kernel, stride, padding, dilation,
             groups, True)
    rng, x, weight, bias, kwargs = _case(small, seed=1)
    grad_output = random_grad(rng, F.conv2d(x, weight, bias, **kwargs).shape)
    dx, dw, db = F.conv2d_backward(grad_output, x, weight, **kwargs)
    check_grad(lambda v: F.conv2d(v, weight, bias, **kwargs), x, grad_output, dx, name="grad_input")
    check_grad(lambda v: F.conv2d(x, v, bias, **kwargs), weight, grad_output, dw, name="grad_weight")
    check_grad(lambda v: F.conv2d(x, weight, v, **kwargs), bias, grad_output, db, name="grad_bias")


def test_conv2d_float32_matches_torch_and_stays_float32():
    rng, x, weight, bias, kwargs = _case(((8, 16, 14, 14), 16, 3, 2, 1, 1, 1, True), dtype=np.float32)
    grad_output = random_grad(rng, (8, 16, 7, 7), dtype=np.float32)
    out = F.conv2d(x, weight, bias, **kwargs)
    dx, dw, db = F.conv2d_backward(grad_output, x, weight, **kwargs)
    t_out, t_dx, t_dw, t_db = _torch_conv(x, weight, bias, kwargs, grad_output)
    for name, value, expected in (("output", out, t_out), ("grad_input", dx, t_dx), ("grad_weight", dw, t_dw),
                                  ("grad_bias", db, t_db)):
        assert value.dtype == np.float32, name
        assert_close(value, expected, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name=name)


def test_conv2d_channels_last_input_and_grad_give_identical_values():
    rng, x, weight, bias, kwargs = _case(CONFIGS[3])
    x_last = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    out = F.conv2d(x, weight, bias, **kwargs)
    np.testing.assert_array_equal(F.conv2d(x_last, weight, bias, **kwargs), out)
    grad_output = random_grad(rng, out.shape)
    grad_last = np.ascontiguousarray(grad_output.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    for a, b in zip(F.conv2d_backward(grad_output, x, weight, **kwargs),
                    F.conv2d_backward(grad_last, x_last, weight, **kwargs)):
        np.testing.assert_array_equal(a, b)


def test_conv2d_output_is_channels_last_in_memory():
    _, x, weight, bias, kwargs = _case(CONFIGS[1])
    out = F.conv2d(x, weight, bias, **kwargs)
    assert out.transpose(0, 2, 3, 1).flags.c_contiguous


def test_conv2d_accepts_unbatched_3d_input_like_torch():
    rng, x, weight, bias, kwargs = _case(CONFIGS[3])
    x3 = x[0]
    out = F.conv2d(x3, weight, bias, **kwargs)
    grad_output = random_grad(rng, out.shape)
    t_out, t_dx, t_dw, t_db = _torch_conv(x3, weight, bias, kwargs, grad_output)
    assert_close(out, t_out, rtol=TORCH_F64_RTOL, name="output")
    dx, dw, db = F.conv2d_backward(grad_output, x3, weight, **kwargs)
    assert_close(dx, t_dx, rtol=TORCH_F64_RTOL, name="grad_input")
    assert_close(dw, t_dw, rtol=TORCH_F64_RTOL, name="grad_weight")
    assert_close(db, t_db, rtol=TORCH_F64_RTOL, name="grad_bias")
    conv = nn.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(1, 0), groups=2, dtype=np.float64)
    assert conv(x3).shape == t_out.shape and conv.backward(grad_output).shape == x3.shape


def test_conv2d_empty_batch_gives_empty_output_and_zero_grads():
    _, x, weight, bias, kwargs = _case(((0, 3, 7, 7), 4, 3, 1, 1, 1, 1, True))
    out = F.conv2d(x, weight, bias, **kwargs)
    assert out.shape == (0, 4, 7, 7)
    dx, dw, db = F.conv2d_backward(out, x, weight, **kwargs)
    assert dx.shape == x.shape and not dw.any() and not db.any()


def test_conv2d_backward_skips_input_grad_when_not_needed():
    rng, x, weight, bias, kwargs = _case(CONFIGS[1])
    grad_output = random_grad(rng, F.conv2d(x, weight, bias, **kwargs).shape)
    dx, dw, db = F.conv2d_backward(grad_output, x, weight, needs_input_grad=False, **kwargs)
    assert dx is None
    _, full_dw, full_db = F.conv2d_backward(grad_output, x, weight, **kwargs)
    np.testing.assert_array_equal(dw, full_dw)
    np.testing.assert_array_equal(db, full_db)


# ------------------------------------------------------------------------------------ module
def _module_pair(seed: int = 0, **kwargs):
    conv = nn.Conv2d(4, 6, (3, 2), dtype=np.float64, **kwargs)
    reference = torch.nn.Conv2d(4, 6, (3, 2), dtype=torch.float64, **kwargs)
    with torch.no_grad():
        reference.weight.copy_(torch.from_numpy(conv.weight.data))
        if conv.bias is not None:
            reference.bias.copy_(torch.from_numpy(conv.bias.data))
    return conv, reference


def test_conv2d_module_grads_match_torch_and_accumulate():
    conv, reference = _module_pair(stride=(2, 1), padding=1, groups=2)
    rng = np.random.default_rng(3)
    x = random_array(rng, (3, 4, 9, 8))
    tx = torch_tensor(x, True)
    grad_output = random_grad(rng, reference(tx).shape)
    for _ in range(2):  # two backward calls: gradients add up, as in torch
        out = conv(x)
        grad_input = conv.backward(grad_output)
        tx.grad = None
        t_out = reference(tx)
        t_out.backward(torch_tensor(grad_output))
    assert_close(out, t_out, rtol=TORCH_F64_RTOL, name="output")
    assert_close(grad_input, tx.grad, rtol=TORCH_F64_RTOL, name="grad_input")
    assert_close(conv.weight.grad, reference.weight.grad, rtol=TORCH_F64_RTOL, name="weight.grad")
    assert_close(conv.bias.grad, reference.bias.grad, rtol=TORCH_F64_RTOL, name="bias.grad")


def test_conv2d_module_needs_input_grad_false_returns_none_and_still_fills_weight_grads():
    conv, reference = _module_pair(bias=False)
    x = random_array(np.random.default_rng(4), (2, 4, 6, 6))
    out = conv(x)
    assert conv.backward(np.ones_like(out), needs_input_grad=False) is None
    reference(torch_tensor(x)).sum().backward()
    assert_close(conv.weight.grad, reference.weight.grad, rtol=TORCH_F64_RTOL, name="weight.grad")


def test_conv2d_module_results_are_not_overwritten_by_later_calls():
    # The module reuses scratch buffers between calls; nothing it returns may live in them.
    conv = nn.Conv2d(2, 3, 3, padding=1, dtype=np.float64)
    rng = np.random.default_rng(5)
    x1, x2 = random_array(rng, (2, 2, 5, 5)), random_array(rng, (2, 2, 5, 5))
    out1 = conv(x1)
    kept = out1.copy()
    grad1 = conv.backward(np.ones_like(out1))
    grad1_kept = grad1.copy()
    out2 = conv(x2)
    conv.backward(out2)
    np.testing.assert_array_equal(out1, kept)
    np.testing.assert_array_equal(grad1, grad1_kept)
    # The backward uses the latest forward's input.
    conv.zero_grad()
    conv(x1)
    conv(x2)
    conv.backward(np.ones_like(out2))
    np.testing.assert_array_equal(conv.weight.grad, F.conv2d_backward(np.ones_like(out2), x2, conv.weight.data,
                                                                       padding=1)[1])


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("chunked", [False, True])
def test_conv2d_module_reusing_its_padded_buffer_across_shapes_matches_torch(in_channels, chunked):
    # The module writes its padded buffer's zero border only when the shape changes; in between,
    # only the inside of the image is written. Calls that change the batch, the image size, then
    # come back, must each see zeros on the border (inputs are far from zero, so stale values show).
    conv = nn.Conv2d(in_channels, 4, 3, stride=2, padding=(1, 2), dtype=np.float64)
    reference = torch.nn.Conv2d(in_channels, 4, 3, stride=2, padding=(1, 2), dtype=torch.float64)
    reference.load_state_dict({name: torch.from_numpy(value) for name, value in conv.state_dict().items()})
    rng = np.random.default_rng(6)
    with split_batches(2, chunked):
        for batch, height, width in [(3, 8, 7), (3, 8, 7), (2, 8, 7), (3, 9, 6), (3, 8, 7)]:
            x = 10 + random_array(rng, (batch, in_channels, height, width))
            tx = torch_tensor(x, True)
            t_out = reference(tx)
            grad_output = random_grad(rng, t_out.shape)
            t_out.backward(torch_tensor(grad_output))
            shape = f"input {[batch, in_channels, height, width]}"
            assert_close(conv(x), t_out, rtol=TORCH_F64_RTOL, name=f"output, {shape}")
            assert_close(conv.backward(grad_output), tx.grad, rtol=TORCH_F64_RTOL, name=f"grad_input, {shape}")
    assert_close(conv.weight.grad, reference.weight.grad, rtol=TORCH_F64_RTOL, name="weight.grad")
    assert_close(conv.bias.grad, reference.bias.grad, rtol=TORCH_F64_RTOL, name="bias.grad")


def test_conv2d_module_backward_without_forward_or_after_no_grad_raises():
    conv = nn.Conv2d(1, 2, 3)
    with pytest.raises(RuntimeError, match="run a forward first"):
        conv.backward(np.ones((1, 2, 3, 3), dtype=np.float32))
    with tinynn.no_grad():
        out = conv(np.ones((1, 1, 5, 5), dtype=np.float32))
    with pytest.raises(RuntimeError, match="no_grad"):
        conv.backward(np.ones_like(out))


def test_conv2d_module_init_is_torch_default_and_float32():
    conv = nn.Conv2d(6, 8, (3, 5), groups=2)
    bound = 1 / math.sqrt(3 * 3 * 5)  # fan_in = in_channels / groups * kh * kw
    assert conv.weight.shape == (8, 3, 3, 5) and conv.bias.shape == (8,)
    assert conv.weight.dtype == np.float32 and conv.bias.dtype == np.float32
    assert np.abs(conv.weight.data).max() <= bound and np.abs(conv.weight.data).max() > 0.8 * bound
    assert np.abs(conv.bias.data).max() <= bound
    assert nn.Conv2d(1, 1, 1, dtype=np.float64).weight.dtype == np.float64
    assert conv(np.zeros((1, 6, 5, 5), dtype=np.float32)).dtype == np.float32


@pytest.mark.parametrize("args, kwargs", [
    ((1, 16, 3, 2, 1), {}),
    ((1, 16, 3), {"stride": 2, "padding": 1, "dilation": 2, "bias": False}),
    ((4, 4, (3, 2)), {"padding": "same", "groups": 2}),
    ((4, 4, 3), {"padding": "valid"}),
    ((2, 3, 1), {}),
])
def test_conv2d_repr_matches_torch(args, kwargs):
    assert repr(nn.Conv2d(*args, **kwargs)) == repr(torch.nn.Conv2d(*args, **kwargs))


# ------------------------------------------------------------------------------------ errors
def test_conv2d_wrong_channel_count_error_names_shapes():
    with pytest.raises(RuntimeError, match=r"Given groups=1, weight of size \[16, 1, 3, 3\], expected "
                                           r"input\[64, 3, 28, 28\] to have 1 channels, but got 3 channels instead"):
        F.conv2d(np.zeros((64, 3, 28, 28), np.float32), np.zeros((16, 1, 3, 3), np.float32))


@pytest.mark.parametrize("shape", [(64, 784), (1, 1, 2, 5, 5)])
def test_conv2d_rejects_input_that_is_not_3d_or_4d(shape):
    with pytest.raises(RuntimeError, match=r"Expected 3D \(unbatched\) or 4D \(batched\) input to conv2d"):
        F.conv2d(np.zeros(shape, np.float32), np.zeros((2, 1, 3, 3), np.float32))


@pytest.mark.parametrize("kwargs, message", [
    ({"stride": 0}, "non-positive stride is not supported"),
    ({"stride": (1, -1)}, "non-positive stride is not supported"),
    ({"dilation": 0}, "dilation should be greater than zero"),
    ({"padding": -1}, "negative padding is not supported"),
    ({"groups": 0}, "non-positive groups is not supported"),
    ({"stride": 2, "padding": "same"}, "padding='same' is not supported for strided convolutions"),
    ({"padding": "full"}, "Invalid padding string: 'full'"),
    ({"stride": (1, 2, 3)}, "expected stride to be a single integer value or a list of 2 values"),
])
def test_conv2d_bad_arguments_raise(kwargs, message):
    with pytest.raises(RuntimeError, match=message):
        F.conv2d(np.zeros((1, 2, 5, 5), np.float32), np.zeros((2, 2, 3, 3), np.float32), **kwargs)


def test_conv2d_kernel_larger_than_padded_input_raises():
    with pytest.raises(RuntimeError, match=r"padded input size per channel: \(4 x 4\). Kernel size: \(5 x 5\)"):
        F.conv2d(np.zeros((1, 1, 2, 2), np.float32), np.zeros((1, 1, 3, 3), np.float32), padding=1, dilation=2)


def test_conv2d_groups_not_dividing_channels_raise():
    with pytest.raises(RuntimeError, match=r"expected weight to be divisible by 2 at dimension 0"):
        F.conv2d(np.zeros((1, 4, 5, 5), np.float32), np.zeros((3, 2, 3, 3), np.float32), groups=2)
    with pytest.raises(RuntimeError, match=r"Given groups=3, weight of size \[3, 1, 3, 3\], expected input"):
        F.conv2d(np.zeros((1, 4, 5, 5), np.float32), np.zeros((3, 1, 3, 3), np.float32), groups=3)
    with pytest.raises(ValueError, match="in_channels must be divisible by groups"):
        nn.Conv2d(3, 4, 3, groups=2)
    with pytest.raises(ValueError, match="out_channels must be divisible by groups"):
        nn.Conv2d(4, 3, 3, groups=2)
    with pytest.raises(ValueError, match="groups must be a positive integer"):
        nn.Conv2d(4, 4, 3, groups=0)


def test_conv2d_dtype_and_bias_mismatches_raise():
    x, weight = np.zeros((1, 1, 5, 5), np.float64), np.zeros((2, 1, 3, 3), np.float32)
    with pytest.raises(RuntimeError, match="expected scalar type Double but found Float"):
        F.conv2d(x, weight)
    with pytest.raises(RuntimeError, match=r"Input type \(float32\) and bias type \(float64\) should be the same"):
        F.conv2d(x.astype(np.float32), weight, np.zeros(2))
    with pytest.raises(RuntimeError, match=r"expected bias to be 1-dimensional with 2 elements, but got bias of "
                                           r"size \[3\]"):
        F.conv2d(x.astype(np.float32), weight, np.zeros(3, np.float32))


def test_conv2d_module_argument_errors():
    with pytest.raises(ValueError, match="padding='same' is not supported for strided convolutions"):
        nn.Conv2d(2, 2, 3, stride=2, padding="same")
    with pytest.raises(ValueError, match="Invalid padding string 'full'"):
        nn.Conv2d(2, 2, 3, padding="full")
    with pytest.raises(ValueError, match="padding_mode must be one of"):
        nn.Conv2d(2, 2, 3, padding_mode="mirror")
    with pytest.raises(NotImplementedError, match="padding_mode='reflect'"):
        nn.Conv2d(2, 2, 3, padding_mode="reflect")
    with pytest.raises(RuntimeError, match="non-positive stride"):
        nn.Conv2d(1, 1, 3, stride=0)(np.zeros((1, 1, 5, 5), np.float32))


def test_conv2d_backward_checks_grad_output_shape():
    x, weight = np.zeros((1, 1, 5, 5)), np.zeros((2, 1, 3, 3))
    with pytest.raises(RuntimeError, match=r"expected grad_output of size \[1, 2, 3, 3\], got \[1, 2, 5, 5\]"):
        F.conv2d_backward(np.zeros((1, 2, 5, 5)), x, weight)
