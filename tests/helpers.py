"""Test helpers: finite-difference gradients, torch conversion, random inputs with zeros and negatives."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from tinynn import testing
from tinynn.testing import assert_close, to_numpy  # noqa: F401 - re-exported for tests
from tinynn.testing.tolerances import FD_RTOL, FD_STEP


def numerical_grad(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, grad_output: np.ndarray,
                   step: float = FD_STEP) -> np.ndarray:
    """d/dx of sum(grad_output * f(x)) by central differences, one element at a time (float64):
    ``tinynn.testing.numerical_grad``, the routine behind ``gradcheck``, with the step FD_STEP."""
    return testing.numerical_grad(f, x, grad_output, eps=step)


def check_grad(f: Callable[[np.ndarray], np.ndarray], x: np.ndarray, grad_output: np.ndarray,
               analytic: np.ndarray, name: str = "grad") -> float:
    """Assert that ``analytic`` matches the finite-difference gradient to FD_RTOL."""
    return assert_close(analytic, numerical_grad(f, x, grad_output), rtol=FD_RTOL, name=name)


def random_array(rng: np.random.Generator, shape: tuple[int, ...], zero_fraction: float = 0.2,
                 dtype: type = np.float64) -> np.ndarray:
    """Standard-normal values (so about half negative) with about ``zero_fraction`` exact zeros."""
    values = rng.standard_normal(shape)
    values[rng.random(shape) < zero_fraction] = 0.0
    return values.astype(dtype)


def random_grad(rng: np.random.Generator, shape: tuple[int, ...], dtype: type = np.float64) -> np.ndarray:
    """An upstream gradient that is never all ones (all ones hides transposed gradients)."""
    return rng.uniform(-2.0, 2.0, size=shape).astype(dtype)


def torch_tensor(array: np.ndarray, requires_grad: bool = False):
    import torch

    tensor = torch.tensor(np.array(array))
    return tensor.requires_grad_(requires_grad) if tensor.is_floating_point() else tensor


@contextlib.contextmanager
def split_batches(threads: int, chunked: bool = False) -> Iterator[None]:
    """Inside, every convolution splits its batch into up to ``threads`` parts run on threads, as
    only large ones do otherwise (``tinynn._engine.parallel``); with ``chunked`` it also builds its
    im2col columns one image at a time and rebuilds them in the backward, as it does when the
    batch's columns exceed ``conv.CHUNK_BYTES``. Small test cases then cover those paths.
    Sets the modules' knobs directly, leaving NumPy's BLAS thread count alone."""
    from tinynn._engine import conv
    from tinynn._engine import parallel as _parallel

    saved = _parallel.PART_WORK, _parallel._num_threads, conv.CHUNK_BYTES
    _parallel.PART_WORK, _parallel._num_threads = 1, threads
    if chunked:
        conv.CHUNK_BYTES = 1
    try:
        yield
    finally:
        _parallel.PART_WORK, _parallel._num_threads, conv.CHUNK_BYTES = saved


def outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    """``("ok", value)``, or the error's type name and message: what a call gave, so that ours and
    torch's can be compared side by side, refusals included."""
    try:
        return "ok", call()
    except Exception as error:  # the error itself is what is compared
        return type(error).__name__, str(error)
