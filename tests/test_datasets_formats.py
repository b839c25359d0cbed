"""IDX parsing and the tutorial's pickle: malformed files are refused, code-running pickles never run.

Nothing here reaches the internet: the only load_mnist calls use download=False.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import data_dir
from tinynn.datasets import load_mnist
from tinynn.datasets import mnist as mnist_module
from tinynn.datasets._pickle import UnsafePickleError, load_tutorial_pickle, restricted_loads
from tinynn.datasets.idx import IdxFormatError, decompress, parse_idx
from tinynn.datasets.mnist import ChecksumMismatchError

DATA = data_dir()


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """Only the tmp_path root is searched: no real cache, no TINYNN_DATA."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("TINYNN_DATA", raising=False)


# ---------------------------------------------------------------- IDX parsing


def _idx(magic: int, dims: tuple[int, ...], body: bytes) -> bytes:
    return struct.pack(f">I{len(dims)}I", magic, *dims) + body


def test_parse_idx_reads_a_hand_built_file():
    pixels = np.arange(2 * 28 * 28, dtype=np.uint32).astype(np.uint8)
    images = parse_idx(_idx(2051, (2, 28, 28), pixels.tobytes()), "images")
    assert images.shape == (2, 28, 28) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(-1), pixels)
    assert parse_idx(_idx(2049, (3,), bytes([7, 0, 9])), "labels").tolist() == [7, 0, 9]


MALFORMED_IDX = [  # (bytes, kind, what the error must say)
    (_idx(2049, (3,), bytes(3)), "images", r"magic number 2049 .*label file.*expected 2051"),
    (_idx(0x1234, (3,), bytes(3)), "labels", r"magic number 4660 \(0x00001234\), expected 2049"),
    (_idx(2051, (1, 27, 28), bytes(27 * 28)), "images", r"images are 27x28, expected 28x28"),
    (b"\x00\x00\x08", "labels", r"only 3 bytes, too short"),
    (_idx(2051, (1, 28, 28), b"")[:10], "images", r"header truncated: 10 bytes, but 3 dimension"),
    (_idx(2051, (1, 28, 28), bytes(700)), "images", r"truncated: .* need 784 value bytes .* found 700"),
    (_idx(2049, (2,), bytes(3)), "labels", r"has trailing bytes: .* need 2 value bytes .* found 3"),
    (_idx(2049, (2,), bytes([3, 10])), "labels", r"label 10 out of range"),
]


@pytest.mark.parametrize(("data", "kind", "message"), MALFORMED_IDX)
def test_malformed_idx_is_refused_saying_what_is_wrong(data, kind, message):
    with pytest.raises(IdxFormatError, match=r"^f\.gz: " + message):
        parse_idx(data, kind, "f.gz")


def test_unreadable_gzip_is_refused():
    truncated_gz = gzip.compress(_idx(2049, (2,), bytes([3, 1])))[:-6]
    with pytest.raises(IdxFormatError, match=r"x\.gz: not a readable gzip file"):
        decompress(truncated_gz, "x.gz")


# ---------------------------------------------------------------- the tutorial's pickle


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # what a malicious pickle does: "call os.system(...) when loaded"
        return os.system, (f"touch {self.marker}",)


class _Py2StylePickler(pickle.Pickler):
    """Writes arrays the way Python 2 numpy did: numpy.core names, the bytes as a (latin-1) str."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            state = (1, obj.shape, obj.dtype, False, obj.tobytes().decode("latin-1"))
            return np.ndarray.__reduce__(obj)[0], (np.ndarray, (0,), "b"), state
        return NotImplemented


def _py2_style_pickle(obj: object) -> bytes:
    buffer = io.BytesIO()
    _Py2StylePickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n", b"cnumpy.core.multiarray\n")


def _tutorial_structure(sizes=(6, 2, 3), seed=0):
    rng = np.random.default_rng(seed)
    return tuple((rng.integers(0, 256, (n, 784)).astype(np.float32) / np.float32(256),
                  rng.integers(0, 10, n).astype(np.int64)) for n in sizes)


def test_pickle_that_calls_os_system_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_RunsCode(marker))
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle (os|posix|nt)\.system"):
        restricted_loads(evil)
    nested = _py2_style_pickle((_tutorial_structure()[0], (_RunsCode(marker), 1), ()))
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle (os|posix|nt)\.system"):
        restricted_loads(nested)
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle builtins\.eval"):
        restricted_loads(pickle.dumps(_EvalCall()))
    assert not marker.exists()


class _EvalCall:
    def __reduce__(self):
        return eval, ("1 + 1",)


def test_pickle_of_an_object_array_is_refused():
    with pytest.raises(UnsafePickleError, match="dtype object"):
        restricted_loads(pickle.dumps(np.array([1, "a"], dtype=object), protocol=4))
    with pytest.raises(UnsafePickleError, match=r"_codecs.encode with encoding 'rot13'"):
        restricted_loads(pickle.dumps(_CodecsCall()))


class _CodecsCall:
    def __reduce__(self):
        return __import__("_codecs").encode, ("text", "rot13")


def test_python2_style_pickle_in_the_tutorial_structure_loads():
    splits = _tutorial_structure()
    for data in (_py2_style_pickle(splits), pickle.dumps(splits, protocol=2), pickle.dumps(splits, protocol=4)):
        loaded = load_tutorial_pickle(gzip.compress(data), "mnist.pkl.gz")
        for (images, labels), (expected_images, expected_labels) in zip(loaded, splits):
            assert images.dtype == np.float32 and labels.dtype == np.int64
            np.testing.assert_array_equal(images, expected_images)
            np.testing.assert_array_equal(labels, expected_labels)


def test_pickle_with_the_wrong_structure_is_refused():
    with pytest.raises(ValueError, match="expected a 3-tuple"):
        load_tutorial_pickle(gzip.compress(pickle.dumps((1, 2))), "p")
    bad = list(_tutorial_structure())
    bad[1] = (bad[1][0].reshape(-1, 28, 28), bad[1][1])
    with pytest.raises(ValueError, match=r"valid images should be a float array of shape \(n, 784\)"):
        load_tutorial_pickle(gzip.compress(pickle.dumps(tuple(bad))), "p")


def _write_pickle(folder: Path, data: bytes) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    gz = gzip.compress(data)
    (folder / "mnist.pkl.gz").write_bytes(gz)
    return hashlib.md5(gz).hexdigest()


def test_load_mnist_uses_a_verified_pickle_and_rescales_to_pixel_over_255(tmp_path, monkeypatch):
    splits = _tutorial_structure()
    md5 = _write_pickle(tmp_path / "mnist", _py2_style_pickle(splits))
    with pytest.raises(ChecksumMismatchError, match=f"MD5 is {md5}, expected {mnist_module.PICKLE_MD5}"):
        load_mnist(tmp_path, download=False)
    monkeypatch.setattr(mnist_module, "PICKLE_MD5", md5)  # stand-in for the real file's digest
    for attribute, size in (("TRAIN_SIZE", 6), ("VALID_SIZE", 2), ("TEST_SIZE", 3)):
        monkeypatch.setattr(mnist_module, attribute, size)
    loaded = load_mnist(tmp_path, download=False, dtype=np.float64)
    for (images, labels), (stored_images, stored_labels) in zip(loaded, splits):
        pixels = np.rint(stored_images.astype(np.float64) * 256)
        assert images.dtype == np.float64 and labels.dtype == np.int64
        np.testing.assert_array_equal(images, pixels / 255)
        np.testing.assert_array_equal(labels, stored_labels)


def test_load_mnist_refuses_a_code_running_pickle_even_with_a_matching_digest(tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    md5 = _write_pickle(tmp_path / "mnist", pickle.dumps(_RunsCode(marker), protocol=2))
    with pytest.raises(ChecksumMismatchError, match=r"mnist.pkl.gz"):
        load_mnist(tmp_path, download=False)
    monkeypatch.setattr(mnist_module, "PICKLE_MD5", md5)
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        load_mnist(tmp_path, download=False)
    assert not marker.exists()


@pytest.mark.skipif(DATA is None, reason="the MNIST files (../shared/data or TINYNN_DATA) are not here")
def test_complete_idx_files_win_over_a_pickle(tmp_path):
    (tmp_path / "mnist").mkdir()
    for idx_file in (DATA / "mnist").glob("*-ubyte.gz"):
        (tmp_path / "mnist" / idx_file.name).symlink_to(idx_file)
    _write_pickle(tmp_path / "mnist", pickle.dumps(_RunsCode(tmp_path / "pwned")))
    (_, y_train), _, _ = load_mnist(tmp_path, download=False)
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
