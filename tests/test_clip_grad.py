"""tinynn.nn.utils.clip_grad_norm_ and clip_grad_value_ against torch.nn.utils's, number for number.

What is held exactly, bit for bit (NaN where torch has NaN): the total norm for norm types 0, inf
and -inf, which no order of summation changes, in float64, float32 and mixes of the two, in any
memory layout; and clip_grad_value_ always. Held to the dtype's tolerance (TORCH_F64_RTOL, or
float32's pair): the other norms and the clipped gradients, since NumPy and torch add the terms in
their own orders (and torch's coefficient is a reciprocal times max_norm, not a division).
Errors and warnings: the same type and words. The contract: gradients change in place (the same
array objects), a None gradient stays None.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tinynn
from tinynn.nn import Parameter
from tinynn.nn.utils import clip_grad, clip_grad_norm_, clip_grad_value_
from tinynn.testing.compare import assert_close
from tinynn.testing.strategies import SPECIAL_STYLES, arrays, layouts, relayout, sizes
from tinynn.testing.tolerances import TORCH_F32_ATOL, TORCH_F32_RTOL, TORCH_F64_ATOL, TORCH_F64_RTOL

# torch accepts any float. A count, a largest and a smallest magnitude are the same in any order.
EXACT_NORM_TYPES = (0.0, math.inf, -math.inf)
NORM_TYPES = (0.0, 1.0, 2.0, math.inf, -math.inf, 3.5, 0.5, -1.5)
FORMS = ("list", "tuple", "generator", "single")


# ---------------------------------------------------------------------------------- strategies
@st.composite
def gradient_sets(draw: st.DrawFn, max_count: int = 4) -> list[tuple[np.ndarray, str] | None]:
    """Up to ``max_count`` gradients as (values, layout), or None for a parameter without one:
    one dtype for all or a mix; shapes with empty and 0-d ones, or vectors long enough for
    torch's lanes and leftovers; values normal, tied, large, +-inf/NaN, all zero, or scaled far up
    or down (float32 squares overflow)."""
    mode = draw(st.sampled_from(["float64", "float32", "mixed"]))
    result: list[tuple[np.ndarray, str] | None] = []
    for _ in range(draw(st.integers(0, max_count))):
        kind = draw(st.sampled_from(["values", "values", "values", "zeros", "none"]))
        if kind == "none":
            result.append(None)
            continue
        dtype = {"float64": np.float64, "float32": np.float32}.get(mode) or draw(st.sampled_from([np.float64,
                                                                                                np.float32]))
        shape = draw(sizes(3, max_side=5) | st.integers(0, 40).map(lambda n: (n,)))
        if kind == "zeros":
            values = np.zeros(shape, dtype)
        else:
            values = draw(arrays(shape, dtype, SPECIAL_STYLES))
            values = np.asarray(values * dtype(2.0 ** draw(st.sampled_from([0, 0, 0, -70, 70]))), dtype=dtype)
        result.append((values, draw(layouts)))
    return result


max_norms = st.sampled_from([0.0, 1e-3, 0.25, 1.0, 3.0, 1e8]) | st.floats(0.0, 10.0)


# ---------------------------------------------------------------------------------- running both
def _parameters(gradients: list[tuple[np.ndarray, str] | None], library: str) -> list[Any]:
    """One parameter per entry, its gradient a fresh copy of the values in the drawn layout."""
    params: list[Any] = []
    for entry in gradients:
        if library == "tinynn":
            param = Parameter(np.zeros(entry[0].shape if entry else (2,), entry[0].dtype if entry else np.float32))
            param.grad = None if entry is None else relayout(entry[0], entry[1])
        else:
            param = torch.nn.Parameter(torch.zeros(entry[0].shape if entry else (2,),
                                                   dtype=getattr(torch, entry[0].dtype.name if entry else "float32")))
            param.grad = None if entry is None else torch.from_numpy(relayout(entry[0], entry[1]))
        params.append(param)
    return params


def _as_form(params: list[Any], form: str) -> Any:
    if form == "single" and len(params) == 1:
        return params[0]
    if form == "tuple":
        return tuple(params)
    if form == "generator":
        return (param for param in params)
    return params


def _outcome(call: Any) -> tuple[str, Any]:
    try:
        return "ok", call()
    except Exception as error:  # the error itself is what is compared
        return type(error).__name__, str(error)


def _grad_arrays(params: list[Any]) -> list[np.ndarray | None]:
    return [None if p.grad is None else (p.grad.numpy() if isinstance(p.grad, torch.Tensor) else p.grad)
            for p in params]


def _assert_same(actual: np.ndarray, expected: np.ndarray, exact: bool, name: str,
                 precision: Any = np.float64) -> None:
    """Bit for bit (NaN where NaN) when ``exact``, else at the tolerance for tinynn vs torch of
    ``precision``: the least precise dtype that went into the value (a float64 total of float32
    norms carries their rounding, and so do the float64 gradients it scales)."""
    assert actual.dtype == expected.dtype, f"{name}: dtype {actual.dtype} != torch's {expected.dtype}"
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != torch's {expected.shape}"
    if exact:
        np.testing.assert_array_equal(actual, expected, err_msg=name, strict=True)
    elif np.dtype(precision) == np.float64 and expected.dtype == np.float64:
        assert_close(actual, expected, rtol=TORCH_F64_RTOL, atol=TORCH_F64_ATOL, name=name)
    else:
        assert_close(actual, expected, rtol=TORCH_F32_RTOL, atol=TORCH_F32_ATOL, name=name)


def check_clip_grad_norm(gradients: list[tuple[np.ndarray, str] | None], max_norm: float, norm_type: float,
                         error_if_nonfinite: bool = False, foreach: bool | None = None, form: str = "list") -> None:
    """Run both libraries' clip_grad_norm_ on the same gradients and compare everything."""
    ours, theirs = _parameters(gradients, "tinynn"), _parameters(gradients, "torch")
    before = _grad_arrays(ours)
    with warnings.catch_warnings(record=True) as our_warnings:
        warnings.simplefilter("always")
        actual = _outcome(lambda: clip_grad_norm_(_as_form(ours, form), max_norm, norm_type=norm_type,
                                                  error_if_nonfinite=error_if_nonfinite, foreach=foreach))
    with warnings.catch_warnings(record=True) as torch_warnings:
        warnings.simplefilter("always")
        expected = _outcome(lambda: torch.nn.utils.clip_grad_norm_(
            _as_form(theirs, form), max_norm, norm_type=norm_type, error_if_nonfinite=error_if_nonfinite,
            foreach=foreach))
    assert [str(w.message) for w in our_warnings] == [str(w.message) for w in torch_warnings]
    assert actual[0] == expected[0], f"tinynn {actual}, torch {expected}"
    # In place: every gradient is still the array it was (None stays None).
    assert all(p.grad is array for p, array in zip(ours, before))
    if actual[0] != "ok":
        assert actual[1] == expected[1]
        for array, entry in zip(before, gradients):  # an error leaves the gradients alone
            assert array is None or np.array_equal(array, entry[0], equal_nan=True)
        return
    exact = norm_type in EXACT_NORM_TYPES
    precision = np.float32 if any(entry and entry[0].dtype == np.float32 for entry in gradients) else np.float64
    total = actual[1]
    assert isinstance(total, np.ndarray) and total.shape == ()
    _assert_same(total, expected[1].numpy(), exact, "total norm", precision)
    for index, (ours_grad, torch_grad) in enumerate(zip(_grad_arrays(ours), _grad_arrays(theirs))):
        if torch_grad is None:
            assert ours_grad is None
        else:
            _assert_same(ours_grad, torch_grad, False, f"grad {index}", precision)


# ---------------------------------------------------------------------------------- clip_grad_norm_
@given(gradient_sets(), max_norms, st.sampled_from(NORM_TYPES), st.booleans(), st.sampled_from([None, False, True]),
       st.sampled_from(FORMS))
def test_clip_grad_norm_matches_torch(gradients: Any, max_norm: float, norm_type: float, error_if_nonfinite: bool,
                                      foreach: bool | None, form: str) -> None:
    check_clip_grad_norm(gradients, max_norm, norm_type, error_if_nonfinite, foreach, form)


def test_returns_the_norm_before_clipping_and_scales_to_max_norm() -> None:
    param = Parameter(np.zeros(3))
    param.grad = grad = np.array([3.0, 4.0, 0.0])
    total = clip_grad_norm_(param, 1.0)
    assert total.dtype == np.float64 and total.shape == () and float(total) == 5.0
    assert param.grad is grad
    np.testing.assert_allclose(grad, np.array([3.0, 4.0, 0.0]) * (1.0 / (5.0 + 1e-6)), rtol=0, atol=0)
    np.testing.assert_allclose(np.linalg.norm(grad), 1.0, rtol=1e-6)
    # Below max_norm the coefficient is clamped to 1: nothing changes (but torch still multiplies).
    small = Parameter(np.zeros(2, np.float32))
    small.grad = np.array([0.1, -0.2], np.float32)
    assert clip_grad_norm_([small], 10.0).dtype == np.float32
    np.testing.assert_array_equal(small.grad, np.array([0.1, -0.2], np.float32))


def test_no_gradients_give_a_float32_zero_like_torch() -> None:
    for parameters in ([], [Parameter(np.zeros(2))]):
        total = clip_grad_norm_(parameters, 1.0)
        expected = torch.nn.utils.clip_grad_norm_([torch.nn.Parameter(torch.zeros(2))] if parameters else [], 1.0)
        assert total.shape == () and total.dtype == np.float32 and float(total) == 0.0
        assert expected.dtype == torch.float32 and float(expected) == 0.0


def test_nonfinite_total_raises_torchs_error_only_when_asked() -> None:
    for norm_type in (2.0, math.inf, 1):
        for value in (math.inf, math.nan):
            gradients = [(np.array([1.0, value]), "C"), (np.array([2.0], np.float32), "C")]
            check_clip_grad_norm(gradients, 1.0, norm_type, error_if_nonfinite=True)
            check_clip_grad_norm(gradients, 1.0, norm_type, error_if_nonfinite=False)
    param = Parameter(np.zeros(2))
    param.grad = np.array([1.0, math.inf])
    with pytest.raises(RuntimeError) as error:
        clip_grad_norm_(param, 1.0, error_if_nonfinite=True)
    assert str(error.value) == (
        "The total norm of order 2.0 for gradients from `parameters` is non-finite, so it cannot be clipped. To "
        "disable this error and scale the gradients by the non-finite norm anyway, set `error_if_nonfinite=False`")


@pytest.mark.parametrize("foreach", [None, False, True])
@pytest.mark.parametrize("norm_type", [math.inf, -math.inf, -1.0, -0.5, 0.0, 1.0, 2.0, math.nan, "inf", 3])
def test_empty_gradients_and_odd_norm_types_as_torch(norm_type: Any, foreach: bool | None) -> None:
    """An empty gradient has no inf or negative norm (torch's words differ with foreach); a
    one-element gradient's norm is |x| whatever the norm type (even NaN); strings convert."""
    for gradients in ([(np.zeros((0, 3)), "C")], [(np.zeros(0, np.float32), "C"), (np.array(3.0), "C")],
                      [(np.array([-3.0]), "C")], [(np.array([1.0, -2.0, 0.0]), "C"), (np.array([4.0]), "C")]):
        check_clip_grad_norm(gradients, 1.0, norm_type, foreach=foreach)


def test_bad_arguments_fail_as_in_torch() -> None:
    gradients = [(np.ones(3), "C")]
    for max_norm, norm_type in (("x", 2.0), (1.0, "x"), (None, 2.0), (1.0, None)):
        check_clip_grad_norm(gradients, max_norm, norm_type)
        check_clip_grad_norm([], max_norm, norm_type)  # converted before there is anything to clip


def test_an_empty_generator_warns_as_torch() -> None:
    check_clip_grad_norm([], 1.0, 2.0, form="generator")
    with pytest.warns(UserWarning, match="`parameters` is an empty generator, no gradient clipping will occur."):
        clip_grad_norm_((p for p in []), 1.0)


def test_reachable_as_torch_nn_utils() -> None:
    assert "utils" in tinynn.nn.__all__
    assert tinynn.nn.utils.clip_grad_norm_ is clip_grad_norm_
    assert tinynn.nn.utils.clip_grad_value_ is clip_grad_value_
    assert set(clip_grad.__all__) <= set(torch.nn.utils.__all__)


# ---------------------------------------------------------------------------------- clip_grad_value_
clip_values = (st.sampled_from([0.0, 0.5, 1.0, 1e-3, 3.4e38, 3.5e38, 1e40, -1.0, -1e300, math.inf, math.nan])
               | st.floats(0.0, 5.0))


@given(gradient_sets(), clip_values, st.sampled_from([None, False, True]), st.sampled_from(FORMS))
def test_clip_grad_value_matches_torch_exactly(gradients: Any, clip_value: float, foreach: bool | None,
                                               form: str) -> None:
    """Clamped in place into [-clip_value, clip_value], NaN kept; a negative clip_value makes every
    entry clip_value; a finite clip_value beyond float32's range (3.5e38, 1e40) is refused for
    float32 gradients with torch's words, but before anything is clamped (torch first clamps the
    float64 gradients it reaches before a float32 one)."""
    ours, theirs = _parameters(gradients, "tinynn"), _parameters(gradients, "torch")
    before = _grad_arrays(ours)
    actual = _outcome(lambda: clip_grad_value_(_as_form(ours, form), clip_value, foreach=foreach))
    expected = _outcome(lambda: torch.nn.utils.clip_grad_value_(_as_form(theirs, form), clip_value, foreach=foreach))
    assert actual == expected  # ("ok", None), or torch's refusal of no gradients at all
    assert all(p.grad is array for p, array in zip(ours, before))
    if actual[0] != "ok":  # refused: every gradient as it was
        for array, entry in zip(before, gradients):
            assert array is None or np.array_equal(array, relayout(entry[0], entry[1]), equal_nan=True)
        return
    for index, (ours_grad, torch_grad) in enumerate(zip(_grad_arrays(ours), _grad_arrays(theirs))):
        if torch_grad is None:
            assert ours_grad is None
        else:
            _assert_same(ours_grad, torch_grad, True, f"grad {index}")


def test_clip_grad_value_bad_argument_as_torch() -> None:
    param = Parameter(np.ones(2))
    param.grad = np.ones(2)
    torch_param = torch.nn.Parameter(torch.ones(2))
    torch_param.grad = torch.ones(2)
    for value in ("x", None):
        assert _outcome(lambda value=value: clip_grad_value_(param, value)) == _outcome(
            lambda value=value: torch.nn.utils.clip_grad_value_(torch_param, value))
    # torch's grouping refuses an empty list of gradients (an internal check, in its words).
    empty = Parameter(np.ones(2))
    assert _outcome(lambda: clip_grad_value_([empty], 1.0)) == _outcome(
        lambda: torch.nn.utils.clip_grad_value_([torch.nn.Parameter(torch.ones(2))], 1.0))
