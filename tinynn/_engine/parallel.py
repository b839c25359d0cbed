"""``run_parts``: a large convolution's batch split across the cores, one BLAS thread per part.

NumPy runs copies and element-wise loops (im2col, col2im, the bias add) on one core, and a large
matrix product that OpenBLAS splits across the cores waits for its slowest thread at every block.
torch's CPU convolution instead gives each thread its own images (``at::parallel_for`` over the
batch); doing the same here gives each thread its own im2col, its own products on one BLAS thread
and its own col2im. Python threads really do run in parallel on this work: NumPy releases the GIL
inside copies, ufunc loops and BLAS calls, which is nearly all of it.

Small layers stay on the calling thread (``batch_parts`` returns one part): handing work to
another thread costs tens of microseconds, and the tutorial CNN's layers take about that long.
``tinynn.set_num_threads`` sets the number of threads, as ``torch.set_num_threads`` does for torch.
"""

from __future__ import annotations

import concurrent.futures
import itertools
import os
import queue
import threading
from collections.abc import Callable
from typing import TypeVar

from tinynn._engine.blas import can_limit_threads, one_blas_thread, set_blas_threads

T = TypeVar("T")

PART_WORK = 1 << 26  # multiply-adds: about 0.5 ms on one core; less does not pay for a thread

_num_threads: int | None = None  # None: one per core
_workers: list[queue.SimpleQueue] = []  # one task queue per worker thread; part k goes to worker k-1
_workers_lock = threading.Lock()
_region_lock = threading.Lock()  # held while parts run on the workers
_local = threading.local()  # .inside: this thread is running a part (no nested splitting)


def cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def get_num_threads() -> int:
    """The number of threads tinynn splits large work across (default: one per core)."""
    return cores() if _num_threads is None else _num_threads


def set_num_threads(threads: int) -> None:
    """Use up to ``threads`` threads: parts of a large convolution's batch, and NumPy's OpenBLAS
    threads for large products, like ``torch.set_num_threads``."""
    global _num_threads
    if isinstance(threads, bool) or not isinstance(threads, int):
        raise RuntimeError(f"set_num_threads expects an int, but got {type(threads).__name__}")
    if threads <= 0:
        raise RuntimeError("set_num_threads expects a positive integer")
    _num_threads = threads
    set_blas_threads(threads)


def batch_parts(batch: int, work: int) -> list[slice]:
    """``range(batch)`` cut into one slice per thread that gets at least ``PART_WORK`` of the
    ``work`` (multiply-adds); a single slice when splitting would not pay, inside a part already,
    or when NumPy's BLAS cannot be held to one thread per part (each part would then start a full
    set of BLAS threads)."""
    if work < 2 * PART_WORK:  # the common case, decided first: it is on every layer's path
        return [slice(0, batch)]
    parts = 1
    if can_limit_threads() and not getattr(_local, "inside", False):
        parts = max(1, min(get_num_threads(), batch, work // PART_WORK))
    return even_slices(slice(0, batch), parts)


def even_slices(span: slice, count: int) -> list[slice]:
    """``span`` (a slice with start and stop) cut into ``count`` consecutive slices whose lengths
    differ by at most one."""
    length = span.stop - span.start
    bounds = [span.start + length * k // count for k in range(count + 1)]
    return [slice(start, stop) for start, stop in itertools.pairwise(bounds)]


def _work(tasks: queue.SimpleQueue) -> None:
    while True:
        future, fn, index, part = tasks.get()
        try:
            future.set_result(_run_part(fn, index, part))
        except BaseException as error:  # handed to the caller, which re-raises it
            future.set_exception(error)


def _worker_queues(count: int) -> list[queue.SimpleQueue]:
    """``count`` worker threads' task queues, starting threads as needed. Each part gets a thread of
    its own (a thread pool may run two parts one after the other on one thread)."""
    with _workers_lock:
        while len(_workers) < count:
            tasks: queue.SimpleQueue = queue.SimpleQueue()
            threading.Thread(target=_work, args=(tasks,), name=f"tinynn-{len(_workers) + 1}", daemon=True).start()
            _workers.append(tasks)
        return _workers[:count]


def _forget_workers() -> None:
    # A forked child inherits the queues but none of the threads that serve them.
    _workers.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers)


def _run_part(fn: Callable[[int, slice], T], index: int, part: slice) -> T:
    _local.inside = True
    try:
        return fn(index, part)
    finally:
        _local.inside = False


def run_parts(fn: Callable[[int, slice], T], parts: list[slice]) -> list[T]:
    """``[fn(k, part) for k, part in enumerate(parts)]``, the parts run at once on separate threads
    (the calling thread takes part 0), BLAS on one thread each. ``fn`` must write only to memory
    that belongs to its part. The first exception raised by any part is re-raised, after all
    parts have finished. While another thread of the program is running parts, these run one
    after the other on the calling thread (the workers and the BLAS thread count are shared)."""
    if len(parts) == 1 or not _region_lock.acquire(blocking=False):
        return [fn(k, part) for k, part in enumerate(parts)]
    try:
        return _run_parts_on_workers(fn, parts)
    finally:
        _region_lock.release()


def _run_parts_on_workers(fn: Callable[[int, slice], T], parts: list[slice]) -> list[T]:
    with one_blas_thread():
        futures: list[concurrent.futures.Future] = []
        for k, tasks in enumerate(_worker_queues(len(parts) - 1), start=1):
            futures.append(concurrent.futures.Future())
            tasks.put((futures[-1], fn, k, parts[k]))
        try:
            first = _run_part(fn, 0, parts[0])
        finally:
            concurrent.futures.wait(futures)
        return [first, *(future.result() for future in futures)]
