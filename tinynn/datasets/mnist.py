"""MNIST and Fashion-MNIST as the tutorial uses them: found or downloaded, verified, then parsed.

Each file is checked against its published digest before a byte of it is parsed (SHA-256 for the
IDX files; ``_download.py`` fetches them, ``idx.py`` parses them, ``_pickle.py`` reads the
tutorial's pickle without running code).
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from numpy.typing import DTypeLike

from tinynn.datasets._download import DownloadError, download_file, mirror_url
from tinynn.datasets._pickle import load_tutorial_pickle
from tinynn.datasets.idx import IdxFormatError, IdxKind, decompress, parse_idx

TRAIN_SIZE, VALID_SIZE, TEST_SIZE = 50_000, 10_000, 10_000

# (role, file name, IDX kind, number of items)
IDX_FILES: tuple[tuple[str, str, IdxKind, int], ...] = (
    ("train_images", "train-images-idx3-ubyte.gz", "images", TRAIN_SIZE + VALID_SIZE),
    ("train_labels", "train-labels-idx1-ubyte.gz", "labels", TRAIN_SIZE + VALID_SIZE),
    ("test_images", "t10k-images-idx3-ubyte.gz", "images", TEST_SIZE),
    ("test_labels", "t10k-labels-idx1-ubyte.gz", "labels", TEST_SIZE),
)

# SHA-256 of the original .gz files. Their MD5s are the published ones (torchvision's MNIST /
# FashionMNIST resources, the Fashion-MNIST README), so these digests name the original bytes.
SHA256 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
        "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
        "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
        "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84",
        "train-labels-idx1-ubyte.gz": "a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845",
        "t10k-images-idx3-ubyte.gz": "346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073",
        "t10k-labels-idx1-ubyte.gz": "67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5",
    },
}

# The tutorial's pickle (deeplearning.net's mnist.pkl.gz). Only its MD5 is published (in many
# download scripts, e.g. borgwang/tinynn's); no SHA-256 is, so MD5 is what can be checked. MD5 is
# no defence against a crafted file, but the restricted unpickler is: the digest guards integrity.
PICKLE_NAME = "mnist.pkl.gz"
PICKLE_MD5 = "a02cd19f81d51c426d7ca14024243ce9"

# Base URLs; the file name is appended. "{name}" in a base is replaced by the data set's name.
DEFAULT_MIRRORS = {
    "mnist": (
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
        "http://yann.lecun.com/exdb/mnist/",
    ),
    "fashion-mnist": (
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
    ),
}
MIRRORS_ENV = "TINYNN_MNIST_MIRRORS"
DATA_ENV = "TINYNN_DATA"

Split = tuple[np.ndarray, np.ndarray]


class ChecksumMismatchError(RuntimeError):
    """A data file whose digest is not the published one: damaged, truncated or a different file."""


class DatasetNotFoundError(FileNotFoundError):
    """The files are in none of the places looked, and downloading them was off or failed."""


def load_mnist(root: str | os.PathLike[str] | None = None, *, name: str = "mnist", download: bool = True,
               mirrors: str | Sequence[str] | None = None, dtype: DTypeLike = np.float32,
               ) -> tuple[Split, Split, Split]:
    """Load MNIST (or Fashion-MNIST) as ``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))``.

    Like the tutorial's pickle: the first 50,000 training images train, the last 10,000 validate,
    the 10,000 test images test. Images are (n, 784) in ``dtype`` with values pixel / 255 in [0, 1];
    labels are (n,) int64 in 0..9. ``name`` is "mnist" or "fashion-mnist".

    Where files are looked for, in order: ``root``, ``$TINYNN_DATA``, the cache
    (``$XDG_CACHE_HOME/tinynn``, else ``~/.cache/tinynn``); in each, ``<dir>/<name>/`` holding the
    four IDX files ``train-images-idx3-ubyte.gz``, ``train-labels-idx1-ubyte.gz``,
    ``t10k-images-idx3-ubyte.gz``, ``t10k-labels-idx1-ubyte.gz``. Each file is taken from the first
    place that has it and must match its SHA-256, else ChecksumMismatchError (never skipped).

    Missing files are downloaded (``download=True``) from ``mirrors`` (base URLs, a list or a
    comma-separated string; default ``$TINYNN_MNIST_MIRRORS``, else DEFAULT_MIRRORS), trying the
    next mirror after any failure, into ``<root>/<name>/`` if that is writable, else the cache.
    A file gets its name only once its SHA-256 is verified. Needs ``requests``. When the files are
    neither found nor downloaded: DatasetNotFoundError listing the places, mirrors and remedies.

    The tutorial's ``mnist.pkl.gz`` in ``<dir>/mnist/`` is used when the IDX files are not all
    found. Only deeplearning.net's file is accepted, checked by its widely published MD5 (no
    SHA-256 of it is published; a different pickle is refused, ChecksumMismatchError), and read with
    an unpickler that admits numpy arrays and nothing else. Its pixels are stored as p / 256; they
    are turned back into p / 255 so both sources give identical arrays. It is never downloaded.
    """
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"load_mnist(): dtype must be a floating-point dtype, got {dtype}")
    if name not in SHA256:
        raise ValueError(f"load_mnist(): name must be one of {sorted(SHA256)}, got {name!r}")
    mirror_list = resolve_mirrors(mirrors, name)
    places = search_places(root)
    paths = {filename: _find(places, name, filename) for _, filename, _, _ in IDX_FILES}
    missing = [filename for filename, path in paths.items() if path is None]
    if missing and name == "mnist":
        pickle_path = _find(places, name, PICKLE_NAME)
        if pickle_path is not None:
            return _load_pickle(pickle_path, dtype)
    if missing:
        paths.update(_download_missing(missing, root, places, name, download, mirror_list))

    arrays = {}
    for role, filename, kind, count in IDX_FILES:
        path = paths[filename]
        data = _read_verified(path, "SHA-256", SHA256[name][filename], name)
        values = parse_idx(decompress(data, str(path)), kind, str(path))
        if len(values) != count:
            raise IdxFormatError(f"{path}: {len(values)} {kind}, expected {count}")
        arrays[role] = values
    x_train_all = _scale_images(arrays["train_images"], dtype)
    y_train_all = arrays["train_labels"].astype(np.int64)
    return (
        (x_train_all[:TRAIN_SIZE], y_train_all[:TRAIN_SIZE]),
        (x_train_all[TRAIN_SIZE:], y_train_all[TRAIN_SIZE:]),
        (_scale_images(arrays["test_images"], dtype), arrays["test_labels"].astype(np.int64)),
    )


def search_places(root: str | os.PathLike[str] | None) -> list[tuple[Path, str]]:
    """The folders searched, in order, each with where it came from: root, $TINYNN_DATA, the cache."""
    places = []
    if root is not None:
        places.append((Path(root).expanduser(), "root="))
    if os.environ.get(DATA_ENV):
        places.append((Path(os.environ[DATA_ENV]).expanduser(), f"${DATA_ENV}"))
    places.append((cache_dir(), "cache"))
    unique, seen = [], set()
    for folder, origin in places:
        if folder not in seen:
            seen.add(folder)
            unique.append((folder, origin))
    return unique


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/tinynn``, else ``~/.cache/tinynn`` (the XDG spec ignores relative paths)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "tinynn"


def resolve_mirrors(mirrors: str | Sequence[str] | None, name: str) -> list[str]:
    """``mirrors``, else ``$TINYNN_MNIST_MIRRORS``, else the defaults, as a list of base URLs."""
    if mirrors is None and os.environ.get(MIRRORS_ENV, "").strip():
        mirrors = os.environ[MIRRORS_ENV]
    if mirrors is None:
        return list(DEFAULT_MIRRORS[name])
    if isinstance(mirrors, str):
        mirrors = mirrors.split(",")
    if not all(isinstance(base, str) for base in mirrors):
        raise TypeError(f"load_mnist(): mirrors must be a string or a sequence of strings, got {mirrors!r}")
    return [base.strip().replace("{name}", name) for base in mirrors if base.strip()]


def _find(places: list[tuple[Path, str]], name: str, filename: str) -> Path | None:
    for folder, _ in places:
        path = folder / name / filename
        if path.is_file():
            return path
    return None


def _read_verified(path: Path, algorithm: str, expected: str, name: str) -> bytes:
    """The bytes of ``path``, read once, after checking their digest (so what is parsed is what was checked)."""
    data = path.read_bytes()
    actual = hashlib.new(algorithm.replace("-", "").lower(), data, usedforsecurity=False).hexdigest()
    if actual != expected:
        raise ChecksumMismatchError(
            f"{path}: {algorithm} is {actual}, expected {expected} for the original {name} file "
            f"{path.name}. The file is damaged, truncated or a different file, so it was not used. "
            f"Delete it (load_mnist(download=True) then fetches a fresh copy) or replace it with the original."
        )
    return data


def _scale_images(images: np.ndarray, dtype: np.dtype) -> np.ndarray:
    scaled = images.reshape(len(images), -1).astype(dtype)
    scaled /= 255  # a Python int keeps float32 float32
    return scaled


def _download_missing(missing: list[str], root: str | os.PathLike[str] | None, places: list[tuple[Path, str]],
                      name: str, download: bool, mirror_list: list[str]) -> dict[str, Path]:
    if not download:
        raise _not_found_error(missing, places, name, mirror_list, "download=False, so nothing was downloaded.")
    target, unwritable = _writable_dir(root, name)
    if target is None:
        raise _not_found_error(missing, places, name, mirror_list, f"Nowhere to download to: {unwritable}.")
    try:
        import requests  # noqa: F401 - fail here, before any file is touched, if it is missing
    except ImportError:
        raise _not_found_error(missing, places, name, mirror_list,
                               "Downloading needs requests: pip install requests (or tinynn[download]).") from None
    downloaded = {}
    for index, filename in enumerate(missing):
        try:
            downloaded[filename] = download_file(mirror_list, filename, target, SHA256[name][filename],
                                                 progress=sys.stderr)
        except DownloadError as error:  # offline, most likely: the other files would fail the same way
            tried = "\n".join(f"  {url}: {reason}" for url, reason in error.attempts) or "  (no mirrors given)"
            raise _not_found_error(missing[index:], places, name, mirror_list,
                                   f"Downloading {filename} into {target} failed on every mirror:\n{tried}") from None
    return downloaded


def _writable_dir(root: str | os.PathLike[str] | None, name: str) -> tuple[Path | None, str]:
    """The first of ``<root>/<name>``, ``<cache>/<name>`` that exists or can be made and written to."""
    problems = []
    for folder in ([Path(root).expanduser()] if root is not None else []) + [cache_dir()]:
        target = folder / name
        try:
            target.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=target):
                pass
        except OSError as error:
            problems.append(f"{target} ({error.strerror or error})")
            continue
        return target, ""
    return None, ", ".join(problems)


def _not_found_error(missing: list[str], places: list[tuple[Path, str]], name: str, mirror_list: list[str],
                     why: str) -> DatasetNotFoundError:
    looked = "\n".join(f"  {folder / name}  ({origin})" for folder, origin in places)
    also = f" (or the tutorial's {PICKLE_NAME})" if name == "mnist" else ""
    example = mirror_url(mirror_list[0], missing[0]) if mirror_list else "<mirror>/" + missing[0]
    return DatasetNotFoundError(
        f"{name} not found: missing {', '.join(missing)}{also}.\n"
        f"Looked in:\n{looked}\n{why}\n"
        f"Mirrors: {', '.join(mirror_list) or '(none)'}\n"
        f"To provide the files: download the four files (e.g. {example}) into <dir>/{name}/ and "
        f"set {DATA_ENV}=<dir> or pass root=<dir>; or call load_mnist(download=True) online; "
        f"or give a reachable mirror with mirrors= or ${MIRRORS_ENV} (comma-separated base URLs)."
    )


def _load_pickle(path: Path, dtype: np.dtype) -> tuple[Split, Split, Split]:
    splits = load_tutorial_pickle(_read_verified(path, "MD5", PICKLE_MD5, "mnist"), str(path))
    result = []
    for split, (images, labels), size in zip(("train", "valid", "test"), splits, (TRAIN_SIZE, VALID_SIZE, TEST_SIZE)):
        if len(images) != size:
            raise ValueError(f"{path}: {split} holds {len(images)} images, expected {size}")
        if labels.size and (labels.min() < 0 or labels.max() > 9):
            raise ValueError(f"{path}: {split} labels outside 0..9 ({labels.min()}..{labels.max()})")
        result.append((_pickle_images(images, dtype, path), labels.astype(np.int64)))
    return result[0], result[1], result[2]


def _pickle_images(images: np.ndarray, dtype: np.dtype, path: Path) -> np.ndarray:
    """Pixels stored as p / 256 (the pickle's own scaling) come back as p / 255, like the IDX path."""
    pixels = images * images.dtype.type(256)  # times a power of two: exact
    if np.array_equal(pixels, np.rint(pixels)) and pixels.min() >= 0 and pixels.max() <= 255:
        return _scale_images(pixels, dtype)
    if images.min() < 0 or images.max() > 1:
        raise ValueError(f"{path}: image values outside [0, 1] ({images.min()}..{images.max()})")
    return images.astype(dtype)
