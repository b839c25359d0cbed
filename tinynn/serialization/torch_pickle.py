"""Read what ``torch.save`` writes for a state_dict (a model's or an optimizer's), without torch and
without letting the file run code.

Since torch 1.6 a checkpoint is a zip archive, every entry under one folder (``<name>/``):

* ``data.pkl``: a pickle of the saved object, in which each tensor is the call
  ``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks)``;
* ``data/<key>``: the raw bytes of each storage (the flat memory tensors are views of), which the
  pickle names by a persistent id ``("storage", torch.FloatStorage, key, location, numel)``;
* ``byteorder`` (``little`` or ``big``), ``version`` and a few other small records.

``pickle.load`` would import and call whatever the pickle names (``os.system``, ``builtins.eval``,
a whole ``torch.nn.Module``'s class), so a checkpoint from the internet is a program. This reader
resolves only the names on the allow-list below, each to a stand-in written here that builds a
NumPy array, and refuses every other name before anything is called. Each array is read with
``np.frombuffer`` and ``as_strided`` after its offset, shape and strides are checked against the
storage's size, then copied into an array it owns. float16 is kept; bfloat16 is widened to float32
(exactly: bfloat16 is float32's top 16 bits) with a warning. The older non-zip format (torch < 1.6,
or ``_use_new_zipfile_serialization=False``) is refused with an error saying how to re-save.
"""

from __future__ import annotations

import _compat_pickle
import io
import pickle
import warnings
import zipfile
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

from tinynn.serialization.errors import SerializationError, UnsafeCheckpointError
from tinynn.serialization.safetensors import bfloat16_to_float32

ZIP_MAGIC = b"PK\x03\x04"
# The legacy format starts with a pickled magic number, 0x1950a86a20f9469cfc6c.
LEGACY_MAGIC = b"\x80\x02\x8a\nl\xfc\x9cF\xf9 j\xa8P\x19"


@dataclass(frozen=True)
class _TorchDtype:
    """Stand-in for a torch dtype or typed storage class: the NumPy dtype of its elements (bfloat16:
    its raw 16 bits as uint16). Not callable, so a pickle cannot construct anything with it."""

    name: str
    numpy: np.dtype
    bfloat16: bool = False


_BF16 = np.dtype("u2")
_ELEMENTS = {  # torch's element types: (storage class name, dtype name, NumPy dtype)
    ("DoubleStorage", "float64", np.dtype("f8")), ("FloatStorage", "float32", np.dtype("f4")),
    ("HalfStorage", "float16", np.dtype("f2")), ("BFloat16Storage", "bfloat16", _BF16),
    ("LongStorage", "int64", np.dtype("i8")), ("IntStorage", "int32", np.dtype("i4")),
    ("ShortStorage", "int16", np.dtype("i2")), ("CharStorage", "int8", np.dtype("i1")),
    ("ByteStorage", "uint8", np.dtype("u1")), ("BoolStorage", "bool", np.dtype("?")),
    ("ComplexFloatStorage", "complex64", np.dtype("c8")), ("ComplexDoubleStorage", "complex128", np.dtype("c16")),
    (None, "uint16", np.dtype("u2")), (None, "uint32", np.dtype("u4")), (None, "uint64", np.dtype("u8")),
}
_UNTYPED = _TorchDtype("UntypedStorage", np.dtype("u1"))


@dataclass(frozen=True)
class _Storage:
    """One storage read from ``data/<key>``: its elements as a read-only 1-d array."""

    key: str
    kind: _TorchDtype
    elements: np.ndarray


class _Reader:
    """The state of one load: the archive, its folder, its byte order, the storages read so far."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str, source: str) -> None:
        self.archive, self.prefix, self.source = archive, prefix, source
        self.byteorder = "<" if byteorder == "little" else ">"
        self.storages: dict[str, _Storage] = {}
        self.widened = 0

    def storage(self, pid: Any) -> _Storage:
        """``persistent_load``: ``("storage", storage type, key, location, numel)`` -> that storage.
        The location (``cpu``, ``cuda:0``...) is ignored: everything is loaded into host memory."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _TorchDtype)
                and isinstance(pid[2], str) and _is_count(pid[4])):
            raise SerializationError(f"{self.source}: unexpected persistent id {pid!r} in data.pkl")
        _, kind, key, _, numel = pid
        if key not in self.storages:
            name = f"{self.prefix}data/{key}"
            try:
                info = self.archive.getinfo(name)
            except KeyError:
                raise SerializationError(f"{self.source}: the archive has no record {name!r}, which data.pkl "
                                         "refers to (the file is incomplete)") from None
            expected = numel * kind.numpy.itemsize
            if info.file_size != expected:  # checked before reading: a crafted record could inflate to any size
                raise SerializationError(f"{self.source}: record {name!r} holds {info.file_size} bytes, its storage "
                                         f"of {numel} {kind.name} elements needs {expected}")
            elements = np.frombuffer(self.archive.read(info), dtype=kind.numpy.newbyteorder(self.byteorder))
            self.storages[key] = _Storage(key, kind, elements)
        return self.storages[key]

    def rebuild_tensor(self, storage: Any, storage_offset: Any, size: Any, stride: Any, *rest: Any) -> np.ndarray:
        """``torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
        backward_hooks, metadata=None)``: the tensor as an owned C-contiguous array."""
        return self.rebuild_tensor_v3(storage, storage_offset, size, stride, *rest[:2], storage.kind
                                      if isinstance(storage, _Storage) else None)

    def rebuild_tensor_v3(self, storage: Any, storage_offset: Any, size: Any, stride: Any, requires_grad: Any,
                          backward_hooks: Any, dtype: Any, metadata: Any = None) -> np.ndarray:
        """``_rebuild_tensor_v3``: as v2, with the dtype given apart (the storage is then untyped bytes)."""
        if not isinstance(storage, _Storage) or not isinstance(dtype, _TorchDtype):
            raise SerializationError(f"{self.source}: a tensor in data.pkl is not built from a storage and a dtype")
        elements = storage.elements
        if storage.kind is not dtype:  # untyped bytes viewed as dtype's elements
            if elements.nbytes % dtype.numpy.itemsize:
                raise SerializationError(f"{self.source}: storage {storage.key} holds {elements.nbytes} bytes, "
                                         f"not a whole number of {dtype.name} elements")
            elements = elements.view(dtype.numpy.newbyteorder(self.byteorder))
        array = _strided_copy(elements, storage_offset, size, stride, f"{self.source}: storage {storage.key}")
        if dtype.bfloat16:
            self.widened += 1
            array = bfloat16_to_float32(array)
        return array


def _strided_copy(elements: np.ndarray, offset: Any, size: Any, stride: Any, where: str) -> np.ndarray:
    """``elements[offset:]`` seen with ``size`` and ``stride`` (in elements, as torch counts them),
    copied out. Every index the view can reach is checked to lie inside ``elements`` first:
    ``as_strided`` itself would read whatever memory the numbers point at."""
    if not (_is_count(offset) and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(_is_count(n) for n in size + stride)):
        raise SerializationError(f"{where}: invalid tensor geometry (offset {offset!r}, size {size!r}, "
                                 f"stride {stride!r})")
    native = elements.dtype.newbyteorder("=")
    if 0 in size:
        return np.empty(size, dtype=native)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= elements.size:
        raise SerializationError(f"{where}: a tensor of size {size}, stride {stride} at offset {offset} reaches "
                                 f"element {last}, past the storage's {elements.size}")
    itemsize = elements.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(elements[offset:], shape=size, strides=[s * itemsize for s in stride],
                                           writeable=False)
    return np.array(view, dtype=native, order="C", copy=True)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> Any:
    """``torch._utils._rebuild_parameter`` (and ``..._with_state``): a Parameter is its array here."""
    return data


def _allowed_globals(reader: _Reader) -> dict[tuple[str, str], Any]:
    """The allow-list: every global a state_dict checkpoint names, and what each becomes."""
    allowed: dict[tuple[str, str], Any] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): reader.rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): reader.rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "UntypedStorage"): _UNTYPED,
        ("torch", "UntypedStorage"): _UNTYPED,
    }
    for storage_name, dtype_name, numpy_dtype in _ELEMENTS:
        kind = _TorchDtype(dtype_name, numpy_dtype, bfloat16=dtype_name == "bfloat16")
        allowed["torch", dtype_name] = kind
        if storage_name is not None:
            allowed["torch", storage_name] = kind
    return allowed


def _python3_name(module: str, name: str) -> tuple[str, str] | None:
    """Python 3's name of a global a protocol-2 pickle names the Python 2 way (``__builtin__.eval``,
    ``commands.Popen``), as pickle's ``fix_imports`` maps it; None when it is the same."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[module, name]
    if module in _compat_pickle.IMPORT_MAPPING:
        return _compat_pickle.IMPORT_MAPPING[module], name
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, reader: _Reader) -> None:
        super().__init__(io.BytesIO(data))
        self.reader = reader
        self.allowed = _allowed_globals(reader)

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.allowed[module, name]
        except KeyError:
            python3_name = _python3_name(module, name)  # protocol 2 names builtins.eval __builtin__.eval
            also = f" ({'.'.join(python3_name)})" if python3_name else ""
            raise UnsafeCheckpointError(
                f"{self.reader.source}: refusing to load the global {module}.{name}{also}: only tensors in dicts, "
                "lists and numbers are read from a torch checkpoint (a pickle can run any code it names; nothing "
                "was run). Save a state_dict, torch.save(model.state_dict(), path), not a whole model"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        return self.reader.storage(pid)


def load_torch_zip(data: bytes, source: str) -> Any:
    """The object ``torch.save`` wrote into the zip archive ``data``, with NumPy arrays for tensors."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise SerializationError(f"{source}: a corrupt or truncated zip archive ({error})") from None
    pickles = [name for name in names if name.endswith("data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise SerializationError(f"{source}: a zip archive but not a torch checkpoint (no <name>/data.pkl in it)")
    prefix = pickles[0][: -len("data.pkl")]
    try:
        byteorder = archive.read(prefix + "byteorder").decode() if prefix + "byteorder" in names else "little"
        if byteorder not in ("little", "big"):
            raise SerializationError(f"{source}: unknown byte order {byteorder!r}")
        reader = _Reader(archive, prefix, byteorder, source)
        result = _RestrictedUnpickler(archive.read(pickles[0]), reader).load()
    except SerializationError:
        raise
    except (zipfile.BadZipFile, EOFError) as error:
        raise SerializationError(f"{source}: a corrupt or truncated torch checkpoint ({error})") from None
    except Exception as error:  # a malformed pickle: any of pickle's many errors, or a stand-in called wrongly
        raise SerializationError(f"{source}: data.pkl is not a pickle of a state_dict "
                                 f"({type(error).__name__}: {error})") from None
    _check_plain(result, source, "the checkpoint")
    if reader.widened:
        warnings.warn(f"{source}: {reader.widened} bfloat16 tensor(s) widened to float32 (NumPy has no bfloat16)",
                      UserWarning, stacklevel=3)
    return result


def _check_plain(value: Any, source: str, where: str) -> None:
    """Refuse anything in the result but containers, numbers, strings and arrays (say a storage or
    a stand-in function left bare by a crafted pickle)."""
    if isinstance(value, dict):
        for key, item in value.items():
            _check_plain(key, source, f"a key of {where}")
            _check_plain(item, source, f"{where}[{key!r}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, source, f"{where}[{index}]")
    elif not isinstance(value, (np.ndarray, str, bytes, int, float, complex, type(None))):
        raise SerializationError(f"{source}: {where} is a {type(value).__name__}, not a tensor, number, "
                                 "string or container")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
