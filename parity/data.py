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
    """MNIST-shaped digits-like data: ten smooth 28x28 class templates, each sample a shifted,
    rescaled and noisy copy of its class's template, clipped to [0, 1]. A linear model learns it to
    roughly MNIST's accuracy, and the CNNs learn it too, so the stages' figures stay meaningful."""
    rng = np.random.default_rng(seed)
    grid_y, grid_x = np.mgrid[0:28, 0:28].astype(np.float64)
    templates = np.zeros((10, 28, 28))
    for template in templates:  # a few soft strokes (Gaussian blobs) per class
        for _ in range(5):
            cy, cx = rng.uniform(7, 21, size=2)
            sy, sx = rng.uniform(1.5, 4.0, size=2)
            template += np.exp(-((grid_y - cy) ** 2 / (2 * sy**2) + (grid_x - cx) ** 2 / (2 * sx**2)))
        template /= template.max()
    n = n_train + n_valid
    labels = rng.integers(0, 10, size=n)
    images = templates[labels]
    shifts = rng.integers(-2, 3, size=(n, 2))
    for dy in range(-2, 3):  # a random shift of up to 2 pixels, done per shift value (25 cases)
        for dx in range(-2, 3):
            rows = (shifts[:, 0] == dy) & (shifts[:, 1] == dx)
            images[rows] = np.roll(images[rows], (dy, dx), axis=(1, 2))
    images = images * rng.uniform(0.6, 1.2, size=(n, 1, 1)) + rng.normal(0.0, 0.3, size=(n, 28, 28))
    x = np.clip(images, 0.0, 1.0).reshape(n, 784).astype(dtype)
    y = labels.astype(np.int64)
    return TutorialData(x[:n_train], y[:n_train], x[n_train:], y[n_train:], "synthetic")
