"""A reader and writer of the safetensors format (https://github.com/huggingface/safetensors), in NumPy.

The whole format, as documented there:

* 8 bytes: ``N``, the length of the header, an unsigned little-endian 64-bit integer;
* ``N`` bytes: the header, a UTF-8 JSON object. Each tensor has an entry
  ``"name": {"dtype": "F32", "shape": [2, 3], "data_offsets": [begin, end]}``, and the optional
  entry ``"__metadata__"`` maps strings to strings. Writers pad the header with spaces so that the
  data starts on an 8-byte boundary;
* the data: each tensor's bytes, little-endian and C-contiguous (row-major), at
  ``[begin, end)`` counted from the first byte after the header. The tensors tile the data exactly:
  no gaps, no overlaps, nothing after the last one.

There is no code in such a file, only numbers and JSON, which is why tinynn saves in it. A file
written here loads with ``safetensors.torch.load_file`` and the other way round.
"""

from __future__ import annotations

import json
import struct
import warnings
from collections.abc import Iterator, Mapping
from typing import BinaryIO

import numpy as np

from tinynn.serialization.errors import SerializationError

# safetensors' dtype names and NumPy's little-endian equivalents. BF16 has no NumPy dtype: its
# 16 bits are the top half of a float32, read as uint16 and widened by ``bfloat16_to_float32``.
DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
NAME_OF_DTYPE = {dtype: name for name, dtype in DTYPES.items() if name != "BF16"}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library refuses larger headers too
ALIGNMENT = 8


def dtype_name(array: np.ndarray) -> str:
    """safetensors' name for ``array``'s dtype (byte order ignored: the bytes are written little-endian)."""
    name = NAME_OF_DTYPE.get(array.dtype.newbyteorder("<"))
    if name is None:
        raise TypeError(f"cannot save an array of dtype {array.dtype} in safetensors "
                        f"(supported: {', '.join(str(dtype) for dtype in NAME_OF_DTYPE)})")
    return name


def bfloat16_to_float32(bits: np.ndarray) -> np.ndarray:
    """bfloat16 values (their raw uint16 bits) as float32, exactly: bfloat16 is float32's top 16 bits."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def write(file: BinaryIO, tensors: Mapping[str, np.ndarray], metadata: Mapping[str, str] | None = None) -> None:
    """Write ``tensors`` (name -> array) and ``metadata`` (str -> str) to ``file`` in the safetensors format.

    Tensors are laid out in the mapping's order; each is written on its own, so nothing is copied
    whole in memory.
    """
    header: dict[str, object] = {}
    if metadata:
        if not all(isinstance(key, str) and isinstance(value, str) for key, value in metadata.items()):
            raise TypeError("safetensors metadata must map str to str")
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, array in tensors.items():
        if name == "__metadata__":
            raise ValueError("'__metadata__' is reserved by the safetensors format and cannot name a tensor")
        size = array.size * array.dtype.itemsize
        header[name] = {"dtype": dtype_name(array), "shape": list(array.shape), "data_offsets": [offset, offset + size]}
        offset += size
    text = json.dumps(header, separators=(",", ":"), allow_nan=False).encode("utf-8")
    text += b" " * (-(8 + len(text)) % ALIGNMENT)
    file.write(struct.pack("<Q", len(text)))
    file.write(text)
    for array in tensors.values():
        write_tensor(file, array)


def write_tensor(file: BinaryIO, array: np.ndarray) -> None:
    """One tensor's bytes: little-endian, C order."""
    file.write(np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes())


def read(data: bytes | memoryview, source: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Parse a whole safetensors file: ``({name: array}, metadata)``, in the order of the data.

    Every array is a fresh, writable copy in native byte order; BF16 tensors are widened to float32
    with a warning. Anything that does not follow the format raises SerializationError naming ``source``.
    """
    header, data_start = read_header(data, source)
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise SerializationError(f"{source}: safetensors '__metadata__' must map strings to strings")
    entries = sorted(_checked_entries(header, source), key=lambda entry: entry[3])
    body_size = len(data) - data_start
    expected_start = 0
    for name, _, _, begin, end in entries:
        if begin != expected_start:
            what = "overlaps the one before it" if begin < expected_start else "leaves a gap before it"
            raise SerializationError(f"{source}: tensor '{name}' {what} (data_offsets start at {begin}, "
                                     f"expected {expected_start})")
        expected_start = end
    if expected_start != body_size:
        problem = "is truncated" if expected_start > body_size else "has bytes after the last tensor"
        raise SerializationError(f"{source}: the file {problem}: its tensors need {expected_start} bytes of data, "
                                 f"it holds {body_size}")
    tensors = {}
    widened = []
    for name, dtype_text, shape, begin, end in entries:
        stored = DTYPES[dtype_text]
        count = (end - begin) // stored.itemsize
        raw = np.frombuffer(data, stored, count, data_start + begin) if count else np.empty(0, stored)
        array = raw.reshape(shape).astype(stored.newbyteorder("="), copy=True)
        if dtype_text == "BF16":
            array = bfloat16_to_float32(array)
            widened.append(name)
        tensors[name] = array
    if widened:
        warnings.warn(f"{source}: bfloat16 tensors widened to float32 (NumPy has no bfloat16): "
                      f"{', '.join(widened)}", UserWarning, stacklevel=3)
    return tensors, metadata


def read_header(data: bytes | memoryview, source: str) -> tuple[dict, int]:
    """The JSON header and where the data starts (8 + its length)."""
    if len(data) < 8:
        raise SerializationError(f"{source}: the file is truncated ({len(data)} bytes; a safetensors file starts "
                                 "with an 8-byte header length)")
    (length,) = struct.unpack("<Q", bytes(data[:8]))
    if length > MAX_HEADER_BYTES:
        raise SerializationError(f"{source}: not a safetensors file (its header length would be {length} bytes)")
    if 8 + length > len(data):
        raise SerializationError(f"{source}: the file is truncated: its header needs {length} bytes, "
                                 f"only {len(data) - 8} follow")
    try:
        header = json.loads(bytes(data[8:8 + length]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as error:
        raise SerializationError(f"{source}: the safetensors header is not valid JSON ({error})") from None
    except RecursionError:  # json.loads recurses once per nested array or object
        raise SerializationError(f"{source}: the safetensors header nests too deeply to be one") from None
    if not isinstance(header, dict):
        raise SerializationError(f"{source}: the safetensors header is not a JSON object")
    return header, 8 + length


def _checked_entries(header: dict, source: str) -> Iterator[tuple[str, str, tuple[int, ...], int, int]]:
    """(name, dtype, shape, begin, end) for each tensor, each field checked against the format."""
    for name, entry in header.items():
        if not isinstance(entry, dict) or set(entry) != {"dtype", "shape", "data_offsets"}:
            raise SerializationError(f"{source}: tensor '{name}' needs exactly 'dtype', 'shape' and 'data_offsets'")
        dtype_text, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype_text not in DTYPES:
            raise SerializationError(f"{source}: tensor '{name}' has the unsupported dtype {dtype_text!r} "
                                     f"(supported: {', '.join(DTYPES)})")
        if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
            raise SerializationError(f"{source}: tensor '{name}' has an invalid shape {shape!r}")
        if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(n) for n in offsets) \
                or offsets[0] > offsets[1]:
            raise SerializationError(f"{source}: tensor '{name}' has invalid data_offsets {offsets!r}")
        expected = int(np.prod(shape, dtype=object)) * DTYPES[dtype_text].itemsize
        if offsets[1] - offsets[0] != expected:
            raise SerializationError(f"{source}: tensor '{name}' of shape {tuple(shape)} and dtype {dtype_text} "
                                     f"needs {expected} bytes, its data_offsets span {offsets[1] - offsets[0]}")
        yield name, dtype_text, tuple(shape), offsets[0], offsets[1]


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
