"""``tinynn.set_num_threads`` and ``get_num_threads``, like torch's.

The threads belong to the engine (``tinynn._engine.parallel``: a large convolution's batch split
across the cores, and NumPy's BLAS threads), which is imported only when one of these is called,
so that a program in textbook mode never loads it.
"""

from __future__ import annotations


def get_num_threads() -> int:
    """The number of threads tinynn splits large work across (default: one per core)."""
    from tinynn._engine import parallel

    return parallel.get_num_threads()


def set_num_threads(threads: int) -> None:
    """Use up to ``threads`` threads: parts of a large convolution's batch, and NumPy's OpenBLAS
    threads for large products, like ``torch.set_num_threads``."""
    from tinynn._engine import parallel

    parallel.set_num_threads(threads)
