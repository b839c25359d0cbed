"""The data for a parity run: MNIST (or Fashion-MNIST) through tinynn's loader, else a stand-in.

Where the loader looks, in order: ``--data DIR``, ``$TINYNN_DATA``, its cache, then a download
(see ``tinynn.datasets.load_mnist``). When none of them gives the files, the run goes on with a
generated, MNIST-shaped and learnable stand-in, labelled "synthetic" in the table and the JSON.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable

import numpy as np

from parity.context import TutorialData

SYNTHETIC_TRAIN, SYNTHETIC_VALID = 50_000, 10_000


def load_data(data_dir: str | os.PathLike[str] | None = None, dataset: str = "mnist", dtype: str = "float32",
              download: bool = True, log: Callable[[str], None] = print) -> TutorialData:
    """``x`` as (n, 784) ``dtype`` in [0, 1] and ``y`` as (n,) int64: 50,000 to train, 10,000 to validate."""
    from tinynn.datasets import load_mnist

    loader_messages = io.StringIO()  # the loader reports each mirror it tries; keep that for success only
    try:
        with contextlib.redirect_stderr(loader_messages):
            (x_train, y_train), (x_valid, y_valid), _ = load_mnist(data_dir, name=dataset, download=download,
                                                                   dtype=np.dtype(dtype))
    except Exception as exc:  # any reason at all: say it in one line, go on
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        log(f"parity: no {dataset} data ({type(exc).__name__}: {reason}); running on a generated "
            "MNIST-shaped stand-in, labelled 'synthetic' (give the real files with --data DIR or TINYNN_DATA)")
        return synthetic_data(dtype)
    if loader_messages.getvalue():
        sys.stderr.write(loader_messages.getvalue())
    return TutorialData(x_train, y_train, x_valid, y_valid, dataset)


def synthetic_data(dtype: str = "float32", n_train: int = SYNTHETIC_TRAIN, n_valid: int = SYNTHETIC_VALID,
                   seed: int = 0) -> TutorialData:
    """``tinynn.datasets.synthetic_digits`` as the tutorial's arrays, labelled "synthetic"."""
    from tinynn.datasets import synthetic_digits

    (x_train, y_train), (x_valid, y_valid) = synthetic_digits(n_train, n_valid, dtype=dtype, seed=seed)
    return TutorialData(x_train, y_train, x_valid, y_valid, "synthetic")
