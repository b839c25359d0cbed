"""Textbook mode: run every op on the plain NumPy code a learner reads, not on the speed engine.

Each op family under ``tinynn/nn/`` has its forward and backward written as textbook NumPy; where a
benchmark showed the need, the same maths also has a fast version in the private ``tinynn._engine``
package, which the op reaches through one marked dispatch. By default the engine runs. In textbook
mode it never does: no engine module is even imported, so no thread, ctypes call or scratch buffer
of its is involved, and what runs is exactly the code in the op's file.

Three ways in, like ``tinynn.no_grad``:

    with tinynn.textbook():          # a block
        loss = loss_fn(model(xb), yb)
    tinynn.set_textbook(True)        # from here on
    TINYNN_TEXTBOOK=1 python ...     # a whole process

The mode is one setting for the whole process (not per thread), read by each op when it runs; a
module's backward follows the path its own forward took, whatever the mode is by then.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])

_textbook = os.environ.get("TINYNN_TEXTBOOK", "").strip().lower() not in ("", "0", "false", "no")


def is_textbook() -> bool:
    """True when ops run on their textbook code (``set_textbook``, ``textbook()``, ``TINYNN_TEXTBOOK=1``)."""
    return _textbook


def set_textbook(mode: bool) -> None:
    """Run ops on their textbook code (True) or on the engine where they have one (False, the default)."""
    global _textbook
    if not isinstance(mode, bool):
        raise TypeError(f"set_textbook expects a bool, but got {type(mode).__name__}")
    _textbook = mode


class textbook:  # noqa: N801 - used like torch's lowercase context managers
    """Context manager (``with tinynn.textbook(): ...``) or decorator in which every op runs its
    textbook code; ``textbook(False)`` turns the engine back on inside. The previous mode is
    restored on exit."""

    def __init__(self, mode: bool = True) -> None:
        if not isinstance(mode, bool):
            raise TypeError(f"textbook expects a bool, but got {type(mode).__name__}")
        self.mode = mode

    def __enter__(self) -> None:
        self.prev = _textbook
        set_textbook(self.mode)

    def __exit__(self, *exc: object) -> None:
        set_textbook(self.prev)

    def __call__(self, func: _F) -> _F:
        """As a decorator: the whole function runs in this mode."""
        mode = self.mode

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with textbook(mode):
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
