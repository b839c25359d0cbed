"""Grad mode: whether modules keep what their backward needs.

tinynn records no graph. "Grad mode" only decides whether a module's forward stores the values
its hand-written backward will read (``Module.save_for_backward``). Under ``no_grad()`` nothing is
kept, which saves memory during validation, and a later ``backward`` says so clearly.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any, TypeVar

_F = TypeVar("_F", bound=Callable[..., Any])
_state = threading.local()


def is_grad_enabled() -> bool:
    """True unless inside ``no_grad()`` (like ``torch.is_grad_enabled``)."""
    return getattr(_state, "enabled", True)


class set_grad_enabled:  # noqa: N801 - torch's name
    """Set grad mode on or off; usable as a function, a context manager or a decorator."""

    def __init__(self, mode: bool) -> None:
        self.prev = is_grad_enabled()
        self.mode = bool(mode)
        _state.enabled = self.mode

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self.prev

    def __call__(self, func: _F) -> _F:
        mode = self.mode

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with set_grad_enabled(mode):
                return func(*args, **kwargs)

        _state.enabled = self.prev  # decorating must not change the current mode
        return wrapper  # type: ignore[return-value]


class no_grad:  # noqa: N801 - torch's name
    """Context manager (and decorator) in which modules keep nothing for backward."""

    def __enter__(self) -> None:
        self.prev = is_grad_enabled()
        _state.enabled = False

    def __exit__(self, *exc: object) -> None:
        _state.enabled = self.prev

    def __call__(self, func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with no_grad():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


class enable_grad(no_grad):  # noqa: N801 - torch's name
    """Context manager that turns grad mode back on inside ``no_grad()``."""

    def __enter__(self) -> None:
        self.prev = is_grad_enabled()
        _state.enabled = True

    def __call__(self, func: _F) -> _F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with enable_grad():
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]
