"""Loop, textbook and engine: each implementation's backward against central finite differences.

The properties (tests/test_properties_conv.py) hold all three to torch; here each is held to the
definition of a derivative, with the public kit (``tinynn.testing``) as a learner would use it:
the modules under ``tinynn.textbook()`` and under the engine, the loops of ``tinynn.nn.naive``
through ``numerical_grad``. Inputs are continuous random values, so no max-pooling window holds a
tie and no ReLU input sits at its kink, where a finite difference straddles two branches.
"""

from __future__ import annotations

import numpy as np
import pytest

import tinynn
import tinynn.nn as nn
from tinynn.nn import naive
from tinynn.testing import assert_close, gradcheck, numerical_grad
from tinynn.testing.tolerances import FD_RTOL, TORCH_F64_RTOL

# (in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias), input (N, H, W)
CONV_CASES = [
    ((1, 4, 3, 2, 1, 1, 1, True), (2, 7, 7)),  # a grayscale first layer with stride 2
    ((4, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2, True), (2, 6, 7)),  # groups, a rectangular dilated kernel
    ((3, 3, 2, 1, "same", 2, 3, False), (1, 5, 6)),  # 'same' with an even dilated kernel, depthwise
]
POOLS = [
    lambda: nn.MaxPool2d(3, 2, 1, ceil_mode=True),
    lambda: nn.MaxPool2d((2, 3), (1, 2), (1, 1), dilation=(2, 1)),
    lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False),
    lambda: nn.AvgPool2d(2, divisor_override=3),
    lambda: nn.AdaptiveAvgPool2d((3, 4)),  # bins that overlap on a 7x5 input
    lambda: nn.AdaptiveAvgPool2d(1),
]


@pytest.fixture(params=["engine", "textbook"])
def implementation(request):
    with tinynn.textbook(request.param == "textbook"):
        yield request.param


def _input(shape: tuple[int, ...], seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("args, shape", CONV_CASES, ids=["first-layer", "groups-dilated", "same-depthwise"])
def test_conv2d_module_backward_matches_finite_differences(implementation, args, shape):
    module = nn.Conv2d(*args, dtype=np.float64)
    assert gradcheck(module, _input((shape[0], args[0], *shape[1:])))


@pytest.mark.parametrize("make", POOLS, ids=["max-ceil", "max-dilated", "avg-ceil", "avg-divisor", "adaptive",
                                             "global"])
def test_pooling_module_backward_matches_finite_differences(implementation, make):
    assert gradcheck(make(), _input((2, 3, 7, 5)))


def test_relu_module_backward_matches_finite_differences(implementation):
    x = _input((4, 9))
    x[np.abs(x) < 1e-3] = 0.5  # away from the kink
    assert gradcheck(nn.ReLU(), x)


@pytest.mark.parametrize("args, shape", CONV_CASES, ids=["first-layer", "groups-dilated", "same-depthwise"])
def test_naive_conv2d_backward_matches_finite_differences(args, shape):
    in_channels, out_channels, kernel, stride, padding, dilation, groups, _ = args
    kernel = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = _input((shape[0], in_channels, *shape[1:]), 1)
    weight = _input((out_channels, in_channels // groups, *kernel), 2)
    kwargs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    grad_output = _input(naive.conv2d(x, weight, **kwargs).shape, 3)
    grad_input, grad_weight, _ = naive.conv2d_backward(grad_output, x, weight, **kwargs)
    assert_close(grad_input, numerical_grad(lambda v: naive.conv2d(v, weight, **kwargs), x, grad_output),
                 rtol=FD_RTOL, name="naive grad_input")
    assert_close(grad_weight, numerical_grad(lambda w: naive.conv2d(x, w, **kwargs), weight, grad_output),
                 rtol=FD_RTOL, name="naive grad_weight")


def test_naive_poolings_backward_match_finite_differences():
    x = _input((2, 3, 7, 5), 4)
    output, indices = naive.max_pool2d(x, 3, 2, 1, ceil_mode=True)
    grad_output = _input(output.shape, 5)
    assert_close(naive.max_pool2d_backward(grad_output, x, indices),
                 numerical_grad(lambda v: naive.max_pool2d(v, 3, 2, 1, ceil_mode=True)[0], x, grad_output),
                 rtol=FD_RTOL, name="naive max_pool2d")
    avg_args = (3, 2, 1, True, False)
    grad_output = _input(naive.avg_pool2d(x, *avg_args).shape, 6)
    assert_close(naive.avg_pool2d_backward(grad_output, x, *avg_args),
                 numerical_grad(lambda v: naive.avg_pool2d(v, *avg_args), x, grad_output),
                 rtol=FD_RTOL, name="naive avg_pool2d")
    grad_output = _input((2, 3, 3, 4), 7)
    assert_close(naive.adaptive_avg_pool2d_backward(grad_output, x),
                 numerical_grad(lambda v: naive.adaptive_avg_pool2d(v, (3, 4)), x, grad_output),
                 rtol=FD_RTOL, name="naive adaptive_avg_pool2d")


def test_naive_col2im_is_the_adjoint_of_naive_im2col():
    # <im2col(x), c> = <x, col2im(c)> for every x and c: the definition of the adjoint, which is
    # what makes col2im the backward of im2col.
    x = _input((2, 3, 6, 5), 8)
    cols = naive.im2col(x, (3, 2), (2, 1), (1, 1), (1, 2))
    grad_cols = _input(cols.shape, 9)
    grad_input = naive.col2im(grad_cols, x.shape, (3, 2), (2, 1), (1, 1), (1, 2))
    # The same products summed in another order: float64 rounding, as between tinynn and torch.
    assert_close(np.sum(x * grad_input), np.sum(cols * grad_cols), rtol=TORCH_F64_RTOL, name="<x, col2im(c)>")


def test_the_example_in_naives_docstring_runs():
    import doctest

    result = doctest.testmod(naive)
    assert result.attempted > 0 and result.failed == 0
