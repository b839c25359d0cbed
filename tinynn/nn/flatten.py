"""Flatten: a reshape forward, and the inverse reshape backward."""

from __future__ import annotations

import math

import numpy as np

from tinynn.nn.module import Module


def flatten(input: np.ndarray, start_dim: int = 0, end_dim: int = -1) -> np.ndarray:
    """Merge dims ``start_dim..end_dim`` into one, like ``torch.flatten``.

    Shapes: (d0, ..., d_start, ..., d_end, ...) -> (d0, ..., d_start * ... * d_end, ...).
    Gradient: dL/dx = (dL/dy).reshape(x.shape); a reshape moves no numbers.
    """
    ndim = max(input.ndim, 1)
    start, end = start_dim % ndim, end_dim % ndim
    if not (-ndim <= start_dim < ndim and -ndim <= end_dim < ndim):
        raise IndexError(
            f"Dimension out of range (expected to be in range of [{-ndim}, {ndim - 1}], "
            f"but got {start_dim if not -ndim <= start_dim < ndim else end_dim})"
        )
    if start > end:
        raise RuntimeError("flatten() has invalid args: start_dim cannot come after end_dim")
    shape = input.shape
    if not input.ndim:
        return input.reshape(1)
    # The merged side spelled out, not -1: a reshape cannot infer it when another side is 0.
    return input.reshape((*shape[:start], math.prod(shape[start:end + 1]), *shape[end + 1:]))


class Flatten(Module):
    """Flatten dims ``start_dim..end_dim`` (default: all but the batch dim)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input: np.ndarray) -> np.ndarray:
        self.save_for_backward(input.shape)
        return flatten(input, self.start_dim, self.end_dim)

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (shape,) = self.saved_tensors()
        return grad_output.reshape(shape)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
