"""Parameter: an array that a module learns, plus the gradient accumulated for it."""

from __future__ import annotations

from typing import Any

import numpy as np


class Parameter:
    """A learnable array, like ``torch.nn.Parameter``.

    ``data`` is a plain ``np.ndarray`` (float32 unless made otherwise). ``grad`` is ``None`` until
    a module's ``backward`` adds into it; gradients accumulate across backward calls exactly as in
    torch, until ``zero_grad`` clears them. There is no autograd: the owning module's
    hand-written backward is what fills ``grad``.
    """

    __slots__ = ("data", "grad", "requires_grad")

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        if isinstance(data, Parameter):
            data = data.data
        array = np.asarray(data)
        if array.dtype.kind != "f":
            raise TypeError(
                f"Parameter(data): only floating-point arrays can require gradients, got {array.dtype}"
            )
        self.data: np.ndarray = array
        self.grad: np.ndarray | None = None
        self.requires_grad = requires_grad

    @property
    def shape(self) -> tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return int(self.data.size)

    def size(self, dim: int | None = None) -> Any:
        return self.data.shape if dim is None else self.data.shape[dim]

    def requires_grad_(self, requires_grad: bool = True) -> Parameter:
        """Set ``requires_grad`` in place and return self; ``False`` freezes it (backward adds nothing)."""
        if not isinstance(requires_grad, bool):
            raise TypeError(f"requires_grad_(): argument 'requires_grad' (position 1) must be bool, "
                            f"not {type(requires_grad).__name__}")
        self.requires_grad = requires_grad
        return self

    def accumulate_grad(self, grad: np.ndarray) -> None:
        """Add ``grad`` into ``self.grad`` (torch's ``AccumulateGrad``); the first one is copied."""
        if not self.requires_grad:
            return
        if grad.shape != self.data.shape:
            raise RuntimeError(
                f"gradient of shape {grad.shape} does not match parameter of shape {self.data.shape}"
            )
        if self.grad is None:
            # A copy, so that a later in-place accumulation never writes into an array the caller
            # still holds (torch also gives each .grad its own storage).
            self.grad = np.array(grad, dtype=self.data.dtype, order="C", copy=True)
        else:
            self.grad += grad

    def __repr__(self) -> str:
        return f"Parameter containing:\n{self.data!r}"
