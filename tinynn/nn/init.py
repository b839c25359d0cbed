"""Parameter initialisation, as in ``torch.nn.init`` (same names, same formulas, NumPy's generator).

torch's default for Linear and Conv2d is ``kaiming_uniform_(weight, a=sqrt(5))``: with
gain = sqrt(2 / (1 + a^2)) = sqrt(1/3) the bound gain * sqrt(3 / fan_in) is exactly
1 / sqrt(fan_in), and the bias is uniform in +-1/sqrt(fan_in) too.

Every function fills its array (or Parameter) in place, keeps its dtype and returns it. The
random ones draw from ``generator`` (a ``numpy.random.Generator``) or, by default, tinynn's
global one (``tinynn.manual_seed``). torch's generator draws other numbers, so only the
distributions match torch's.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from tinynn._random import default_generator
from tinynn.nn.parameter import Parameter

ArrayLike = np.ndarray | Parameter
_LINEAR = ("linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d", "conv_transpose2d", "conv_transpose3d")


def _array(tensor: ArrayLike) -> np.ndarray:
    return tensor.data if isinstance(tensor, Parameter) else tensor


def _rng(generator: np.random.Generator | None) -> np.random.Generator:
    return generator or default_generator()


def _calculate_fan_in_and_fan_out(tensor: ArrayLike) -> tuple[int, int]:
    """fan_in = shape[1] * receptive field, fan_out = shape[0] * receptive field (torch's rule)."""
    shape = _array(tensor).shape
    if len(shape) < 2:
        raise ValueError("Fan in and fan out can not be computed for tensor with fewer than 2 dimensions")
    receptive_field = math.prod(shape[2:])
    return shape[1] * receptive_field, shape[0] * receptive_field


def _calculate_correct_fan(tensor: ArrayLike, mode: str) -> int:
    mode = mode.lower()
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"Mode {mode} not supported, please use one of ['fan_in', 'fan_out']")
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return fan_in if mode == "fan_in" else fan_out


def calculate_gain(nonlinearity: str, param: float | None = None) -> float:
    """The gain that keeps activations' variance through ``nonlinearity`` (torch's table)."""
    if nonlinearity in _LINEAR or nonlinearity == "sigmoid":
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        if param is None:
            slope = 0.01
        elif isinstance(param, (int, float)) and not isinstance(param, bool):
            slope = param
        else:
            raise ValueError(f"negative_slope {param} not a valid number")
        return math.sqrt(2.0 / (1 + slope**2))
    if nonlinearity == "selu":
        return 3.0 / 4  # torch's value, found empirically
    raise ValueError(f"Unsupported nonlinearity {nonlinearity}")


def uniform_(tensor: ArrayLike, a: float = 0.0, b: float = 1.0,
             generator: np.random.Generator | None = None) -> ArrayLike:
    """Fill with U(a, b)."""
    array = _array(tensor)
    array[...] = _rng(generator).uniform(a, b, size=array.shape)
    return tensor


def normal_(tensor: ArrayLike, mean: float = 0.0, std: float = 1.0,
            generator: np.random.Generator | None = None) -> ArrayLike:
    """Fill with N(mean, std^2)."""
    array = _array(tensor)
    array[...] = _rng(generator).normal(mean, std, size=array.shape)
    return tensor


def trunc_normal_(tensor: ArrayLike, mean: float = 0.0, std: float = 1.0, a: float = -2.0, b: float = 2.0,
                  generator: np.random.Generator | None = None) -> ArrayLike:
    """N(mean, std^2) restricted to [a, b], by torch's two rejection samplers: draws from the
    normal itself, kept when inside [a, b], when [a, b] holds over 30% of it; otherwise uniform
    draws over [a, b], each kept with probability pdf(x) / pdf(peak)."""
    if mean < a - 2 * std or mean > b + 2 * std:
        warnings.warn("mean is more than 2 std from [a, b] in nn.init.trunc_normal_. "
                      "The distribution of values may be incorrect.", stacklevel=2)
    array, rng = _array(tensor), _rng(generator)
    from_normal = _normal_cdf(b, mean, std) - _normal_cdf(a, mean, std) > 0.3
    peak = max(a, min(mean, b))
    values, pending = np.empty(array.shape), np.ones(array.shape, dtype=bool)
    while pending.any():
        count = int(pending.sum())
        if from_normal:
            draws = rng.normal(mean, std, count)
            kept = (draws >= a) & (draws <= b)
        else:
            draws = rng.uniform(a, b, count)
            kept = np.log(rng.random(count)) <= -0.5 * (((draws - mean) / std) ** 2 - ((peak - mean) / std) ** 2)
        places = np.flatnonzero(pending)[kept]
        values.flat[places] = draws[kept]
        pending.flat[places] = False
    array[...] = values  # float64 draws rounded to the array's dtype stay inside its [a, b]
    return tensor


def orthogonal_(tensor: ArrayLike, gain: float = 1.0, generator: np.random.Generator | None = None) -> ArrayLike:
    """A random (semi-)orthogonal matrix times ``gain``, over the array flattened to (shape[0], rest):
    Q of the QR of a normal matrix, its columns' signs set by R's diagonal (so Q is uniformly
    distributed, as in torch)."""
    array = _array(tensor)
    if array.ndim < 2:
        raise ValueError("Only tensors with 2 or more dimensions are supported")
    if array.size == 0:
        return tensor
    rows, cols = array.shape[0], array.size // array.shape[0]
    flattened = _rng(generator).standard_normal((rows, cols))
    q, r = np.linalg.qr(flattened.T if rows < cols else flattened)
    q *= np.sign(np.diag(r))
    array[...] = (gain * (q.T if rows < cols else q)).reshape(array.shape)
    return tensor


def dirac_(tensor: ArrayLike, groups: int = 1) -> ArrayLike:
    """A conv weight that passes its input through: 1 at the kernel's centre from input channel d
    to output channel d of each group (for d below both counts), 0 elsewhere."""
    array = _array(tensor)
    if array.ndim not in (3, 4, 5):
        raise ValueError("Only tensors with 3, 4, or 5 dimensions are supported")
    if array.shape[0] % groups != 0:
        raise ValueError("dim 0 must be divisible by groups")
    per_group = array.shape[0] // groups
    centre = tuple(side // 2 for side in array.shape[2:])
    array[...] = 0
    for group in range(groups):
        for d in range(min(per_group, array.shape[1])):
            array[(group * per_group + d, d, *centre)] = 1
    return tensor


def sparse_(tensor: ArrayLike, sparsity: float, std: float = 0.01,
            generator: np.random.Generator | None = None) -> ArrayLike:
    """N(0, std^2) with ceil(sparsity * rows) random entries of each column set to 0 (2-D only)."""
    array = _array(tensor)
    if array.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    rng = _rng(generator)
    normal_(tensor, 0.0, std, rng)
    rows, cols = array.shape
    zeros = math.ceil(sparsity * rows)
    for column in range(cols):
        array[rng.permutation(rows)[:zeros], column] = 0
    return tensor


def _normal_cdf(x: float, mean: float, std: float) -> float:
    return (1.0 + math.erf((x - mean) / std / math.sqrt(2.0))) / 2.0


def constant_(tensor: ArrayLike, val: float) -> ArrayLike:
    _array(tensor)[...] = val
    return tensor


def ones_(tensor: ArrayLike) -> ArrayLike:
    return constant_(tensor, 1.0)


def zeros_(tensor: ArrayLike) -> ArrayLike:
    return constant_(tensor, 0.0)


def eye_(tensor: ArrayLike) -> ArrayLike:
    """The identity matrix (ones on the main diagonal of a 2-D array, also a non-square one)."""
    array = _array(tensor)
    if array.ndim != 2:
        raise ValueError("Only tensors with 2 dimensions are supported")
    array[...] = np.eye(*array.shape)
    return tensor


def xavier_uniform_(tensor: ArrayLike, gain: float = 1.0, generator: np.random.Generator | None = None) -> ArrayLike:
    """U(-a, a), a = gain * sqrt(6 / (fan_in + fan_out)): the variance 2 / (fan_in + fan_out) times gain^2."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    bound = math.sqrt(3.0) * gain * math.sqrt(2.0 / float(fan_in + fan_out))
    return uniform_(tensor, -bound, bound, generator)


def xavier_normal_(tensor: ArrayLike, gain: float = 1.0, generator: np.random.Generator | None = None) -> ArrayLike:
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = _calculate_fan_in_and_fan_out(tensor)
    return normal_(tensor, 0.0, gain * math.sqrt(2.0 / float(fan_in + fan_out)), generator)


def _kaiming_std(tensor: ArrayLike, a: float, mode: str, nonlinearity: str) -> float | None:
    """gain / sqrt(fan), or None (after torch's warning) for a zero-element array, left as it is."""
    if 0 in _array(tensor).shape:
        warnings.warn("Initializing zero-element tensors is a no-op", stacklevel=3)
        return None
    return calculate_gain(nonlinearity, a) / math.sqrt(_calculate_correct_fan(tensor, mode))


def kaiming_uniform_(tensor: ArrayLike, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                     generator: np.random.Generator | None = None) -> ArrayLike:
    """U(-bound, bound), bound = sqrt(3) * gain / sqrt(fan), gain = calculate_gain(nonlinearity, a)."""
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    return tensor if std is None else uniform_(tensor, -math.sqrt(3.0) * std, math.sqrt(3.0) * std, generator)


def kaiming_normal_(tensor: ArrayLike, a: float = 0.0, mode: str = "fan_in", nonlinearity: str = "leaky_relu",
                    generator: np.random.Generator | None = None) -> ArrayLike:
    """N(0, std^2), std = gain / sqrt(fan), gain = calculate_gain(nonlinearity, a)."""
    std = _kaiming_std(tensor, a, mode, nonlinearity)
    return tensor if std is None else normal_(tensor, 0.0, std, generator)
