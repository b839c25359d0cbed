"""``tinynn.save`` and ``tinynn.load``: state_dicts to and from safetensors files, and torch checkpoints read
without torch.

What ``save`` writes is a safetensors file (see ``safetensors.py``: a JSON header, then raw
little-endian bytes), so it holds no code and any safetensors reader can open it:

* every array becomes one tensor of the file. In a model's state_dict (``{name: array}``) the
  tensor is named by its key, so ``safetensors.torch.load_file`` gives ``{name: tensor}``; deeper
  in (an optimizer's ``state[0]["exp_avg"]``) by the path of keys, ``state.0.exp_avg``;
* everything else goes into the header's metadata, as JSON, under ``tinynn.structure``: the
  nesting of dicts, lists and tuples, the numbers, strings, bools and Nones, and in place of each
  array ``{"tensor": name}``. Containers are tagged (``{"dict": [[key, value], ...]}``,
  ``{"list": [...]}``, ``{"tuple": [...]}``), so int keys (an optimizer's parameter indices) stay
  ints and tuples stay tuples. A 0-d array (Adam's ``step``, BatchNorm's ``num_batches_tracked``) is a
  tensor of shape ``[]`` and comes back a 0-d array of its dtype; a NumPy scalar comes back a NumPy scalar.

``load`` reads those files, safetensors files from elsewhere (as ``{name: array}``, in the order of
their data) and torch's own ``.pt``/``.pth`` zip checkpoints (see ``torch_pickle.py``: no torch, no
code run). It returns the whole object or raises ``SerializationError``; it never hands back part
of a file.
"""

from __future__ import annotations

import json
import math
import os
import secrets
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Union

import numpy as np

from tinynn.nn.parameter import Parameter
from tinynn.serialization import safetensors
from tinynn.serialization.errors import SerializationError, UnsafeCheckpointError
from tinynn.serialization.torch_pickle import ZIP_MAGIC, is_legacy_torch_file, load_torch_zip

FileLike = Union[str, "os.PathLike[str]", IO[bytes]]
STRUCTURE_KEY = "tinynn.structure"

__all__ = ["SerializationError", "UnsafeCheckpointError", "load", "save"]


def save(obj: Any, f: FileLike) -> None:
    """Save ``obj`` (a state_dict: nested dicts, lists and tuples of arrays, numbers, strings, bools
    and None) to ``f`` as a safetensors file; no pickle.

    ``f`` is a path or a binary file open for writing. A path is written atomically: to a temporary
    file in the same folder, flushed to disk, then renamed over ``f``, so ``f`` is either the old
    file or the whole new one, never half of either, even if saving fails or the machine stops.
    """
    tensors: dict[str, np.ndarray] = {}
    structure = _encode(obj, "", tensors)  # before any file is touched: an unsupported value changes nothing
    metadata = {"format": "pt",  # the tensors are torch's state_dict layout; tools that check this accept it
                STRUCTURE_KEY: json.dumps(structure, separators=(",", ":"), allow_nan=False)}
    if hasattr(f, "write"):
        safetensors.write(f, tensors, metadata)
        return
    path = Path(os.fspath(f))
    if not path.parent.is_dir():
        raise FileNotFoundError(f"tinynn.save: cannot write {path}: the folder {path.parent} does not exist")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            safetensors.write(file, tensors, metadata)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def load(f: FileLike) -> Any:
    """Load what ``save`` wrote, any safetensors file, or a torch ``.pt``/``.pth`` checkpoint of a
    state_dict (written by ``torch.save``, read without torch). Arrays come back as NumPy arrays
    that ``Module.load_state_dict`` and ``Optimizer.load_state_dict`` accept.

    Raises ``SerializationError`` (a ValueError) for a truncated, corrupt or unknown file and
    ``UnsafeCheckpointError`` for a torch checkpoint whose pickle names anything but tensors.
    """
    if hasattr(f, "read"):
        data, source = f.read(), str(getattr(f, "name", "<file object>"))
    else:
        data, source = Path(os.fspath(f)).read_bytes(), os.fspath(f)
    if data.startswith(ZIP_MAGIC):
        return load_torch_zip(data, source)
    if is_legacy_torch_file(data):
        raise SerializationError(f"{source}: a torch checkpoint in the format before torch 1.6, which tinynn does "
                                 "not read; load it in torch and save it again with torch.save (the zip format)")
    if not _may_be_safetensors(data):
        if data.startswith(b"\x80"):  # pickle's PROTO opcode
            raise SerializationError(f"{source}: a bare pickle, which tinynn does not load (it can run any code); "
                                     "save state_dicts with tinynn.save or torch.save")
        raise SerializationError(f"{source}: not a tinynn, safetensors or torch zip file (it starts with "
                                 f"{data[:16]!r})")
    tensors, metadata = safetensors.read(data, source)
    if STRUCTURE_KEY not in metadata:
        return tensors
    used: set[str] = set()
    try:
        obj = _decode(json.loads(metadata[STRUCTURE_KEY]), tensors, used, source)
    except RecursionError:  # both json.loads and _decode recurse, one level per container
        raise SerializationError(f"{source}: the metadata '{STRUCTURE_KEY}' nests containers too deeply to read "
                                 "(the file is corrupt or was not written by tinynn.save)") from None
    except json.JSONDecodeError as error:
        raise SerializationError(f"{source}: the metadata '{STRUCTURE_KEY}' is not valid JSON ({error})") from None
    if used != set(tensors):
        raise SerializationError(f"{source}: tensors {sorted(set(tensors) - used)} are not in the file's structure")
    return obj


# ---------------------------------------------------------------------- the structure as JSON
def _encode(value: Any, path: str, tensors: dict[str, np.ndarray]) -> Any:
    """``value`` as JSON, its arrays moved into ``tensors`` under names made from ``path``."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int) and not isinstance(value, np.generic):
        return int(value)
    if isinstance(value, float) and not isinstance(value, np.generic):  # np.float64 is a float too
        return value if math.isfinite(value) else {"float": repr(value)}
    array = _as_array(value)
    if array is not None:
        name = path or "tensor"
        suffix = 1
        while name in tensors or name == "__metadata__":  # safetensors reserves that name for its metadata
            suffix += 1
            name = f"{path}#{suffix}"
        safetensors.dtype_name(array)  # refuse an unsupported dtype now, naming the entry
        tensors[name] = array
        return {"tensor": name, "scalar": True} if isinstance(value, np.generic) else {"tensor": name}
    dot = f"{path}." if path else ""
    if isinstance(value, Mapping):
        items = []
        for key, item in value.items():
            if isinstance(key, bool) or not isinstance(key, (str, int)):
                raise TypeError(f"tinynn.save: the key {key!r} at {path or 'the top'} is a {type(key).__name__}; "
                                "keys must be str or int")
            items.append([int(key) if isinstance(key, int) else key, _encode(item, f"{dot}{key}", tensors)])
        return {"ordered_dict" if isinstance(value, OrderedDict) else "dict": items}
    if isinstance(value, (list, tuple)):
        items = [_encode(item, f"{dot}{index}", tensors) for index, item in enumerate(value)]
        return {"tuple" if isinstance(value, tuple) else "list": items}
    raise TypeError(f"tinynn.save: cannot save a {type(value).__name__} (at {path or 'the top'}); a state_dict "
                    "holds arrays, numbers, strings, bools, None, and dicts, lists and tuples of them")


def _as_array(value: Any) -> np.ndarray | None:
    """An ndarray for an array, a NumPy scalar, a Parameter or a torch tensor; None for anything else."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, np.generic):
        return np.asarray(value)
    if isinstance(value, Parameter):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        return value.detach().cpu().numpy()  # a torch tensor (duck-typed: tinynn never imports torch)
    return None


def _decode(node: Any, tensors: dict[str, np.ndarray], used: set[str], source: str) -> Any:
    """The inverse of ``_encode``; anything malformed raises SerializationError."""
    if node is None or isinstance(node, (bool, int, float, str)):
        return node
    if isinstance(node, dict) and len(node) in (1, 2):
        tag, body = next(iter(node.items()))
        if tag == "tensor" and isinstance(body, str) and body in tensors and node.get("scalar", None) in (None, True):
            used.add(body)
            return tensors[body][()] if node.get("scalar") else tensors[body]
        if tag in ("dict", "ordered_dict") and len(node) == 1 and isinstance(body, list) and all(
                isinstance(item, list) and len(item) == 2 and isinstance(item[0], (str, int))
                and not isinstance(item[0], bool) for item in body):
            items = [(key, _decode(item, tensors, used, source)) for key, item in body]
            return OrderedDict(items) if tag == "ordered_dict" else dict(items)
        if tag in ("list", "tuple") and len(node) == 1 and isinstance(body, list):
            items = [_decode(item, tensors, used, source) for item in body]
            return tuple(items) if tag == "tuple" else items
        if tag == "float" and len(node) == 1 and body in ("nan", "inf", "-inf"):
            return float(body)
    raise SerializationError(f"{source}: unexpected entry {json.dumps(node)[:200]} in the metadata "
                             f"'{STRUCTURE_KEY}' (the file is corrupt or was not written by tinynn.save)")


def _may_be_safetensors(data: bytes) -> bool:
    """False when ``data`` cannot be a safetensors file, whole or truncated: its first 8 bytes, the
    header's length, are more than any header has, or the header does not start a JSON object.
    A short or cut-off file is left to ``safetensors.read``, which says it is truncated."""
    if len(data) < 8:
        return True
    length = int.from_bytes(data[:8], "little")
    return 0 < length <= safetensors.MAX_HEADER_BYTES and data[8:9] in (b"{", b"")


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where directories cannot be opened (Windows)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
