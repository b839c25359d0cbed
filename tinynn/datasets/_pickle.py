"""The tutorial's ``mnist.pkl.gz``, unpickled without letting the file run code.

``pickle.load`` calls whatever callable a file names (``os.system``, ``builtins.eval``, ...), so a
pickle from the internet is a program, not data. This unpickler resolves only the names that
rebuilding numpy arrays needs and refuses every other one before anything is called.

The file (deeplearning.net's, copied into pytorch/tutorials' ``_static``) was written by Python 2:
``((x_train, y_train), (x_valid, y_valid), (x_test, y_test))`` with float32 images of shape
(n, 784) and int64 labels of shape (n,); its array bytes are Python 2 ``str`` objects, hence
``encoding="latin-1"``.
"""

from __future__ import annotations

import gzip
import io
import pickle

import numpy as np

try:  # numpy >= 2 keeps the implementation in numpy._core; numpy.core is a deprecated alias
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle that names something other than the numpy pieces an array is rebuilt from."""


def _array_dtype(*args: object) -> np.dtype:
    """``numpy.dtype`` as the pickle calls it, refusing object dtypes (they would hold arbitrary objects)."""
    dtype = np.dtype(*args)  # type: ignore[call-overload]
    if dtype.hasobject:
        raise UnsafePickleError(f"refusing to unpickle an array of dtype {dtype} (it may hold arbitrary objects)")
    return dtype


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """``_codecs.encode`` as Python 3 protocol-2 pickles use it for bytes, limited to that one use."""
    if not isinstance(text, str) or encoding != "latin1":
        raise UnsafePickleError(f"refusing to unpickle _codecs.encode with encoding {encoding!r}")
    return text.encode("latin-1")


# (module, name) -> the object it resolves to. Python 2 and numpy 1 pickles say numpy.core; numpy 2
# says numpy._core. Nothing here can run code: _reconstruct makes an empty ndarray that BUILD then
# fills from raw bytes with ndarray.__setstate__.
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _array_dtype,
    ("_codecs", "encode"): _latin1_bytes,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> object:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to unpickle {module}.{name}: only numpy arrays in tuples are allowed "
                f"(a pickle can run any code it names; this one is not the MNIST data)"
            ) from None

    def persistent_load(self, pid: object) -> object:
        raise UnsafePickleError(f"refusing to unpickle a persistent id ({pid!r})")


def restricted_loads(data: bytes) -> object:
    """Unpickle ``data`` admitting only numpy arrays (numeric dtypes) and plain containers."""
    return _NumpyOnlyUnpickler(io.BytesIO(data), encoding="latin-1").load()


def load_tutorial_pickle(gz_data: bytes, source: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Read the bytes of ``mnist.pkl.gz`` into its three (images (n, 784) float, labels (n,) int) pairs.

    Raises UnsafePickleError for a pickle that names anything but numpy arrays, ValueError when
    the structure is not the tutorial's. ``source`` names the file in messages.
    """
    return check_tutorial_structure(restricted_loads(gzip.decompress(gz_data)), source)


def check_tutorial_structure(obj: object, source: str) -> tuple[tuple[np.ndarray, np.ndarray], ...]:
    """Check ``obj`` is ((x, y), (x, y), (x, y)) with float (n, 784) images and int (n,) labels."""
    splits = ("train", "valid", "test")
    if not isinstance(obj, (tuple, list)) or len(obj) != 3:
        raise ValueError(f"{source}: expected a 3-tuple (train, valid, test), got {type(obj).__name__}"
                         f"{f' of length {len(obj)}' if isinstance(obj, (tuple, list)) else ''}")
    pairs = []
    for split, pair in zip(splits, obj):
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise ValueError(f"{source}: {split} should be an (images, labels) pair, got {type(pair).__name__}")
        images, labels = pair
        if not isinstance(images, np.ndarray) or images.ndim != 2 or images.shape[1] != 784 \
                or images.dtype.kind != "f":
            raise ValueError(f"{source}: {split} images should be a float array of shape (n, 784), got "
                             f"{getattr(images, 'dtype', type(images).__name__)} {getattr(images, 'shape', '')}")
        if not isinstance(labels, np.ndarray) or labels.shape != images.shape[:1] or labels.dtype.kind not in "iu":
            raise ValueError(f"{source}: {split} labels should be an int array of shape ({images.shape[0]},), "
                             f"got {getattr(labels, 'dtype', type(labels).__name__)} {getattr(labels, 'shape', '')}")
        pairs.append((images, labels))
    return tuple(pairs)
