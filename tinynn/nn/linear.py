"""Linear family: ``linear`` (y = x @ W.T + b) and its backward, the ``Linear`` and ``Identity`` modules."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype, float32, torch_name
from tinynn.nn import init
from tinynn.nn.module import Module
from tinynn.nn.parameter import Parameter


def _dtype_hint(input_dtype: np.dtype, weight_dtype: np.dtype) -> str:
    hint = f"convert the input with .astype(np.{weight_dtype.name})"
    if input_dtype.kind == "f":
        method = {"float64": "double", "float32": "float"}.get(input_dtype.name)
        if method:
            hint += f", or the model with model.{method}()"
    return hint


def _check_linear_args(input: Any, weight: np.ndarray, bias: np.ndarray | None) -> None:
    """Raise torch's errors (with a hint) before any arithmetic; each check is a cheap attribute test."""
    if not isinstance(input, np.ndarray):
        raise TypeError(f"linear(): argument 'input' must be a NumPy array, not {type(input).__name__}")
    if input.ndim == 0 or weight.ndim != 2:
        if input.ndim == 0:
            raise RuntimeError(
                f"both arguments to linear need to be at least 1D, but they are {input.ndim}D and {weight.ndim}D"
            )
        raise RuntimeError(
            f"linear(): weight must be 2-D (out_features, in_features), got shape {tuple(weight.shape)}"
        )
    if input.shape[-1] != weight.shape[1]:
        rows = math.prod(input.shape[:-1])
        raise RuntimeError(
            f"mat1 and mat2 shapes cannot be multiplied ({rows}x{input.shape[-1]} and "
            f"{weight.shape[1]}x{weight.shape[0]}): input has {input.shape[-1]} features, "
            f"weight expects in_features={weight.shape[1]}"
        )
    if input.dtype != weight.dtype:
        raise RuntimeError(
            f"mat1 and mat2 must have the same dtype, but got {torch_name(input.dtype)} and "
            f"{torch_name(weight.dtype)} (input {input.dtype}, weight {weight.dtype}); "
            + _dtype_hint(input.dtype, weight.dtype)
        )
    if bias is not None and (bias.shape != (weight.shape[0],) or bias.dtype != weight.dtype):
        raise RuntimeError(
            f"linear(): bias must have shape ({weight.shape[0]},) and dtype {weight.dtype} like the weight, "
            f"got shape {tuple(bias.shape)} and dtype {bias.dtype}"
        )


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def linear(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None) -> np.ndarray:
    """y = x @ W.T + b.

    Shapes: input (*, in_features), weight (out_features, in_features), bias (out_features,)
    -> (*, out_features). A 1-D input (in_features,) gives (out_features,), as in torch.
    """
    _check_linear_args(input, weight, bias)
    output = input @ weight.T  # BLAS reads the transposed view directly: no copy of W
    if bias is not None:
        output += bias  # in place: saves allocating a second output-sized array
    return output


@np.errstate(invalid="ignore", over="ignore")  # infinities make NaNs (inf - inf, 0 * inf) silently, as in torch
def linear_backward(
    grad_output: np.ndarray, input: np.ndarray, weight: np.ndarray,
    has_bias: bool = True, needs_input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of y = x @ W.T + b: dX = dY @ W, dW = dY.T @ X, db = dY.sum(0).

    Leading dims are flattened into one batch dim first, so every sample adds into dW and db.
    Returns (grad_input or None, grad_weight, grad_bias or None).
    """
    if input.ndim != 2:
        rows = math.prod(input.shape[:-1])  # not -1: a reshape cannot infer it when a side is 0
        grad_output_2d = grad_output.reshape(rows, weight.shape[0])
        input_2d = input.reshape(rows, weight.shape[1])
    else:
        grad_output_2d, input_2d = grad_output, input
    grad_weight = grad_output_2d.T @ input_2d
    grad_bias = grad_output_2d.sum(axis=0) if has_bias else None
    grad_input = None
    if needs_input_grad:
        grad_input = grad_output @ weight  # (*, out) @ (out, in) keeps the leading dims
    return grad_input, grad_weight, grad_bias


class Linear(Module):
    """y = x @ W.T + b with W of shape (out_features, in_features), initialised as in torch."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, dtype: Any = None) -> None:
        super().__init__()
        dtype = float32 if dtype is None else as_float_dtype(dtype)
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(np.empty((out_features, in_features), dtype=dtype))
        if bias:
            self.bias = Parameter(np.empty(out_features, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """torch's init: W ~ U(+-1/sqrt(in_features)) via kaiming_uniform_(a=sqrt(5)), b likewise."""
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in = self.in_features
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: np.ndarray) -> np.ndarray:
        # self._parameters[...] rather than self.weight: attribute access to a parameter goes
        # through Module.__getattr__, a Python-level fallback that costs more than this layer's checks.
        weight, bias = self._parameters["weight"].data, self._parameters["bias"]
        output = linear(input, weight, None if bias is None else bias.data)
        self.save_for_backward(input, weight)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        input, weight = self.saved_tensors()
        expected = (*input.shape[:-1], weight.shape[0])
        if grad_output.shape != expected:
            raise RuntimeError(f"Linear.backward: grad_output has shape {grad_output.shape}, expected {expected}")
        weight_param, bias_param = self._parameters["weight"], self._parameters["bias"]
        grad_input, grad_weight, grad_bias = linear_backward(
            grad_output, input, weight, has_bias=bias_param is not None, needs_input_grad=needs_input_grad
        )
        weight_param.accumulate_grad(grad_weight)
        if bias_param is not None:
            bias_param.accumulate_grad(grad_bias)
        return grad_input

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class Identity(Module):
    """Returns its input unchanged; any constructor arguments are ignored, as in torch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()

    def forward(self, input: Any) -> Any:
        self.save_for_backward()
        return input

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        self.saved_tensors()  # raises the clear error for a backward without a forward
        return grad_output if needs_input_grad else None
