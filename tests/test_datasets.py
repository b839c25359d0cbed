"""tinynn.datasets.load_mnist: the real files, search order, checksums, downloads (IDX and pickle: _formats).

Nothing here reaches the internet: downloads come from tests/_http_server.py on 127.0.0.1, and
the default mirrors are replaced by a closed local port for every test.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import stat
import sys
from pathlib import Path

import numpy as np
import pytest

from tests._http_server import MirrorServer, closed_port_url
from tests.conftest import data_dir
from tinynn.datasets import load_mnist
from tinynn.datasets import mnist as mnist_module
from tinynn.datasets._download import download_file
from tinynn.datasets.idx import IdxFormatError
from tinynn.datasets.mnist import ChecksumMismatchError, DatasetNotFoundError

DATA = data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="the MNIST files (../shared/data or TINYNN_DATA) are not here")
IDX_NAMES = ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
             "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"]
# Label counts 0..9 from shared/data/README.md (the whole 60,000-image training file, and the test file).
MNIST_TRAIN_FILE_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
MNIST_TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path, monkeypatch):
    """No real cache, no TINYNN_DATA, no proxy, and default mirrors that cannot reach anything."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))
    monkeypatch.delenv("TINYNN_DATA", raising=False)
    monkeypatch.delenv("TINYNN_MNIST_MIRRORS", raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(proxy, raising=False)
    closed = closed_port_url()
    monkeypatch.setattr(mnist_module, "DEFAULT_MIRRORS", {"mnist": (closed,), "fashion-mnist": (closed,)})


def _raw_idx(path: Path, offset: int) -> np.ndarray:
    """The reference reader: gunzip and skip the header (16 bytes for images, 8 for labels)."""
    return np.frombuffer(gzip.decompress(path.read_bytes()), dtype=np.uint8, offset=offset)


def _listing(folder: Path) -> list[str]:
    return sorted(os.listdir(folder)) if folder.exists() else []


def _link_real_files(folder: Path, name: str = "mnist") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for filename in IDX_NAMES:
        (folder / filename).symlink_to(DATA / name / filename)


def _write_bad_files(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for filename in IDX_NAMES:
        (folder / filename).write_bytes(b"not the MNIST file")


@pytest.fixture(scope="module")
def mnist_gz():
    if DATA is None:
        pytest.skip("the MNIST files are not here")
    return {filename: (DATA / "mnist" / filename).read_bytes() for filename in IDX_NAMES}


@pytest.fixture(scope="module")
def mnist_float32():
    if DATA is None:
        pytest.skip("the MNIST files are not here")
    return load_mnist(DATA, download=False)


# ---------------------------------------------------------------- the real files


@needs_data
def test_mnist_shapes_dtypes_and_first_labels(mnist_float32):
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = mnist_float32
    assert (x_train.shape, x_valid.shape, x_test.shape) == ((50000, 784), (10000, 784), (10000, 784))
    assert (y_train.shape, y_valid.shape, y_test.shape) == ((50000,), (10000,), (10000,))
    assert {x.dtype for x in (x_train, x_valid, x_test)} == {np.dtype(np.float32)}
    assert {y.dtype for y in (y_train, y_valid, y_test)} == {np.dtype(np.int64)}
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    for x in (x_train, x_valid, x_test):
        assert x.min() == 0.0 and x.max() == 1.0


@needs_data
def test_mnist_class_counts_match_the_published_counts(mnist_float32):
    (_, y_train), (_, y_valid), (_, y_test) = mnist_float32
    train_file_counts = np.bincount(y_train, minlength=10) + np.bincount(y_valid, minlength=10)
    assert train_file_counts.tolist() == MNIST_TRAIN_FILE_COUNTS
    assert np.bincount(y_test, minlength=10).tolist() == MNIST_TEST_COUNTS


@needs_data
def test_train_is_first_50k_valid_is_last_10k_of_the_training_file(mnist_float32):
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = mnist_float32
    pixels = _raw_idx(DATA / "mnist" / "train-images-idx3-ubyte.gz", 16).reshape(60000, 784)
    labels = _raw_idx(DATA / "mnist" / "train-labels-idx1-ubyte.gz", 8)
    expected = pixels.astype(np.float32) / np.float32(255)
    np.testing.assert_array_equal(x_train, expected[:50000])
    np.testing.assert_array_equal(x_valid, expected[50000:])
    np.testing.assert_array_equal(y_train, labels[:50000])
    np.testing.assert_array_equal(y_valid, labels[50000:])
    test_pixels = _raw_idx(DATA / "mnist" / "t10k-images-idx3-ubyte.gz", 16).reshape(10000, 784)
    np.testing.assert_array_equal(x_test, test_pixels.astype(np.float32) / np.float32(255))
    np.testing.assert_array_equal(y_test, _raw_idx(DATA / "mnist" / "t10k-labels-idx1-ubyte.gz", 8))


@needs_data
def test_float64_dtype_gives_float64_images_in_unit_interval(monkeypatch):
    monkeypatch.setenv("TINYNN_DATA", str(DATA))  # also: found through TINYNN_DATA with root=None
    (x_train, y_train), _, (x_test, _) = load_mnist(download=False, dtype=np.float64)
    assert x_train.dtype == np.float64 and x_test.dtype == np.float64 and y_train.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() <= 1.0
    assert x_train[0, 152:156].tolist() == [3 / 255, 18 / 255, 18 / 255, 18 / 255]  # the first 5's top edge


@needs_data
def test_fashion_mnist_has_6000_per_class_in_train_file_and_1000_in_test():
    (x_train, y_train), (x_valid, y_valid), (x_test, y_test) = load_mnist(DATA, name="fashion-mnist",
                                                                          download=False)
    assert (x_train.shape, x_valid.shape, x_test.shape) == ((50000, 784), (10000, 784), (10000, 784))
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    counts = np.bincount(y_train, minlength=10) + np.bincount(y_valid, minlength=10)
    assert counts.tolist() == [6000] * 10
    assert np.bincount(y_test, minlength=10).tolist() == [1000] * 10
    assert y_train[:5].tolist() == _raw_idx(DATA / "fashion-mnist" / "train-labels-idx1-ubyte.gz", 8)[:5].tolist()


# ---------------------------------------------------------------- search order and checksums


@needs_data
def test_root_is_searched_before_TINYNN_DATA_and_the_cache(tmp_path, monkeypatch):
    _link_real_files(tmp_path / "root" / "mnist")
    _write_bad_files(tmp_path / "env" / "mnist")
    _write_bad_files(tmp_path / "xdg-cache" / "tinynn" / "mnist")
    monkeypatch.setenv("TINYNN_DATA", str(tmp_path / "env"))
    (_, y_train), _, _ = load_mnist(tmp_path / "root", download=False)  # the bad copies are never read
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]


@needs_data
def test_TINYNN_DATA_is_searched_before_the_cache(tmp_path, monkeypatch):
    _write_bad_files(tmp_path / "env" / "mnist")
    _link_real_files(tmp_path / "xdg-cache" / "tinynn" / "mnist")
    monkeypatch.setenv("TINYNN_DATA", str(tmp_path / "env"))
    (tmp_path / "root").mkdir()
    with pytest.raises(ChecksumMismatchError, match=str(tmp_path / "env" / "mnist")):
        load_mnist(tmp_path / "root", download=False)
    monkeypatch.delenv("TINYNN_DATA")
    (_, y_train), _, _ = load_mnist(tmp_path / "root", download=False)  # now from the cache
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]


@needs_data
def test_found_file_with_wrong_checksum_is_an_error_naming_file_digests_and_remedy(tmp_path):
    folder = tmp_path / "mnist"
    _link_real_files(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    damaged = bytearray((DATA / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())
    damaged[100] ^= 1
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(bytes(damaged))
    actual = hashlib.sha256(bytes(damaged)).hexdigest()
    expected = mnist_module.SHA256["mnist"]["t10k-labels-idx1-ubyte.gz"]
    with pytest.raises(ChecksumMismatchError) as info:
        load_mnist(tmp_path, download=False, mirrors=closed_port_url())
    message = str(info.value)
    assert str(folder / "t10k-labels-idx1-ubyte.gz") in message
    assert actual in message and expected in message and "Delete it" in message


def test_search_places_are_root_then_TINYNN_DATA_then_XDG_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYNN_DATA", str(tmp_path / "env"))
    places = mnist_module.search_places(tmp_path / "root")
    assert places == [(tmp_path / "root", "root="), (tmp_path / "env", "$TINYNN_DATA"),
                      (tmp_path / "xdg-cache" / "tinynn", "cache")]
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert mnist_module.cache_dir() == tmp_path / "home" / ".cache" / "tinynn"


# ---------------------------------------------------------------- downloads from a local mirror


def _sha256_of_files(folder: Path) -> dict[str, str]:
    return {path.name: hashlib.sha256(path.read_bytes()).hexdigest() for path in folder.iterdir()}


def test_download_from_a_good_mirror_leaves_exactly_the_four_verified_files(tmp_path, mnist_gz):
    with MirrorServer(mnist_gz) as mirror:
        (_, y_train), _, (x_test, _) = load_mnist(tmp_path / "root", mirrors=[mirror.base_url])
    assert sorted(mirror.requested) == IDX_NAMES
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9] and x_test.shape == (10000, 784)
    assert _sha256_of_files(tmp_path / "root" / "mnist") == mnist_module.SHA256["mnist"]
    assert _listing(tmp_path / "xdg-cache") == []
    umask = os.umask(0o022)
    os.umask(umask)
    for path in (tmp_path / "root" / "mnist").iterdir():  # ordinary permissions, not a temp file's 0600
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    # Found next time: no mirror is reachable and none is needed.
    (_, y_again), _, _ = load_mnist(tmp_path / "root", mirrors=closed_port_url())
    np.testing.assert_array_equal(y_again, y_train)


def test_a_404_mirror_is_skipped_for_the_next_one(tmp_path, mnist_gz, capsys):
    with MirrorServer(mnist_gz, mode="404") as missing, MirrorServer(mnist_gz) as good:
        load_mnist(tmp_path, mirrors=f"{missing.base_url}, {good.base_url}")
    assert sorted(missing.requested) == IDX_NAMES and sorted(good.requested) == IDX_NAMES
    assert _sha256_of_files(tmp_path / "mnist") == mnist_module.SHA256["mnist"]
    stderr = capsys.readouterr().err
    assert "HTTP 404" in stderr and "100%" in stderr  # the failure is reported, the progress bar completes


def test_a_corrupted_file_is_refused_and_the_next_mirror_used(tmp_path, mnist_gz, capsys):
    with MirrorServer(mnist_gz, mode="corrupt") as corrupt, MirrorServer(mnist_gz) as good:
        load_mnist(tmp_path, mirrors=[corrupt.base_url, good.base_url])
    assert sorted(corrupt.requested) == IDX_NAMES and sorted(good.requested) == IDX_NAMES
    assert _sha256_of_files(tmp_path / "mnist") == mnist_module.SHA256["mnist"]
    assert "SHA-256 mismatch" in capsys.readouterr().err


def test_a_dropped_connection_leaves_nothing_behind_and_the_next_mirror_works(tmp_path, mnist_gz):
    with MirrorServer(mnist_gz, mode="drop") as dropping:
        with pytest.raises(DatasetNotFoundError, match="failed on every mirror") as info:
            load_mnist(tmp_path, mirrors=[dropping.base_url])
    assert dropping.base_url in str(info.value)
    assert _listing(tmp_path / "mnist") == []  # no partial file, no temp file
    with MirrorServer(mnist_gz, mode="drop") as dropping, MirrorServer(mnist_gz) as good:
        (_, y_train), _, _ = load_mnist(tmp_path, mirrors=[dropping.base_url, good.base_url])
    assert sorted(dropping.requested) == IDX_NAMES
    assert y_train[:5].tolist() == [5, 0, 4, 1, 9]
    assert _sha256_of_files(tmp_path / "mnist") == mnist_module.SHA256["mnist"]


def test_interrupted_download_removes_its_temp_file(tmp_path, mnist_gz):
    class InterruptOnProgress(io.StringIO):
        def write(self, text: str) -> int:
            if text.startswith("\r"):  # the first progress-bar redraw, mid-transfer
                raise KeyboardInterrupt
            return super().write(text)

    with MirrorServer(mnist_gz) as good, pytest.raises(KeyboardInterrupt):
        download_file([good.base_url], "train-images-idx3-ubyte.gz", tmp_path,
                      mnist_module.SHA256["mnist"]["train-images-idx3-ubyte.gz"], progress=InterruptOnProgress())
    assert _listing(tmp_path) == []


def test_downloads_go_to_the_cache_when_root_is_not_writable(tmp_path, mnist_gz):
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("root cannot hold a folder here")
    with MirrorServer(mnist_gz) as good:
        load_mnist(not_a_folder, mirrors=[good.base_url])
    assert _sha256_of_files(tmp_path / "xdg-cache" / "tinynn" / "mnist") == mnist_module.SHA256["mnist"]


def test_without_root_downloads_go_to_the_cache_and_env_mirrors_are_used(tmp_path, mnist_gz, monkeypatch):
    with MirrorServer(mnist_gz, mode="404") as missing, MirrorServer(mnist_gz) as good:
        monkeypatch.setenv("TINYNN_MNIST_MIRRORS", f"{missing.base_url},{good.base_url}")
        load_mnist()
    assert sorted(missing.requested) == IDX_NAMES
    assert _listing(tmp_path / "xdg-cache" / "tinynn" / "mnist") == IDX_NAMES


def test_offline_error_lists_places_mirrors_and_how_to_provide_the_files(tmp_path, monkeypatch):
    monkeypatch.setenv("TINYNN_DATA", str(tmp_path / "env"))
    closed = closed_port_url()
    with pytest.raises(DatasetNotFoundError) as info:
        load_mnist(tmp_path / "root", mirrors=[closed])
    message = str(info.value)
    for place in (tmp_path / "root" / "mnist", tmp_path / "env" / "mnist", tmp_path / "xdg-cache" / "tinynn" / "mnist"):
        assert str(place) in message
    assert closed + "train-images-idx3-ubyte.gz" in message and "ConnectionError" in message
    assert "TINYNN_DATA=<dir>" in message and "root=<dir>" in message and "mnist.pkl.gz" in message
    assert _listing(tmp_path / "root" / "mnist") == []


def test_download_false_raises_without_contacting_any_mirror(tmp_path, mnist_gz):
    with MirrorServer(mnist_gz) as good:
        with pytest.raises(DatasetNotFoundError, match="download=False"):
            load_mnist(tmp_path, download=False, mirrors=[good.base_url])
    assert good.requested == []
    assert not (tmp_path / "mnist").exists()


def test_missing_requests_is_reported_with_the_install_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "requests", None)  # makes `import requests` fail
    with pytest.raises(DatasetNotFoundError, match="pip install requests"):
        load_mnist(tmp_path, mirrors=closed_port_url())


def test_mirrors_argument_beats_env_beats_defaults_and_name_is_substituted(monkeypatch):
    assert mnist_module.resolve_mirrors(None, "mnist") == list(mnist_module.DEFAULT_MIRRORS["mnist"])
    monkeypatch.setenv("TINYNN_MNIST_MIRRORS", " http://a/{name}/ ,, http://b/")
    assert mnist_module.resolve_mirrors(None, "fashion-mnist") == ["http://a/fashion-mnist/", "http://b/"]
    assert mnist_module.resolve_mirrors(["http://c/"], "mnist") == ["http://c/"]


def test_default_mirrors_in_the_code_are_http_urls_for_both_data_sets(monkeypatch):
    monkeypatch.undo()  # the autouse fixture replaced them; look at the real ones (nothing is fetched)
    for name in ("mnist", "fashion-mnist"):
        assert mnist_module.DEFAULT_MIRRORS[name]
        assert all(base.startswith(("https://", "http://")) for base in mnist_module.DEFAULT_MIRRORS[name])
    assert "ossci-datasets.s3.amazonaws.com" in mnist_module.DEFAULT_MIRRORS["mnist"][0]


# ---------------------------------------------------------------- malformed files through load_mnist


@needs_data
def test_idx_error_through_load_mnist_names_the_file(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    _link_real_files(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    swapped = (DATA / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes()  # images where labels belong
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(swapped)
    digests = dict(mnist_module.SHA256["mnist"])
    digests["t10k-labels-idx1-ubyte.gz"] = hashlib.sha256(swapped).hexdigest()  # pass the checksum on purpose
    monkeypatch.setitem(mnist_module.SHA256, "mnist", digests)
    with pytest.raises(IdxFormatError, match=r"t10k-labels-idx1-ubyte.gz: magic number 2051 .*image file"):
        load_mnist(tmp_path, download=False)


# ---------------------------------------------------------------- bad arguments


def test_bad_arguments_raise_clear_errors(tmp_path):
    with pytest.raises(ValueError, match=r"name must be one of \['fashion-mnist', 'mnist'\], got 'cifar10'"):
        load_mnist(tmp_path, name="cifar10")
    with pytest.raises(TypeError, match="dtype must be a floating-point dtype, got int64"):
        load_mnist(tmp_path, dtype=np.int64)
    with pytest.raises(TypeError, match="mirrors must be a string or a sequence of strings"):
        load_mnist(tmp_path, mirrors=[1])
    assert _listing(tmp_path) == []

