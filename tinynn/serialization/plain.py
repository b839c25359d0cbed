"""What an object loaded from a torch checkpoint may hold: dicts, lists and tuples of arrays, numbers,
strings and None, without cycles. ``torch_pickle`` checks every load's result with ``check_plain``."""

from __future__ import annotations

import reprlib
from typing import Any

import numpy as np

from tinynn.serialization.errors import SerializationError

_PLAIN = (np.ndarray, str, bytes, int, float, complex, type(None))
_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxtuple, _SHORT.maxlist, _SHORT.maxstring, _SHORT.maxother = 3, 8, 8, 60, 60


def short_repr(value: Any) -> str:
    """``repr(value)`` cut short, for values from a file in messages: a crafted one can be huge or
    nested deeper than ``repr`` can recurse."""
    return _SHORT.repr(value)


def check_plain(result: Any, source: str) -> None:
    """Refuse anything in ``result`` but containers, numbers, strings and arrays (say a storage or a
    stand-in left bare by a crafted pickle), and any container that contains itself. A loop, not
    recursion: a pickle can nest containers many thousands deep, and share one among many places
    (each is checked once)."""
    stack: list[tuple[Any, tuple | None, bool]] = [(result, None, False)]  # (value, its path, leaving it)
    on_path: set[int] = set()  # ids of the containers around the current value: meeting one again is a cycle
    checked: set[int] = set()
    while stack:
        value, path, leaving = stack.pop()
        if leaving:
            on_path.discard(id(value))
            checked.add(id(value))
        elif isinstance(value, (dict, list, tuple)):
            if id(value) in on_path:
                raise SerializationError(f"{source}: {_where(path)} is a container around itself (a cycle, "
                                         "which no state_dict has)")
            if id(value) in checked:
                continue
            on_path.add(id(value))
            stack.append((value, path, True))
            if isinstance(value, dict):  # a path is (parent path, (how, what)), made into text only for an error
                children = [child for key, item in value.items()
                            for child in ((key, (path, ("key", key))), (item, (path, ("[]", key))))]
                children += [(item, (path, (".", name))) for name, item in getattr(value, "__dict__", {}).items()]
            else:
                children = [(item, (path, ("[]", index))) for index, item in enumerate(value)]
            stack.extend((child, child_path, False) for child, child_path in reversed(children))
        elif not isinstance(value, _PLAIN):
            raise SerializationError(f"{source}: {_where(path)} is a {type(value).__name__}, not a tensor, number, "
                                     "string or container")


def _where(path: tuple | None) -> str:
    """A path as text, ``the checkpoint['state'][0]``, the middle of a deep one left out."""
    steps = []
    while path is not None:
        path, step = path
        steps.append(step)
    steps.reverse()
    key = bool(steps) and steps[-1][0] == "key"
    labels = [f".{what}" if how == "." else f"[{short_repr(what)}]" for how, what in steps[:-1 if key else None]]
    shown = "".join(labels) if len(labels) <= 8 else "".join(labels[:4]) + "..." + "".join(labels[-3:])
    return f"{'a key of ' if key else ''}the checkpoint{shown}"
