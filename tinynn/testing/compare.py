"""One comparison helper for tests and the parity runner (in the spirit of tinygrad's helper_test_op).

It checks shape and dtype first, then values, and on failure names the worst element, its index
and both values, so a failing test says where to look.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def to_numpy(value: Any) -> np.ndarray:
    """An ndarray from an ndarray, a tinynn Parameter, a Python number or a torch tensor (any device)."""
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    if hasattr(value, "data") and isinstance(value.data, np.ndarray):
        return value.data
    return np.asarray(value)


def relative_error(actual: Any, expected: Any) -> float:
    """max|actual - expected| / max|expected| (0 when both are all zero; inf on NaN mismatch)."""
    a = to_numpy(actual).astype(np.float64)
    e = to_numpy(expected).astype(np.float64)
    if a.shape != e.shape:
        return float("inf")
    if a.size == 0:
        return 0.0
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if (nan_a != nan_e).any():
        return float("inf")
    a, e = np.where(nan_a, 0.0, a), np.where(nan_e, 0.0, e)
    diff = float(np.max(np.abs(a - e)))
    scale = float(np.max(np.abs(e)))
    if diff == 0.0:
        return 0.0
    return diff / scale if scale > 0 else float("inf")


def assert_close(actual: Any, expected: Any, *, rtol: float, atol: float = 0.0,
                 name: str = "value", check_dtype: bool = True) -> float:
    """Assert ``max|actual - expected| <= atol + rtol * max|expected|``; return the relative error.

    ``expected`` is usually torch's result. NaNs must sit in the same places.
    """
    a, e = to_numpy(actual), to_numpy(expected)
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape} != expected {e.shape}")
    if check_dtype and a.dtype != e.dtype:
        raise AssertionError(f"{name}: dtype {a.dtype} != expected {e.dtype}")
    if a.size == 0:
        return 0.0
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    nan_a, nan_e = np.isnan(a64), np.isnan(e64)
    if (nan_a != nan_e).any():
        index = np.unravel_index(int(np.argmax(nan_a != nan_e)), a.shape)
        raise AssertionError(f"{name}: NaN mismatch at index {tuple(int(i) for i in index)}: {float(a64[index])!r} vs "
                             f"expected {float(e64[index])!r}")
    a64, e64 = np.where(nan_a, 0.0, a64), np.where(nan_e, 0.0, e64)
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity: masked just below
        diff = np.asarray(np.abs(a64 - e64))  # an array even for 0-d inputs (losses), so it can be masked
    same_inf = np.isinf(a64) & (a64 == e64)
    diff[same_inf] = 0.0
    finite_e = np.where(np.isinf(e64), 0.0, e64)
    scale = float(np.max(np.abs(finite_e)))
    worst = np.unravel_index(int(np.argmax(diff)), a.shape)
    max_diff = float(diff[worst])
    if not max_diff <= atol + rtol * scale:
        raise AssertionError(
            f"{name}: max |diff| {max_diff:.3e} > atol {atol:g} + rtol {rtol:g} * scale {scale:.3e}; "
            f"worst at index {tuple(int(i) for i in worst)}: {float(a64[worst])!r} vs expected {float(e64[worst])!r}"
        )
    return max_diff / scale if scale > 0 else (0.0 if max_diff == 0 else float("inf"))
