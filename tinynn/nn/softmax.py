"""softmax and log_softmax along a dim, each a forward beside its backward, and their modules.

Both backwards take the forward's OUTPUT: the probabilities (or log-probabilities) alone determine
the gradient, so a module keeps one array and no copy of its input.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype, torch_name
from tinynn.nn.module import Module


def _softmax_dim(name: str, ndim: int, dim: int | None) -> int:
    """Validate ``dim`` (or pick torch's legacy implicit one) and return it as a non-negative axis."""
    if dim is None:
        warnings.warn(
            f"Implicit dimension choice for {name} has been deprecated. "
            "Change the call to include dim=X as an argument.",
            UserWarning, stacklevel=3,
        )
        # torch's _get_softmax_dim: dim 0 for 0-, 1- and 3-D input, dim 1 otherwise.
        return 0 if ndim in (0, 1, 3) else 1
    low, high = -max(ndim, 1), max(ndim, 1) - 1
    if not low <= dim <= high:
        raise IndexError(f"Dimension out of range (expected to be in range of [{low}, {high}], but got {dim})")
    return dim % max(ndim, 1)


def _float_input(name: str, input: np.ndarray, dtype: Any) -> np.ndarray:
    if isinstance(input, np.generic):  # NumPy turns 0-d results into scalars
        input = np.asarray(input)
    elif not isinstance(input, np.ndarray):
        raise TypeError(f"{name}(): argument 'input' must be a NumPy array, not {type(input).__name__}")
    if dtype is not None:
        input = input.astype(as_float_dtype(dtype), copy=False)
    if input.dtype.kind != "f":
        raise TypeError(
            f"{name}(): expected a floating-point input, got {torch_name(input.dtype)} ({input.dtype}); "
            "convert it with .astype(np.float32)"
        )
    return input


def softmax(input: np.ndarray, dim: int | None = None, dtype: Any = None) -> np.ndarray:
    """y = exp(x - max) / sum(exp(x - max)) along ``dim``; subtracting the max avoids overflow."""
    input = _float_input("softmax", input, dtype)
    axis = _softmax_dim("softmax", input.ndim, dim)
    with np.errstate(invalid="ignore"):  # an inf input: inf - inf is NaN, as in torch, which does not warn
        if input.ndim == 0 or input.size == 0:
            return np.exp(input - input)  # a 0-d softmax is 1 (NaN stays NaN); empty stays empty
        exp = np.exp(input - input.max(axis=axis, keepdims=True))
    exp /= exp.sum(axis=axis, keepdims=True)
    return exp


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def softmax_backward(grad_output: np.ndarray, output: np.ndarray, dim: int) -> np.ndarray:
    """dX = y * (dY - sum(dY * y, dim)), from the saved output y."""
    if output.ndim == 0:  # a 0-d "sum along dim" is the element itself
        return output * (grad_output - grad_output * output)
    return output * (grad_output - (grad_output * output).sum(axis=dim % output.ndim, keepdims=True))


def log_softmax(input: np.ndarray, dim: int | None = None, dtype: Any = None) -> np.ndarray:
    """y = (x - max) - log(sum(exp(x - max))) along ``dim``, stable for any magnitude of x."""
    input = _float_input("log_softmax", input, dtype)
    axis = _softmax_dim("log_softmax", input.ndim, dim)
    with np.errstate(invalid="ignore"):  # as in softmax
        if input.ndim == 0 or input.size == 0:
            return input - input  # a 0-d log_softmax is 0 (NaN stays NaN); empty stays empty
        shifted = input - input.max(axis=axis, keepdims=True)
        shifted -= np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def log_softmax_backward(grad_output: np.ndarray, output: np.ndarray, dim: int) -> np.ndarray:
    """dX = dY - exp(y) * sum(dY, dim), from the saved output y (exp(y) is the softmax)."""
    if output.ndim == 0:
        return grad_output - np.exp(output) * grad_output
    return grad_output - np.exp(output) * grad_output.sum(axis=dim % output.ndim, keepdims=True)


class _SoftmaxBase(Module):
    _name = ""

    def __init__(self, dim: int | None = None) -> None:
        super().__init__()
        self.dim = dim

    def _forward_dim(self, input: np.ndarray) -> int:
        if self.dim is not None:
            return self.dim
        return _softmax_dim(self._name, input.ndim, None)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class Softmax(_SoftmaxBase):
    """softmax along ``dim``; backward from the saved probabilities."""

    _name = "softmax"

    def forward(self, input: np.ndarray) -> np.ndarray:
        dim = self._forward_dim(input)
        output = softmax(input, dim)
        self.save_for_backward(output, dim)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        output, dim = self.saved_tensors()
        return softmax_backward(grad_output, output, dim) if needs_input_grad else None


class LogSoftmax(_SoftmaxBase):
    """log_softmax along ``dim``; backward from the saved log-probabilities."""

    _name = "log_softmax"

    def forward(self, input: np.ndarray) -> np.ndarray:
        dim = self._forward_dim(input)
        output = log_softmax(input, dim)
        self.save_for_backward(output, dim)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        output, dim = self.saved_tensors()
        return log_softmax_backward(grad_output, output, dim) if needs_input_grad else None
