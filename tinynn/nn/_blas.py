"""``matmul``: ``np.matmul`` that keeps small products on one thread.

NumPy's bundled OpenBLAS splits every product above about 256K multiply-adds across all cores.
The smallest products (a few hundred thousand multiply-adds, a few microseconds) gain nothing from
a second thread and pay for waking it and waiting for it, so products below ``SMALL_PRODUCT``
multiply-adds ask OpenBLAS for one thread, and larger ones use them all. The tutorial CNN's
products (1.5 to 7 million multiply-adds) run nearly twice as fast on two threads as on one:
measured on a quiet 2-core machine, its training step took 1.20 ms with this threshold at 1M
multiply-adds against 1.31 ms at 16M (every product of that CNN on one thread). On a machine
busy with other work a second BLAS thread that is not scheduled in time stalls its product for a
whole scheduler slice; ``tinynn.set_num_threads(1)`` then keeps every product on one thread.

The OpenBLAS that NumPy wheels bundle is found by file name; with any other BLAS this module is
plain ``np.matmul``. Setting OpenBLAS's thread count costs well under a microsecond.
"""

from __future__ import annotations

import ctypes
import glob
import math
import os
from collections.abc import Callable

import numpy as np

SMALL_PRODUCT = 1 << 20  # multiply-adds: about 6 us on one core


def _openblas_thread_setters() -> tuple[Callable[[], int], Callable[[int], None]] | None:
    """(get_num_threads, set_num_threads) of NumPy's bundled OpenBLAS, or None."""
    for path in glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*")):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                getter = getattr(library, f"{prefix}_get_num_threads{suffix}", None)
                setter = getattr(library, f"{prefix}_set_num_threads{suffix}", None)
                if getter is not None and setter is not None:
                    return getter, setter
    return None


_THREADS = _openblas_thread_setters()


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)``, on one BLAS thread when it is a small product."""
    if _THREADS is None:
        return np.matmul(a, b, out=out)
    a_shape = a.shape if a.ndim > 1 else (1, *a.shape)  # a vector is one row, or one column on the right
    b_shape = b.shape if b.ndim > 1 else (*b.shape, 1)
    # The larger batch, not the broadcast one (cheaper to find; only a threshold depends on it).
    batch = max(math.prod(a_shape[:-2]), math.prod(b_shape[:-2]))
    if batch * a_shape[-2] * a_shape[-1] * b_shape[-1] >= SMALL_PRODUCT:
        return np.matmul(a, b, out=out)
    with one_blas_thread():
        return np.matmul(a, b, out=out)


def set_blas_threads(threads: int) -> None:
    """Let NumPy's OpenBLAS use up to ``threads`` threads (nothing happens with another BLAS)."""
    if _THREADS is not None:
        _THREADS[1](threads)


def can_limit_threads() -> bool:
    """Whether ``one_blas_thread`` can actually hold NumPy's BLAS to one thread."""
    return _THREADS is not None


class one_blas_thread:  # noqa: N801 - used like a function: ``with one_blas_thread():``
    """Every product inside on one BLAS thread (for code that already runs one thread per core, and
    for small products); the thread count is restored on the way out. A class rather than a
    generator-based context manager: ``matmul`` enters one per small product."""

    def __enter__(self) -> None:
        if _THREADS is not None:
            self._threads = _THREADS[0]()
            _THREADS[1](1)

    def __exit__(self, *exc_info: object) -> None:
        if _THREADS is not None:
            _THREADS[1](self._threads)
