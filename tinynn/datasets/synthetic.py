"""A generated, MNIST-shaped stand-in, for examples and tests that must run without the real files."""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

Split = tuple[np.ndarray, np.ndarray]


def synthetic_digits(n_train: int = 50_000, n_valid: int = 10_000, *, dtype: DTypeLike = np.float32,
                     seed: int = 0) -> tuple[Split, Split]:
    """``((x_train, y_train), (x_valid, y_valid))`` shaped like ``load_mnist``'s: x (n, 784) in [0, 1], y (n,) int64.

    Ten smooth 28x28 class templates (a few Gaussian strokes each); every sample is its class's
    template shifted by up to 2 pixels, rescaled and noisy, clipped to [0, 1]. A linear model
    learns it to roughly MNIST's accuracy, and the tutorial's CNNs learn it too. The same seed
    gives the same arrays.
    """
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
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])
