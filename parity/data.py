"""The data for a parity run: MNIST (or Fashion-MNIST) through tinynn's loader, else a stand-in.

Where the loader looks, in order: ``--data DIR``, ``$TINYNN_DATA``, its cache, then a download
(see ``tinynn.datasets.load_mnist``). When none of them gives the files, the run goes on with a
generated, MNIST-shaped and learnable stand-in, labelled "synthetic" in the table and the JSON.

The character-level stages read text that ships with the project instead ("docs": the README and
``docs/*.md``), so they need no download and no stand-in.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from parity.context import TutorialData

SYNTHETIC_TRAIN, SYNTHETIC_VALID = 50_000, 10_000
ROOT = Path(__file__).resolve().parents[1]
SEQ_LEN, TRAIN_STRIDE, VALID_FRACTION = 64, 32, 0.1  # the text stages' windows (see text_data)


def load_data(data_dir: str | os.PathLike[str] | None = None, dataset: str = "mnist", dtype: str = "float32",
              download: bool = True, log: Callable[[str], None] = print) -> TutorialData:
    """``x`` as (n, 784) ``dtype`` in [0, 1] and ``y`` as (n,) int64: 50,000 to train, 10,000 to validate.
    ``dataset="docs"``: the project's own text as character windows (``text_data``), wherever ``data_dir`` is."""
    from tinynn.datasets import load_mnist

    if dataset == "docs":
        return text_data(docs_text())

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


def docs_text(root: Path = ROOT) -> str:
    """The text the character-level stages learn: README.md then docs/*.md by name, as one string."""
    paths = [root / "README.md", *sorted((root / "docs").glob("*.md"))]
    return "\n".join(path.read_text(encoding="utf-8") for path in paths)


def text_data(text: str, seq_len: int = SEQ_LEN, stride: int = TRAIN_STRIDE,
              valid_fraction: float = VALID_FRACTION, source: str = "docs") -> TutorialData:
    """Next-character windows of ``text``: x[i] is ``seq_len`` character ids, y[i] the same window one
    character on (the target at every position is the next character).

    The vocabulary is the text's characters, sorted. The first 1 - ``valid_fraction`` of the text
    trains, in windows starting every ``stride`` characters (overlapping when stride < seq_len);
    the rest validates, in windows side by side.
    """
    vocab = "".join(sorted(set(text)))
    ids = np.array([vocab.index(char) for char in text], dtype=np.int64)
    split = int(len(ids) * (1 - valid_fraction))

    def windows(part: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
        both = np.lib.stride_tricks.sliding_window_view(part, seq_len + 1)[::step]
        return np.ascontiguousarray(both[:, :-1]), np.ascontiguousarray(both[:, 1:])

    (x_train, y_train), (x_valid, y_valid) = windows(ids[:split], stride), windows(ids[split:], seq_len)
    return TutorialData(x_train, y_train, x_valid, y_valid, source, vocab)
