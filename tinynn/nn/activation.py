"""Activations: relu, softmax and log_softmax, each a forward beside its backward, and their modules.

Every backward here takes the forward's OUTPUT rather than its input: the output alone determines
the gradient (relu's mask, softmax's probabilities), so a module keeps one array and no copy.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype, torch_name
from tinynn.nn.module import Module


def relu(input: np.ndarray, inplace: bool = False) -> np.ndarray:
    """max(x, 0) elementwise; same shape, dtype and memory layout as ``input``.

    With ``inplace=True`` the result is written into ``input`` and ``input`` is returned.
    """
    # NumPy vectorizes the maximum of two arrays, not of an array and a scalar (3x slower on the
    # tutorial's first activation), so the zeros are an array too; ufuncs keep the input's layout.
    zeros = _zeros_like(input)
    return np.maximum(input, zeros, out=input) if inplace else np.maximum(input, zeros)


_ZEROS: dict[np.dtype, np.ndarray] = {}  # one read-only buffer of zeros per dtype, grown as needed


def _zeros_like(input: np.ndarray) -> np.ndarray | int:
    """Zeros with ``input``'s shape and strides, viewing a buffer kept for reuse, or the scalar 0
    where the strides do not fit one (a view with gaps, negative or zero strides).

    Not ``np.zeros_like``: a fresh array per call costs an allocation, and with glibc's default
    thresholds a page fault per 4 KiB of it (the tutorial CNN's step measured 1.5x slower).
    The buffer is never written, so its pages all map the kernel's one zero page.
    """
    itemsize = input.itemsize
    if input.size == 0 or any(stride <= 0 for stride, n in zip(input.strides, input.shape) if n > 1):
        return 0
    span = sum((n - 1) * stride for n, stride in zip(input.shape, input.strides)) + itemsize
    if span != input.nbytes:  # gaps between the elements: not one dense block of memory
        return 0
    buffer = _ZEROS.get(input.dtype)
    if buffer is None or buffer.nbytes < span:
        buffer = _ZEROS[input.dtype] = np.zeros(span // itemsize, dtype=input.dtype)
        buffer.flags.writeable = False
    return np.ndarray(input.shape, input.dtype, buffer=buffer, strides=input.strides)


def relu_backward(grad_output: np.ndarray, output: np.ndarray) -> np.ndarray:
    """dX = dY where y > 0, else 0 (torch's choice at exactly 0 is 0), from relu's output y.

    Written as torch's ``threshold_backward``: ``where(y <= 0, 0, dY)``, so a NaN upstream gradient
    at an inactive unit still gives 0, and the result keeps the layout of its inputs.
    """
    # A relu output is >= 0 or NaN, so "y != 0" is torch's "not y <= 0" in one comparison: a NaN
    # output passes dY on, as in torch.
    return keep_where(output != 0, grad_output)


def keep_where(keep: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """``np.where(keep, grad, 0)`` (broadcast), exactly, at the speed of ``keep * grad``.

    The product is branch-free, about 10x faster than np.where on a random mask (mispredicted
    branches). Only a NaN or inf in ``grad`` where ``keep`` is False (NaN * 0) needs the exact
    where; NaN anywhere makes the minimum NaN (one pass, no temporary array).
    """
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, replaced below; torch does not warn
        kept = keep * grad
    if kept.size and np.isnan(kept.min()):
        kept = np.where(keep, grad, 0)
    return kept


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


class ReLU(Module):
    """max(x, 0) elementwise; keeps its output, which is all the backward needs."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = relu(input, self.inplace)
        self.save_for_backward(output)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (output,) = self.saved_tensors()
        return relu_backward(grad_output, output) if needs_input_grad else None

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


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
