"""``matmul``: ``np.matmul`` that puts a product on one BLAS thread or on all of them, whichever pays.

NumPy's bundled OpenBLAS splits every product above about 256K multiply-adds across all cores.
Whether the second thread pays depends on two things:

* Size. Products below ``SMALL_PRODUCT`` multiply-adds (a few microseconds) gain nothing from a
  second thread and pay for waking it and waiting for it: they always run on one. NumPy calls
  BLAS once per matrix of a batched product, so the size is that of one matrix.
* How far apart the cores are. A product's inputs were usually just written by this thread
  (im2col's columns, the gradient from the layer above), so they sit in this core's cache, and
  the second thread must fetch its half from there. Where the two cores share a cache that is
  nearly free; where they do not, every cache line crosses between them. On the 2-vCPU virtual
  machines this project runs on, the hypervisor moves the vCPUs between near and far cores from
  one minute to the next: the tutorial CNN's training step measured 1.11 ms on two threads
  against 1.25 ms on one while they were near, and 1.50 ms against 1.22 ms while they were far.

So a product between those sizes asks ``_FAR_CORES``, a probe that times a product on freshly
written columns on all threads and on one, and uses all threads while they win; the probe runs
again once ``PROBE_SECONDS`` have passed (well under a millisecond each time). Products whose
arithmetic outweighs moving their inputs (``DENSE_PRODUCT`` multiply-adds per input element) use
all threads without asking. One consequence: float32 products of the middle sizes may differ in
their last bits from one call to the next, since OpenBLAS sums in another order on one thread
than on two (float64 products measured identical). ``tinynn.set_num_threads(1)`` keeps every
product on one thread, and results the same from run to run.

The OpenBLAS that NumPy wheels bundle is found by file name; with any other BLAS this module is
plain ``np.matmul``. Setting OpenBLAS's thread count costs well under a microsecond.
"""

from __future__ import annotations

import contextlib
import ctypes
import glob
import math
import os
import threading
import time
from collections.abc import Callable

import numpy as np

SMALL_PRODUCT = 1 << 20  # multiply-adds: about 6 us on one core
DENSE_PRODUCT = 128  # multiply-adds per input element from which two threads win even on far cores (1.3x at 123)
PROBE_SECONDS = 1.0


def _openblas() -> tuple[ctypes.CDLL, str, str] | None:
    """NumPy's bundled OpenBLAS, with the prefix and suffix its functions' names carry
    (``scipy_openblas`` or ``openblas``; ``64_`` or nothing, as the wheel was built), or None."""
    for path in glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*")):
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_openblas", "openblas"):
            for suffix in ("64_", ""):
                if all(hasattr(library, f"{prefix}_{name}{suffix}") for name in ("get_num_threads", "set_num_threads")):
                    return library, prefix, suffix
    return None


def _function(name: str, restype: type | None = ctypes.c_int) -> Callable[..., object]:
    library, prefix, suffix = _OPENBLAS  # type: ignore[misc]
    function = getattr(library, f"{prefix}_{name}{suffix}")
    function.restype = restype
    return function


_OPENBLAS = _openblas()
# (get_num_threads, set_num_threads), or None with another BLAS.
_THREADS = None if _OPENBLAS is None else (_function("get_num_threads"), _function("set_num_threads", None))


def openblas_report() -> dict[str, object]:
    """What NumPy's OpenBLAS says of itself (for the benchmarks' records): its build configuration,
    the CPU whose kernels it chose, and its thread count; empty with another BLAS."""
    if _OPENBLAS is None:
        return {}
    library, prefix, suffix = _OPENBLAS
    report: dict[str, object] = {"library": os.path.basename(library._name), "num_threads": _THREADS[0]()}
    for key, name in (("config", "get_config"), ("core", "get_corename")):
        if hasattr(library, f"{prefix}_{name}{suffix}"):
            report[key] = _function(name, ctypes.c_char_p)().decode()
    return report


def matmul(a: np.ndarray, b: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """``np.matmul(a, b, out=out)``, on one BLAS thread or on all of them (see the module's docstring)."""
    if _THREADS is None:
        return np.matmul(a, b, out=out)
    a_shape = a.shape if a.ndim > 1 else (1, *a.shape)  # a vector is one row, or one column on the right
    b_shape = b.shape if b.ndim > 1 else (*b.shape, 1)
    if all_threads_pay(a_shape[-2], a_shape[-1], b_shape[-1]):
        return np.matmul(a, b, out=out)
    with one_blas_thread():
        return np.matmul(a, b, out=out)


def all_threads_pay(rows: int, inner: int, columns: int) -> bool:
    """Whether a ``(rows, inner) @ (inner, columns)`` product should use all BLAS threads."""
    work = rows * inner * columns
    if work < SMALL_PRODUCT:
        return False
    if work >= DENSE_PRODUCT * (rows * inner + inner * columns):
        return True
    return _FAR_CORES.all_threads_pay()


class _CoreProbe:
    """Times a product on freshly written columns (the tutorial's second conv layer) on all BLAS
    threads and on one, at most once every ``PROBE_SECONDS``, and remembers which was faster."""

    def __init__(self) -> None:
        self.measured_at = -math.inf
        self.all_threads_won = True
        self.tally = {True: 0, False: 0}  # how often each answer came out (benchmarks report it)
        self._lock = threading.Lock()
        self._arrays: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def all_threads_pay(self) -> bool:
        now = time.monotonic()
        # Inside one_blas_thread (or after set_num_threads(1)) there is nothing to choose between.
        if now - self.measured_at >= PROBE_SECONDS and _THREADS is not None and _THREADS[0]() > 1:
            if self._lock.acquire(blocking=False):  # another thread probing: use the last answer
                try:
                    self.all_threads_won = self.measure()
                    self.tally[self.all_threads_won] += 1
                    self.measured_at = time.monotonic()
                finally:
                    self._lock.release()
        return self.all_threads_won

    def measure(self) -> bool:
        """Whether all threads beat one at writing columns on this thread and multiplying them,
        over and over, as a conv layer does from step to step (about 1 ms in all). The write is
        timed too: after a product on two threads it must first take back the lines that the
        other core read, which on far cores costs more than the product itself."""
        if self._arrays is None:
            self._arrays = (np.empty((3136, 144), np.float32), np.full((144, 16), 1 / 144, np.float32),
                            np.empty((3136, 16), np.float32))
        columns, weight, out = self._arrays

        def write_and_multiply() -> float:
            start = time.perf_counter()
            columns.fill(1.0)
            np.matmul(columns, weight, out=out)
            return time.perf_counter() - start

        best = {}
        for all_threads in (True, False):
            with one_blas_thread() if not all_threads else contextlib.nullcontext():
                best[all_threads] = min(write_and_multiply() for _ in range(3))  # the first one settles in
        return best[True] < best[False]


_FAR_CORES = _CoreProbe()
if hasattr(os, "register_at_fork"):  # a child forked mid-probe would otherwise find the lock held for good
    os.register_at_fork(after_in_child=lambda: setattr(_FAR_CORES, "_lock", threading.Lock()))


def probe_answers() -> dict[str, int]:
    """How many of the core probe's measurements so far chose all threads, and how many one."""
    return {"all_threads": _FAR_CORES.tally[True], "one_thread": _FAR_CORES.tally[False]}


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
