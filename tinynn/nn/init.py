"""Parameter initialisation, as in ``torch.nn.init`` (same names, same formulas, NumPy's generator).

torch's default for Linear and Conv2d is ``kaiming_uniform_(weight, a=sqrt(5))``: with
gain = sqrt(2 / (1 + a^2)) = sqrt(1/3) the bound gain * sqrt(3 / fan_in) is exactly
1 / sqrt(fan_in), and the bias is uniform in +-1/sqrt(fan_in) too.
"""

from __future__ import annotations

import math

import numpy as np

from tinynn._random import default_generator
from tinynn.nn.parameter import Parameter

ArrayLike = np.ndarray | Parameter


def _array(tensor: ArrayLike) -> np.ndarray:
    return tensor.data if isinstance(tensor, Parameter) else tensor


def _calculate_fan_in_and_fan_out(tensor: ArrayLike) -> tuple[int, int]:
    """fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field (torch's rule)."""
    shape = _array(tensor).shape
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """Recommended gain for a nonlinearity (the subset of torch's table that tinynn uses)."""
    if nonlinearity in ("linear", "conv2d", "sigmoid"):
        return 1.0
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "tanh":
        return 5.0 / 3
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def uniform_(tensor: ArrayLike, a: float = 0.0, b: float = 1.0) -> ArrayLike:
    """Fill in place with U(a, b), keeping the array's dtype."""
    array = _array(tensor)
    array[...] = default_generator().uniform(a, b, size=array.shape)
    return tensor


def normal_(tensor: ArrayLike, mean: float = 0.0, std: float = 1.0) -> ArrayLike:
    """Fill in place with N(mean, std^2), keeping the array's dtype."""
    array = _array(tensor)
    array[...] = default_generator().normal(mean, std, size=array.shape)
    return tensor


def zeros_(tensor: ArrayLike) -> ArrayLike:
    _array(tensor)[...] = 0
    return tensor


def kaiming_uniform_(
    tensor: ArrayLike, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu"
) -> ArrayLike:
    """U(-bound, bound) with bound = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a)."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of fan_in, fan_out")
    fan = fan_in if mode == "fan_in" else fan_out
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / fan) if fan else 0.0
    return uniform_(tensor, -bound, bound)
