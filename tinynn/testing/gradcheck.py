"""Check a module's hand-written backward against central finite differences (float64).

For a module ``y = f(x1, ..., xn; params)`` and an upstream gradient ``G`` (dL/dy), the scalar
``L = sum(G * y)`` has dL/dxi = the module's input gradient and dL/dp = what its backward adds into
``p.grad``. Each entry k of each of those is estimated by central differences::

    numeric[k] = (L(x + eps * e_k) - L(x - eps * e_k)) / (2 * eps)

and compared with the analytic value by torch.autograd.gradcheck's element-wise rule
``|analytic - numeric| <= atol + rtol * |numeric|``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from tinynn._grad_mode import enable_grad
from tinynn.testing.tolerances import GRADCHECK_ATOL, GRADCHECK_EPS, GRADCHECK_RTOL


def numerical_grad(f: Callable[[np.ndarray], Any], x: Any, grad_output: Any = 1.0,
                   eps: float = GRADCHECK_EPS) -> np.ndarray:
    """d/dx of ``sum(grad_output * f(x))`` by central differences, one entry at a time, in float64.

    ``f`` is called with a C-ordered float64 copy of ``x`` (same shape), changed in place by +-eps at one
    entry per call, so it must not keep that array between calls (read it, then forget it).
    ``grad_output`` broadcasts against ``f(x)`` (1.0 for a scalar ``f``). Costs 2 * x.size calls.
    Returns an array of x's shape, in float64.
    """
    # C order, so that reshape(-1) gives views (of a Fortran-ordered or strided array it copies,
    # and the perturbations would never reach `point`).
    point = np.array(x, dtype=np.float64, order="C", copy=True)
    grad = np.zeros_like(point)
    flat_point, flat_grad = point.reshape(-1), grad.reshape(-1)
    weights = np.asarray(grad_output, dtype=np.float64)
    for k in range(flat_point.size):
        original = flat_point[k]
        flat_point[k] = original + eps
        plus = np.sum(weights * np.asarray(f(point), dtype=np.float64))
        flat_point[k] = original - eps
        minus = np.sum(weights * np.asarray(f(point), dtype=np.float64))
        flat_point[k] = original
        flat_grad[k] = (plus - minus) / (2 * eps)
    return grad


def default_grad_output(output: Any, seed: int = 0) -> np.ndarray:
    """The upstream gradient a check uses when none is given: 1.0 for a scalar output (a loss),
    else uniform in [-1, 1) from ``np.random.default_rng(seed)``, in the output's dtype.

    Never all ones: under G = 1 the check sums the output, and a sum hides some wrong gradients
    (BatchNorm's dX sums to zero over the batch, so a backward returning zeros would pass)."""
    array = np.asarray(output)
    dtype = array.dtype if array.dtype.kind == "f" else np.dtype(np.float64)
    if array.ndim == 0:
        return np.asarray(1.0, dtype=dtype)
    return np.random.default_rng(seed).uniform(-1.0, 1.0, size=array.shape).astype(dtype)


def _gradients(returned: Any, count: int) -> list[Any]:
    """backward's return value as one gradient (or None) per input: a tuple or list is one per
    input; a single array is the first input's gradient (a loss's target gets none)."""
    if isinstance(returned, (tuple, list)):
        if len(returned) != count:
            raise AssertionError(f"gradcheck: backward returned {len(returned)} gradients for {count} inputs")
        return list(returned)
    return [returned] + [None] * (count - 1)


def _compare(name: str, analytic: Any, numeric: np.ndarray, atol: float, rtol: float) -> None:
    """Raise AssertionError unless |analytic - numeric| <= atol + rtol * |numeric| everywhere."""
    analytic = np.asarray(analytic)
    if analytic.shape != numeric.shape:
        raise AssertionError(f"gradcheck: {name}: analytic gradient has shape {analytic.shape}, "
                             f"expected {numeric.shape}")
    if numeric.size == 0:
        return
    analytic = analytic.astype(np.float64)
    with np.errstate(invalid="ignore"):
        diff = np.abs(analytic - numeric)
        excess = diff - (atol + rtol * np.abs(numeric))
    bad = ~(excess <= 0)  # NaN in either counts as a mismatch
    if not bad.any():
        return
    # The worst entry: a NaN first, else the one furthest beyond its bound.
    worst = np.unravel_index(int(np.argmax(np.where(np.isnan(excess), np.inf, excess))), numeric.shape)
    index = tuple(int(i) for i in worst)
    raise AssertionError(
        f"gradcheck: {name}: analytic and numeric gradients differ at {int(bad.sum())} of {numeric.size} "
        f"entries; worst at index {index}: analytic {float(analytic[worst])!r}, numeric {float(numeric[worst])!r} "
        f"(|diff| {float(diff[worst]):.3e} > atol {atol:g} + rtol {rtol:g} * |numeric|)"
    )


def gradcheck(module: Any, *inputs: Any, grad_output: Any = None, eps: float = GRADCHECK_EPS,
              atol: float = GRADCHECK_ATOL, rtol: float = GRADCHECK_RTOL) -> bool:
    """Check ``module.backward`` against central finite differences; return True or raise.

    ``module(*inputs)`` must return one array (any shape) or a scalar; ``module.backward(G)``
    returns the input gradient (a tuple of them, None where there is none, for several inputs;
    a single array for several inputs is the first one's, as a loss returns) and adds into
    each parameter's ``.grad``. Every float input and every parameter that requires grad is
    checked, entry by entry, in float64: inputs are float64 copies and the parameters' ``.data``
    is swapped for float64 copies during the check. Non-float inputs (class indices) are passed
    through and not checked.

    ``grad_output`` (G, the output's shape): default 1.0 for a scalar output, else seeded random
    values in [-1, 1), never all ones (see ``default_grad_output``).
    ``eps``: the finite-difference step; ``atol``, ``rtol``: the element-wise rule
    ``|analytic - numeric| <= atol + rtol * |numeric|`` (torch.autograd.gradcheck's defaults).

    Raises AssertionError naming the gradient (``input 0``, ``parameter 'weight'``), the worst
    index and both values. Afterwards every parameter's ``.data`` and ``.grad`` are the very
    arrays they were (a ``.grad`` of None stays None), each buffer is the very array it was with
    the values it had (the check runs on float64 copies, so BatchNorm's running statistics are
    not moved), and each submodule's train/eval mode is as it was, also when the check fails.
    The forward runs 2 * (number of checked entries) + 1 times, so keep the inputs and layers
    small. A stochastic module (dropout in training mode)
    must be checked in eval mode or with its randomness fixed.
    """
    params = [(name, param) for name, param in module.named_parameters() if getattr(param, "requires_grad", True)]
    all_params = list(module.parameters())
    saved_params = [(param, param.data, param.grad) for param in all_params]
    submodules = list(module.modules())
    saved_modes = [(sub, sub.training) for sub in submodules]
    saved_state = [(sub, sub.__dict__.get("_saved")) for sub in submodules]
    saved_buffers = [(sub, dict(sub._buffers)) for sub in submodules]
    try:
        with enable_grad():
            for param in all_params:
                param.data = np.array(param.data, dtype=np.float64, copy=True)
                param.grad = None  # so backward writes fresh arrays, never into the caller's .grad
            for sub in submodules:  # a training BatchNorm updates its running statistics at every forward
                for name, buffer in sub._buffers.items():
                    if buffer is not None:
                        sub._buffers[name] = np.array(buffer, dtype=np.float64 if buffer.dtype.kind == "f"
                                                      else buffer.dtype, copy=True)
            point = [np.array(x, dtype=np.float64, copy=True) if _is_float(x) else x for x in inputs]
            output = module(*point)
            upstream = (default_grad_output(np.asarray(output, dtype=np.float64)) if grad_output is None
                        else np.array(grad_output, dtype=np.float64, copy=True))
            input_grads = _gradients(module.backward(upstream), len(inputs))
            param_grads = [param.grad for _, param in params]

            for i, analytic in enumerate(input_grads):
                if analytic is None or not _is_float(inputs[i]):
                    continue

                def at_input(value: np.ndarray, i: int = i) -> Any:
                    return module(*point[:i], value, *point[i + 1:])

                _compare(f"input {i}", analytic, numerical_grad(at_input, point[i], upstream, eps), atol, rtol)

            for (name, param), analytic in zip(params, param_grads):
                if analytic is None:
                    raise AssertionError(f"gradcheck: parameter '{name}': backward added no gradient (.grad is None)")
                value = param.data

                def at_param(data: np.ndarray, param: Any = param) -> Any:
                    param.data = data
                    return module(*point)

                try:
                    numeric = numerical_grad(at_param, value, upstream, eps)
                finally:
                    param.data = value
                _compare(f"parameter '{name}'", analytic, numeric, atol, rtol)
    finally:
        for param, data, grad in saved_params:
            param.data, param.grad = data, grad
        for sub, mode in saved_modes:
            object.__setattr__(sub, "training", mode)
        for sub, saved in saved_state:
            object.__setattr__(sub, "_saved", saved)
        for sub, buffers in saved_buffers:
            sub._buffers.update(buffers)
    return True


def _is_float(value: Any) -> bool:
    """A float array or Python/NumPy float: an input the check differentiates."""
    return np.asarray(value).dtype.kind == "f"
