"""IDX files, the format MNIST and Fashion-MNIST ship in, read with every header field checked.

An IDX file is a big-endian header followed by the raw values:

    bytes 0-1   zero
    byte  2     value type (0x08 = unsigned byte, the only one MNIST uses)
    byte  3     number of dimensions
    then        one 4-byte big-endian size per dimension
    then        prod(sizes) values, row-major

Read as one 4-byte number, the first four bytes are the "magic number": 2051 (0x00000803) for a
3-d uint8 image file (count, rows, cols), 2049 (0x00000801) for a 1-d uint8 label file.
"""

from __future__ import annotations

import gzip
import zlib
from typing import Literal

import numpy as np

IMAGES_MAGIC = 2051
LABELS_MAGIC = 2049
IMAGE_SIZE = (28, 28)
NUM_CLASSES = 10

IdxKind = Literal["images", "labels"]
_MAGIC = {"images": IMAGES_MAGIC, "labels": LABELS_MAGIC}
_NDIM = {"images": 3, "labels": 1}


class IdxFormatError(ValueError):
    """A file that is not a well-formed MNIST IDX file (bad magic, dimensions or length)."""


def parse_idx(data: bytes, kind: IdxKind, source: str = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX bytes into a uint8 array: (count, 28, 28) images or (count,) labels.

    ``source`` names the file in error messages. Raises IdxFormatError saying which field is wrong.
    """
    if kind not in _MAGIC:
        raise ValueError(f"kind must be 'images' or 'labels', got {kind!r}")
    expected_magic, ndim = _MAGIC[kind], _NDIM[kind]
    if len(data) < 4:
        raise IdxFormatError(f"{source}: only {len(data)} bytes, too short for an IDX header (4 bytes at least)")
    magic = int.from_bytes(data[:4], "big")
    if magic != expected_magic:
        other = {IMAGES_MAGIC: " (that is an image file)", LABELS_MAGIC: " (that is a label file)"}.get(magic, "")
        raise IdxFormatError(
            f"{source}: magic number {magic} (0x{magic:08x}){other}, expected {expected_magic} "
            f"(0x{expected_magic:08x}) for an IDX {kind} file of unsigned bytes with {ndim} dimension(s)"
        )
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFormatError(
            f"{source}: header truncated: {len(data)} bytes, but {ndim} dimension size(s) need {header_size}"
        )
    dims = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    if kind == "images" and dims[1:] != IMAGE_SIZE:
        raise IdxFormatError(
            f"{source}: images are {dims[1]}x{dims[2]}, expected {IMAGE_SIZE[0]}x{IMAGE_SIZE[1]} "
            f"(header dimensions {dims})"
        )
    expected_length = header_size + int(np.prod(dims))
    if len(data) != expected_length:
        what = "truncated" if len(data) < expected_length else "has trailing bytes"
        raise IdxFormatError(
            f"{source}: {what}: header dimensions {dims} need {expected_length - header_size} value bytes "
            f"after the {header_size}-byte header, found {len(data) - header_size}"
        )
    values = np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims)
    if kind == "labels" and values.size and int(values.max()) >= NUM_CLASSES:
        raise IdxFormatError(f"{source}: label {int(values.max())} out of range, expected 0..{NUM_CLASSES - 1}")
    return values


def decompress(data: bytes, source: str) -> bytes:
    """gunzip ``data`` (the bytes of ``source``), turning gzip's errors into an IdxFormatError."""
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise IdxFormatError(f"{source}: not a readable gzip file ({error})") from error
