"""Properties: conv2d and the three poolings (functional and modules) against torch autograd.

Each op has three implementations, and each is held to torch by the same properties: the textbook
code (``tinynn/nn/conv.py``, ``pooling.py``, run under ``tinynn.textbook()``), the engine (the
default, in each of its ways of splitting the work), and the loops of ``tinynn.nn.naive``.

Drawn: batch (0 and unbatched included), channels, groups, sizes, kernel, stride, padding (ints,
pairs, lists, 'same'/'valid'), dilation, bias, ceil_mode, count_include_pad, divisor_override,
adaptive sizes that do not divide the input, max-pooling inputs full of ties and of +-inf/NaN,
memory layouts (channels-last, Fortran, strided views), and random upstream gradients.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from hypothesis import assume, given
from hypothesis import strategies as st

import tinynn
import tinynn.nn as nn
import tinynn.nn.functional as F
from tests.helpers import split_batches
from tests.strategies import (
    arrays,
    as_pair,
    assert_matches,
    assert_module_steps_match_torch,
    grads,
    int_or_pair,
    layouts,
    magnitude,
    one_torch_thread,  # noqa: F401 - an autouse fixture
    reference_device,
    relayout,
    to_torch,
    torch_autograd,
)
from tinynn.nn import conv, naive
from tinynn.nn._geometry import conv_geometry
from tinynn.testing.strategies import adaptive_pool2d_args, conv2d_args, pool2d_args

# torch warns that it copies the input for 'same' with even kernels; tinynn pads the same way.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}


@st.composite
def upstream(draw: st.DrawFn, shape: tuple[int, ...], dtype) -> np.ndarray:
    return relayout(draw(grads(shape, dtype)), draw(layouts))


# ---------------------------------------------------------------------------------------- conv2d
def conv_cases() -> st.SearchStrategy:
    """The kit's conv2d arguments (every batch size, layout, padding form and group count torch takes)."""
    return conv2d_args().map(lambda args: dict(zip(("x", "weight", "bias", "kwargs"), args)))


def _torch_conv(case: dict, grad_output: np.ndarray):
    return torch_autograd(lambda x, w, b: TF.conv2d(x, w, b, **case["kwargs"]),
                          [case["x"], case["weight"], case["bias"]], grad_output)


# "textbook", or the engine as (threads, chunked): the batch on the calling thread with its im2col
# columns kept (as small layers run), or split across 2 or 3 threads, or built one image at a time
# and rebuilt in the backward (as large layers run; see tests.helpers.split_batches).
implementations = st.just("textbook") | st.tuples(st.sampled_from([1, 2, 3]), st.booleans())
# The poolings' engine has one way of working.
pool_implementations = st.sampled_from(["engine", "textbook"])


@contextlib.contextmanager
def running(implementation: str | tuple[int, bool]) -> Iterator[None]:
    """tinynn on its textbook code, or on the engine split as drawn."""
    with tinynn.textbook(implementation == "textbook"):
        if isinstance(implementation, tuple):
            with split_batches(*implementation):
                yield
        else:
            yield


@given(case=conv_cases(), data=st.data(), mode=implementations)
def test_conv2d_functional_matches_torch(case, data, mode):
    x, weight, bias, kwargs = case["x"], case["weight"], case["bias"], case["kwargs"]
    with running(mode):
        output = F.conv2d(x, weight, bias, **kwargs)
    grad_output = data.draw(upstream(output.shape, x.dtype), label="grad_output")
    expected, (grad_x, grad_w, grad_b) = _torch_conv(case, grad_output)
    assert_matches(output, expected, "output", magnitude(x, weight) + magnitude(bias))
    with running(mode):
        grad_input, grad_weight, grad_bias = F.conv2d_backward(grad_output, x, weight, has_bias=bias is not None,
                                                               **kwargs)
    assert_matches(grad_input, grad_x, "grad_input", magnitude(grad_output, weight))
    assert_matches(grad_weight, grad_w, "grad_weight", magnitude(grad_output, x))
    if bias is None:
        assert grad_bias is None
    else:
        assert_matches(grad_bias, grad_b, "grad_bias", magnitude(grad_output))


@given(first=conv_cases(), data=st.data(), mode=implementations)
def test_conv2d_module_matches_torch_and_accumulates_grads(first, data, mode):
    weight, bias, kwargs = first["weight"], first["bias"], first["kwargs"]
    out_channels, in_per_group, kh, kw = weight.shape
    in_channels, dtype = in_per_group * kwargs["groups"], weight.dtype.type
    args = (in_channels, out_channels, (kh, kw), kwargs["stride"], kwargs["padding"], kwargs["dilation"],
            kwargs["groups"], bias is not None)
    module = nn.Conv2d(*args, dtype=dtype)
    torch_module = torch.nn.Conv2d(*args, dtype=TORCH_DTYPE[dtype], device=reference_device())
    state = {"weight": weight} | ({} if bias is None else {"bias": bias})
    module.load_state_dict(state)
    torch_module.load_state_dict({name: to_torch(value) for name, value in state.items()})
    # Three forward/backward pairs without zero_grad (the module reuses its im2col workspace); the
    # last one without an input gradient, like a first layer, still adds into the parameters' grads.
    second_x = relayout(data.draw(arrays(first["x"].shape, dtype), label="second x"), data.draw(layouts))
    steps = [(first["x"], True), (second_x, True), (first["x"], False)]
    assert_module_steps_match_torch(
        module, torch_module, steps, weight, bias,
        lambda step, shape: data.draw(upstream(shape, dtype), label=f"grad_output {step}"),
        around=lambda: running(mode))


# ---------------------------------------------------------------------------------------- pooling
def pool_cases(kind: str) -> st.SearchStrategy:
    """The kit's pooling arguments: max-pooling inputs full of ties and of +-inf/NaN (NaN wins a window
    in torch, -inf never beats a real value), every window holding at least one input element."""
    return pool2d_args(kind).map(lambda args: dict(x=args[0], kwargs=args[1]))


@given(case=pool_cases("max"), data=st.data(), implementation=pool_implementations)
def test_max_pool2d_functional_and_module_match_torch_with_indices(case, data, implementation):
    with tinynn.textbook(implementation == "textbook"):
        _check_max_pool2d(case, data)


def _check_max_pool2d(case: dict, data: st.DataObject) -> None:
    x, kwargs = case["x"], case["kwargs"]
    output, indices = F.max_pool2d(x, return_indices=True, **kwargs)
    grad_output = data.draw(upstream(output.shape, x.dtype), label="grad_output")
    expected, (grad_x,) = torch_autograd(lambda t: TF.max_pool2d(t, **kwargs), [x], grad_output)
    expected_indices = TF.max_pool2d(to_torch(x), return_indices=True, **kwargs)[1]
    assert_matches(output, expected, "output")
    assert_matches(indices, expected_indices, "indices")
    assert_matches(F.max_pool2d(x, **kwargs), expected, "output without indices")
    assert_matches(F.max_pool2d_backward(grad_output, x, **kwargs), grad_x, "grad_input")
    assert_matches(F.max_pool2d_backward(grad_output, x, indices=indices, **kwargs), grad_x, "grad_input, indices")
    for return_indices in (True, False):
        module = nn.MaxPool2d(**kwargs, return_indices=return_indices)
        module_output = module(x)
        if return_indices:
            module_output, module_indices = module_output
            assert_matches(module_indices, expected_indices, "module indices")
        assert_matches(module_output, expected, "module output")
        assert_matches(module.backward(grad_output), grad_x, "module grad_input")


def _avg_term_scale(kwargs: dict) -> float:
    """Sums of up to kh*kw terms divided by their count, or by divisor_override: the size of the
    terms relative to the largest value (``magnitude``'s), for ``assert_matches``."""
    taps = np.prod(as_pair(kwargs["kernel_size"]))
    return taps / kwargs["divisor_override"] if kwargs["divisor_override"] else 1.0


@given(case=pool_cases("avg"), data=st.data(), implementation=pool_implementations)
def test_avg_pool2d_functional_and_module_match_torch(case, data, implementation):
    with tinynn.textbook(implementation == "textbook"):
        _check_avg_pool2d(case, data)


def _check_avg_pool2d(case: dict, data: st.DataObject) -> None:
    x, kwargs = case["x"], case["kwargs"]
    output = F.avg_pool2d(x, **kwargs)
    grad_output = data.draw(upstream(output.shape, x.dtype), label="grad_output")
    expected, (grad_x,) = torch_autograd(lambda t: TF.avg_pool2d(t, **kwargs), [x], grad_output)
    per_term = _avg_term_scale(kwargs)
    assert_matches(output, expected, "output", per_term * magnitude(x))
    grad_terms = per_term * magnitude(grad_output)
    assert_matches(F.avg_pool2d_backward(grad_output, x, **kwargs), grad_x, "grad_input", grad_terms)
    module = nn.AvgPool2d(**kwargs)
    assert_matches(module(x), expected, "module output", per_term * magnitude(x))
    assert_matches(module.backward(grad_output), grad_x, "module grad_input", grad_terms)


def adaptive_cases() -> st.SearchStrategy:
    return adaptive_pool2d_args().map(lambda args: dict(x=args[0], output_size=args[1]))


@given(case=adaptive_cases(), data=st.data(), implementation=pool_implementations)
def test_adaptive_avg_pool2d_functional_and_module_match_torch(case, data, implementation):
    with tinynn.textbook(implementation == "textbook"):
        _check_adaptive_avg_pool2d(case, data)


def _check_adaptive_avg_pool2d(case: dict, data: st.DataObject) -> None:
    x, output_size = case["x"], case["output_size"]
    output = F.adaptive_avg_pool2d(x, output_size)
    if 0 in output.shape[-2:]:  # torch's backward refuses an empty output, so only the forward compares
        assert_matches(output, TF.adaptive_avg_pool2d(to_torch(x), output_size), "empty output")
        return
    grad_output = data.draw(upstream(output.shape, x.dtype), label="grad_output")
    expected, (grad_x,) = torch_autograd(lambda t: TF.adaptive_avg_pool2d(t, output_size), [x], grad_output)
    assert_matches(output, expected, "output", magnitude(x))
    assert_matches(F.adaptive_avg_pool2d_backward(grad_output, x), grad_x, "grad_input", magnitude(grad_output))
    module = nn.AdaptiveAvgPool2d(output_size)
    assert_matches(module(x), expected, "module output", magnitude(x))
    assert_matches(module.backward(grad_output), grad_x, "module grad_input", magnitude(grad_output))


# ---------------------------------------------------------------------------------------- the loop versions
def _batched(x: np.ndarray) -> np.ndarray:
    return x if x.ndim == 4 else x[None]  # the loops take batched input only


@given(case=conv_cases(), data=st.data())
def test_naive_conv2d_loops_match_torch(case, data):
    x, weight, bias, kwargs = _batched(case["x"]), case["weight"], case["bias"], case["kwargs"]
    output = naive.conv2d(x, weight, bias, **kwargs)
    grad_output = data.draw(upstream(output.shape, x.dtype), label="grad_output")
    expected, (grad_x, grad_w, grad_b) = torch_autograd(lambda x, w, b: TF.conv2d(x, w, b, **kwargs),
                                                        [x, weight, bias], grad_output)
    assert_matches(output, expected, "output", magnitude(x, weight) + magnitude(bias))
    grad_input, grad_weight, grad_bias = naive.conv2d_backward(grad_output, x, weight, **kwargs)
    assert_matches(grad_input, grad_x, "grad_input", magnitude(grad_output, weight))
    assert_matches(grad_weight, grad_w, "grad_weight", magnitude(grad_output, x))
    if bias is not None:
        assert_matches(grad_bias, grad_b, "grad_bias", magnitude(grad_output))


@given(case=conv_cases(), data=st.data())
def test_naive_im2col_and_col2im_equal_the_textbook_window_views(case, data):
    x, weight, kwargs = _batched(case["x"]), case["weight"], case["kwargs"]
    kernel, padding = weight.shape[2:], kwargs["padding"]
    geometry = conv_geometry(x.shape, (1, x.shape[1], *kernel), kwargs["stride"], padding, kwargs["dilation"], 1)
    cols = naive.im2col(x, kernel, kwargs["stride"], padding, kwargs["dilation"])
    np.testing.assert_array_equal(cols, conv.im2col(x, geometry))  # the same values copied: exactly equal
    grad_cols = data.draw(grads(cols.shape, x.dtype), label="grad_cols")
    grad_input = naive.col2im(grad_cols, x.shape, kernel, kwargs["stride"], padding, kwargs["dilation"])
    # Sums of up to kh*kw taps, added in another order by the textbook's one add per offset.
    assert_matches(conv.col2im(grad_cols, x.shape, geometry), grad_input, "col2im", magnitude(grad_cols))


@given(case=pool_cases("max"), data=st.data())
def test_naive_max_pool2d_loops_match_torch_with_indices(case, data):
    x, kwargs = _batched(case["x"]), case["kwargs"]
    output, indices = naive.max_pool2d(x, **kwargs)
    grad_output = data.draw(upstream(output.shape, x.dtype), label="grad_output")
    expected, (grad_x,) = torch_autograd(lambda t: TF.max_pool2d(t, **kwargs), [x], grad_output)
    assert_matches(output, expected, "output")
    assert_matches(indices, TF.max_pool2d(to_torch(x), return_indices=True, **kwargs)[1], "indices")
    assert_matches(naive.max_pool2d_backward(grad_output, x, indices), grad_x, "grad_input")


@given(case=pool_cases("avg"), data=st.data())
def test_naive_avg_pool2d_loops_match_torch(case, data):
    x, kwargs = _batched(case["x"]), case["kwargs"]
    output = naive.avg_pool2d(x, **kwargs)
    grad_output = data.draw(upstream(output.shape, x.dtype), label="grad_output")
    expected, (grad_x,) = torch_autograd(lambda t: TF.avg_pool2d(t, **kwargs), [x], grad_output)
    per_term = _avg_term_scale(kwargs)
    assert_matches(output, expected, "output", per_term * magnitude(x))
    assert_matches(naive.avg_pool2d_backward(grad_output, x, **kwargs), grad_x, "grad_input",
                   per_term * magnitude(grad_output))


@given(case=adaptive_cases(), data=st.data())
def test_naive_adaptive_avg_pool2d_loops_match_torch(case, data):
    x = _batched(case["x"])
    expected_shape = TF.adaptive_avg_pool2d(to_torch(x), case["output_size"]).shape
    assume(0 not in expected_shape[-2:])  # torch's backward refuses an empty output
    output = naive.adaptive_avg_pool2d(x, tuple(expected_shape[-2:]))
    grad_output = data.draw(upstream(output.shape, x.dtype), label="grad_output")
    expected, (grad_x,) = torch_autograd(lambda t: TF.adaptive_avg_pool2d(t, case["output_size"]), [x], grad_output)
    assert_matches(output, expected, "output", magnitude(x))
    assert_matches(naive.adaptive_avg_pool2d_backward(grad_output, x), grad_x, "grad_input", magnitude(grad_output))


# ---------------------------------------------------------------------------------------- argument errors
@st.composite
def any_window_arguments(draw: st.DrawFn) -> tuple[str, np.ndarray, dict]:
    """conv2d/max_pool2d/avg_pool2d calls with arguments drawn past torch's limits, forward only."""
    op = draw(st.sampled_from(["conv2d", "max_pool2d", "avg_pool2d"]))
    channels = draw(st.integers(1, 4))
    x = np.zeros((1, channels, draw(st.integers(1, 6)), draw(st.integers(1, 6))))
    kernel = draw(int_or_pair(1, 5))
    kwargs = dict(stride=draw(int_or_pair(0, 3)), padding=draw(int_or_pair(-1, 4)))
    if op == "conv2d":
        groups = draw(st.integers(1, 3))
        kwargs |= dict(dilation=draw(int_or_pair(0, 3)), groups=groups, padding=draw(
            st.just(kwargs["padding"]) | st.sampled_from(["same", "valid"])))
        weight_shape = (groups * draw(st.integers(0, 2)) + draw(st.integers(0, 1)), draw(st.integers(1, 3)),
                        *as_pair(kernel))
        return op, x, kwargs | dict(weight=np.zeros(weight_shape))
    kwargs |= dict(kernel_size=kernel, ceil_mode=draw(st.booleans()))
    if op == "max_pool2d":
        kwargs["dilation"] = draw(int_or_pair(0, 3))
    return op, x, kwargs


@given(call=any_window_arguments())
def test_window_ops_refuse_exactly_the_arguments_torch_refuses(call):
    # Argument checks only, so torch on the CPU whatever the reference device: no odd call reaches a GPU.
    op, x, kwargs = call
    try:
        expected = getattr(TF, op)(torch.from_numpy(x), **{
            key: torch.from_numpy(value) if key == "weight" else value for key, value in kwargs.items()})
    except RuntimeError:
        with pytest.raises(RuntimeError):
            getattr(F, op)(x, **kwargs)
        return
    assert getattr(F, op)(x, **kwargs).shape == tuple(expected.shape)
