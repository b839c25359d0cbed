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
resolves only the names on the allow-list below, each to a frozen stand-in made for this one load,
and refuses every other name before anything is called; it refuses pickle's BUILD opcode (which
sets attributes) but for the ``_metadata`` torch attaches to a state_dict, so nothing outside the
load can change. Each array is read with ``np.frombuffer`` and ``as_strided`` after its offset,
shape and strides are checked against the storage's size, then copied into an array it owns, and
all a load allocates is capped (``LOAD_FACTOR``: a stride of 0 lets a few bytes stand for a huge
array). float16 is kept; bfloat16 is widened to float32 (exactly: it is float32's top 16 bits)
with a warning; dtypes NumPy lacks (float8, complex32, quantized) are refused by name. The older
non-zip format (torch < 1.6, or ``_use_new_zipfile_serialization=False``) is refused with an error
saying how to re-save.
"""

from __future__ import annotations

import _compat_pickle
import io
import math
import pickle
import pickletools
import warnings
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from tinynn.serialization.errors import SerializationError, UnsafeCheckpointError
from tinynn.serialization.plain import check_plain, short_repr
from tinynn.serialization.safetensors import bfloat16_to_float32

ZIP_MAGIC = b"PK\x03\x04"
# The legacy format starts with a pickle of this number, in whichever protocol it was saved with.
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C

# What one load may allocate, storages read plus arrays built: LOAD_FACTOR times the file's size
# plus LOAD_SLACK_BYTES. A real checkpoint allocates about twice its size (its storages, stored
# uncompressed, are its bulk; each tensor copies out at most its storage), a little more with tied
# weights or several views of one storage, hence 4. The slack admits expanded tensors (stride 0)
# and broadcast buffers of any realistic size in a small file. Beyond that a file is refused: a
# 1 KB file with stride 0 could otherwise ask for terabytes.
LOAD_FACTOR = 4
LOAD_SLACK_BYTES = 64 * 2**20

# torch dtypes (and storage classes) with no NumPy type: refused by name, not as unknown globals.
UNSUPPORTED_TORCH_DTYPES = frozenset({
    "complex32", "float4_e2m1fn_x2", "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
    "float8_e8m0fnu", "qint8", "qint32", "quint8", "quint4x2", "quint2x4", "bits1x8", "bits2x4", "bits4x2",
    "bits8", "bits16", *(f"{kind}{bits}" for kind in ("int", "uint") for bits in range(1, 8)),
    "QInt8Storage", "QInt32Storage", "QUInt8Storage", "QUInt4x2Storage", "QUInt2x4Storage",
})

@dataclass(frozen=True, slots=True)
class _TorchDtype:
    """Stand-in for a torch dtype or typed storage class: the NumPy dtype of its elements (bfloat16:
    its raw 16 bits as uint16). Not callable, so a pickle cannot construct anything with it."""

    name: str
    numpy: np.dtype
    bfloat16: bool = False


@dataclass(frozen=True, slots=True)
class _StandIn:
    """Stand-in for a function the pickle may call (``torch._utils._rebuild_tensor_v2``...)."""

    name: str
    function: Callable[..., Any]

    def __call__(self, *args: Any) -> Any:
        return self.function(*args)


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


@dataclass(frozen=True, slots=True)
class _Storage:
    """One storage read from ``data/<key>``: its elements as a read-only 1-d array."""

    key: str
    kind: _TorchDtype
    elements: np.ndarray


class _Reader:
    """The state of one load: the archive, its folder, its byte order, the storages read so far and
    the bytes still allowed (see ``LOAD_FACTOR``)."""

    def __init__(self, archive: zipfile.ZipFile, prefix: str, byteorder: str, source: str, file_size: int) -> None:
        self.archive, self.prefix, self.source = archive, prefix, source
        self.byteorder = "<" if byteorder == "little" else ">"
        self.storages: dict[str, _Storage] = {}
        self.widened = 0
        self.file_size, self.allowed_bytes = file_size, LOAD_FACTOR * file_size + LOAD_SLACK_BYTES

    def allocate(self, nbytes: int, what: str) -> None:
        """Count ``nbytes`` against the load's allowance before allocating them."""
        if nbytes > self.allowed_bytes:
            raise SerializationError(
                f"{self.source}: {what} would need {nbytes} bytes, more than this {self.file_size}-byte file may "
                f"expand to ({self.allowed_bytes} bytes left of {LOAD_FACTOR} x its size + "
                f"{LOAD_SLACK_BYTES // 2**20} MiB); a small file that unpacks into huge arrays is refused")
        self.allowed_bytes -= nbytes

    def storage(self, pid: Any) -> _Storage:
        """``persistent_load``: ``("storage", storage type, key, location, numel)`` -> that storage.
        The location (``cpu``, ``cuda:0``...) is ignored: everything is loaded into host memory."""
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage" and isinstance(pid[1], _TorchDtype)
                and isinstance(pid[2], str) and _is_count(pid[4])):
            raise SerializationError(f"{self.source}: unexpected persistent id {short_repr(pid)} in data.pkl")
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
            self.allocate(expected, f"record {name!r}")  # a compressed record can be far larger than the file
            try:
                raw = self.archive.read(info)
            except (zipfile.BadZipFile, EOFError, OSError) as error:  # a bad CRC, a record cut short
                raise SerializationError(f"{self.source}: record {name!r} is corrupt ({error})") from None
            elements = np.frombuffer(raw, dtype=kind.numpy.newbyteorder(self.byteorder))
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
        where = f"{self.source}: storage {storage.key}"
        _check_geometry(elements, storage_offset, size, stride, where)
        itemsize = 4 if dtype.bfloat16 else elements.dtype.itemsize  # bfloat16 comes out as float32
        self.allocate(math.prod(size) * itemsize, f"storage {storage.key}: a tensor of size {short_repr(size)}, "
                                                  f"stride {short_repr(stride)}")
        array = _strided_copy(elements, storage_offset, size, stride)
        if dtype.bfloat16:
            self.widened += 1
            array = bfloat16_to_float32(array)
        return array


def _check_geometry(elements: np.ndarray, offset: Any, size: Any, stride: Any, where: str) -> None:
    """Check that every index ``elements[offset:]`` seen with ``size`` and ``stride`` can reach lies
    inside ``elements``: ``as_strided`` itself would read whatever memory the numbers point at."""
    if not (_is_count(offset) and isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(_is_count(n) for n in size + stride)):
        raise SerializationError(f"{where}: invalid tensor geometry (offset {short_repr(offset)}, size "
                                 f"{short_repr(size)}, stride {short_repr(stride)})")
    if 0 in size:
        return
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= elements.size:
        raise SerializationError(f"{where}: a tensor of size {short_repr(size)}, stride {short_repr(stride)} at "
                                 f"offset {offset} reaches element {last}, past the storage's {elements.size}")


def _strided_copy(elements: np.ndarray, offset: int, size: tuple, stride: tuple) -> np.ndarray:
    """``elements[offset:]`` seen with ``size`` and ``stride`` (in elements, as torch counts them),
    copied out in native byte order; the geometry is checked first by ``_check_geometry``."""
    native = elements.dtype.newbyteorder("=")
    if 0 in size:
        return np.empty(size, dtype=native)
    itemsize = elements.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(elements[offset:], shape=size, strides=[s * itemsize for s in stride],
                                           writeable=False)
    return np.array(view, dtype=native, order="C", copy=True)


def _rebuild_parameter(data: Any, requires_grad: Any, backward_hooks: Any, state: Any = None) -> Any:
    """``torch._utils._rebuild_parameter`` (and ``..._with_state``): a Parameter is its array here."""
    return data


def _complex(real: Any, imag: Any = 0.0) -> complex:
    """``builtins.complex(real, imag)``, which is how a pickle holds a Python complex number; from
    two real numbers only (``complex`` would also parse a string)."""
    if not all(isinstance(part, (int, float)) for part in (real, imag)):
        raise TypeError(f"complex() of {short_repr(real)}, {short_repr(imag)}: a complex number needs two reals")
    return complex(real, imag)


def _allowed_globals(reader: _Reader) -> dict[tuple[str, str], Any]:
    """The allow-list: every global a state_dict checkpoint names, and the stand-in made for it for
    this one load (so nothing a pickle reaches is shared with another load)."""
    functions = {
        ("torch._utils", "_rebuild_tensor_v2"): reader.rebuild_tensor,
        ("torch._utils", "_rebuild_tensor_v3"): reader.rebuild_tensor_v3,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("builtins", "complex"): _complex,
    }
    allowed: dict[tuple[str, str], Any] = {key: _StandIn(".".join(key), call) for key, call in functions.items()}
    allowed["collections", "OrderedDict"] = OrderedDict  # a builtin type: its attributes cannot be set
    allowed["torch.storage", "UntypedStorage"] = allowed["torch", "UntypedStorage"] = _TorchDtype(
        "UntypedStorage", np.dtype("u1"))
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


class _RestrictedUnpickler(pickle._Unpickler):
    """pickle's pure-Python unpickler, restricted. Not the C one: only here can an opcode (BUILD) be
    overridden, and its memo is a dict, where the C memo is an array that a 10-byte pickle storing
    at index 2**31 makes 32 GiB long."""

    def __init__(self, data: bytes, reader: _Reader) -> None:
        super().__init__(io.BytesIO(data))
        self.reader = reader
        self.allowed = _allowed_globals(reader)
        self.named: dict[int, str] = {}  # id of a stand-in -> the name the pickle gave it, for errors

    def find_class(self, module: str, name: str) -> Any:
        python3_name = _python3_name(module, name)  # protocol 2 names builtins.eval __builtin__.eval
        for key in ((module, name), python3_name):
            if key in self.allowed:
                self.named[id(self.allowed[key])] = f"{module}.{name}"
                return self.allowed[key]
        if module == "torch" and name in UNSUPPORTED_TORCH_DTYPES:
            raise SerializationError(
                f"{self.reader.source}: a tensor of the unsupported dtype torch.{name}, which has no NumPy type "
                "(nothing was run); convert it in torch first (tensor.float()) and save it again")
        also = f" ({'.'.join(python3_name)})" if python3_name else ""
        raise UnsafeCheckpointError(
            f"{self.reader.source}: refusing to load the global {module}.{name}{also}: only tensors in dicts, "
            "lists and numbers are read from a torch checkpoint (a pickle can run any code it names; nothing "
            "was run). Save a state_dict, torch.save(model.state_dict(), path), not a whole model")

    def persistent_load(self, pid: Any) -> Any:
        return self.reader.storage(pid)

    def load_build(self) -> None:
        """BUILD: ``stack[-2]`` takes the state ``stack[-1]``. Only torch's own use is allowed, the
        ``_metadata`` (each module's version) ``Module.state_dict`` attaches to its OrderedDict;
        anywhere else it would write into a stand-in's, a function's or a storage's attributes."""
        state, target = self.stack[-1], self.stack[-2]
        if type(target) is OrderedDict and type(state) is dict and set(state) == {"_metadata"}:
            self.stack.pop()
            target._metadata = state["_metadata"]
            return
        what = (f"the global {self.named[id(target)]}" if id(target) in self.named
                else f"an object of type {type(target).__name__}")
        raise UnsafeCheckpointError(
            f"{self.reader.source}: refusing to set the state of {what} (pickle's BUILD opcode, with "
            f"{short_repr(state)}): a state_dict's pickle sets nothing but an OrderedDict's _metadata; nothing "
            "was changed")

    dispatch = MappingProxyType({**pickle._Unpickler.dispatch, pickle.BUILD[0]: load_build})  # opcode -> method


def is_legacy_torch_file(data: bytes) -> bool:
    """True when ``data`` starts with the pickled ``LEGACY_MAGIC_NUMBER``, in any pickle protocol:
    an optional PROTO and FRAME, then the number (LONG1 from protocol 2 on, a text LONG in 0 and 1)."""
    try:  # genops only decodes opcodes, it never builds or calls anything
        for opcode, argument, _ in pickletools.genops(io.BytesIO(data[:64])):
            if opcode.name not in ("PROTO", "FRAME"):
                return argument == LEGACY_MAGIC_NUMBER and opcode.name in ("LONG1", "LONG4", "LONG", "INT")
    except ValueError:  # not a pickle at all
        return False
    return False


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
        pickled = archive.read(pickles[0])
    except (zipfile.BadZipFile, EOFError, OSError, UnicodeDecodeError) as error:
        raise SerializationError(f"{source}: a corrupt or truncated torch checkpoint ({error})") from None
    if byteorder not in ("little", "big"):
        raise SerializationError(f"{source}: unknown byte order {short_repr(byteorder)}")
    reader = _Reader(archive, prefix, byteorder, source, len(data))
    try:
        result = _RestrictedUnpickler(pickled, reader).load()
    except SerializationError:
        raise
    except EOFError:
        raise SerializationError(f"{source}: data.pkl is not a pickle of a state_dict (it ends before pickle's "
                                 "STOP opcode: truncated)") from None
    except Exception as error:  # a malformed pickle: any of pickle's many errors, or a stand-in called wrongly
        raise SerializationError(f"{source}: data.pkl is not a pickle of a state_dict "
                                 f"({type(error).__name__}: {short_repr(str(error))})") from None
    check_plain(result, source)
    if reader.widened:
        warnings.warn(f"{source}: {reader.widened} bfloat16 tensor(s) widened to float32 (NumPy has no bfloat16)",
                      UserWarning, stacklevel=3)
    return result


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
