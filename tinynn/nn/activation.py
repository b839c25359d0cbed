"""Elementwise activations, each a textbook forward beside its backward, then their modules.

``y = f(x)`` entry by entry, so every backward is ``dX = dY * f'(x)``; the docstrings give f'.
What a backward reads is chosen per op, and each says why:

* the OUTPUT where it alone determines f' (relu, sigmoid, tanh, hardtanh): the module keeps one
  array, and an in-place forward, which overwrites the input, loses nothing;
* the INPUT where it does not (gelu, silu, softplus), or where torch's formula uses it (leaky_relu
  and elu; after an in-place forward they read the output, as torch does).

At a kink each backward takes torch's side: relu, leaky_relu and elu the left one at x = 0 (0,
the slope, alpha), hardtanh 0 at both bounds. NaN and +-inf give what torch gives, without NumPy's
warnings (each ``np.errstate`` says why). Except where torch 2.13's CPU answer depends on the entry's
position (its vectorized loop and the scalar one for an array's last entries differ): elu's and
hardtanh's gradients at a NaN input (tinynn: NaN and 0, the vectorized loop's) and float32 gelu(+inf)
(tinynn: inf). Scalars such as ``negative_slope`` stay Python floats, so float32 stays float32.
"""

from __future__ import annotations

import math

import numpy as np

from tinynn._dtype import torch_name
from tinynn._textbook import is_textbook
from tinynn.nn._special import erf
from tinynn.nn.module import Module

_SQRT1_2 = math.sqrt(0.5)
_INV_SQRT_2PI = 1 / math.sqrt(2 * math.pi)  # the normal density's factor, torch's kBeta
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)  # gelu's tanh approximation (torch's kBeta there)
_KAPPA = 0.044715


def _floating_only(input: np.ndarray, kernel: str) -> None:
    """torch's refusal of an integer or bool input (its CPU kernels exist for floating types only),
    instead of NumPy's silent promotion to float64."""
    dtype = np.asarray(input).dtype
    if dtype.kind not in "fc":
        raise NotImplementedError(f'"{kernel}" not implemented for \'{torch_name(dtype)}\'')


def _write(input: np.ndarray, output: np.ndarray, inplace: bool) -> np.ndarray:
    """``output``, or with ``inplace`` the input overwritten with it (and returned), as torch's ``op_``."""
    if not inplace:
        return output
    input[...] = output
    return input


def relu(input: np.ndarray, inplace: bool = False) -> np.ndarray:
    """max(x, 0) elementwise; same shape and dtype as ``input``.

    With ``inplace=True`` the result is written into ``input`` and ``input`` is returned.
    """
    if not is_textbook():
        from tinynn._engine import elementwise as engine  # ENGINE DISPATCH: the same maximum, with no scalar

        return engine.relu(input, inplace)
    return np.maximum(input, 0, out=input) if inplace else np.maximum(input, 0)


def relu_backward(grad_output: np.ndarray, output: np.ndarray) -> np.ndarray:
    """dX = dY where y > 0, else 0 (torch's choice at exactly 0 is 0), from relu's output y.

    Written as torch's ``threshold_backward``: ``where(y <= 0, 0, dY)``, so a NaN upstream gradient
    at an inactive unit still gives 0, and a NaN output passes dY on.
    """
    if not is_textbook():
        from tinynn._engine import elementwise as engine  # ENGINE DISPATCH: the mask as a product

        return engine.relu_backward(grad_output, output)
    return np.where(output <= 0, 0, grad_output)


@np.errstate(over="ignore")  # exp(-x) = inf for x < -709 gives 1 / (1 + inf) = 0: the right limit, as torch
def sigmoid(input: np.ndarray) -> np.ndarray:
    """y = 1 / (1 + exp(-x)); same shape and dtype. Never NaN for finite x (the overflow is harmless)."""
    return 1 / (1 + np.exp(-input))


@np.errstate(invalid="ignore")  # inf * 0 is NaN, silently, as in torch
def sigmoid_backward(grad_output: np.ndarray, output: np.ndarray) -> np.ndarray:
    """dX = dY * y * (1 - y), from the output y: sigma' = sigma * (1 - sigma)."""
    return grad_output * (1 - output) * output


def tanh(input: np.ndarray) -> np.ndarray:
    """y = tanh(x); same shape and dtype."""
    return np.tanh(input)


@np.errstate(invalid="ignore")  # inf * 0 is NaN, silently, as in torch
def tanh_backward(grad_output: np.ndarray, output: np.ndarray) -> np.ndarray:
    """dX = dY * (1 - y^2), from the output y: tanh' = 1 - tanh^2."""
    return grad_output * (1 - output * output)


@np.errstate(invalid="ignore")  # inf * 0 is NaN, silently, as in torch
def leaky_relu(input: np.ndarray, negative_slope: float = 0.01, inplace: bool = False) -> np.ndarray:
    """y = x if x > 0 else negative_slope * x (NaN stays NaN); in place writes into ``input``."""
    _floating_only(input, "leaky_relu_cpu")
    return _write(input, np.where(input > 0, input, input * negative_slope), inplace)


@np.errstate(invalid="ignore")  # inf * 0 is NaN, silently, as in torch
def leaky_relu_backward(grad_output: np.ndarray, input_or_output: np.ndarray, negative_slope: float,
                        is_result: bool = False) -> np.ndarray:
    """dX = dY where x > 0, else negative_slope * dY (at x = 0 and NaN too, as torch).

    Reads the input x, or with ``is_result`` the output y (after an in-place forward): y > 0
    exactly where x > 0 only if the slope is not negative, so torch refuses a negative one there.
    """
    if is_result and negative_slope < 0:
        raise RuntimeError(
            "In-place leakyReLu backward calculation is triggered with a negative slope which is not supported. This "
            "is caused by calling in-place forward function with a negative slope, please call out-of-place version "
            "instead. File an issue at https://github.com/pytorch/pytorch if you do require supporting in-place "
            "leakRelu backward calculation with negative slope"
        )
    return np.where(input_or_output > 0, grad_output, grad_output * negative_slope)


def elu(input: np.ndarray, alpha: float = 1.0, inplace: bool = False) -> np.ndarray:
    """y = x if x > 0 else alpha * (exp(x) - 1), through expm1 (exact for tiny x); NaN stays NaN."""
    _floating_only(input, "elu_cpu")
    # Positive entries zeroed first (their branch is discarded; expm1(1000) would overflow); -0 and NaN kept.
    negative = alpha * np.expm1(np.where(input > 0, 0, input))
    return _write(input, np.where(input > 0, input, negative), inplace)


@np.errstate(invalid="ignore")  # inf * 0 is NaN, silently, as in torch
def elu_backward(grad_output: np.ndarray, input_or_output: np.ndarray, alpha: float,
                 is_result: bool = False) -> np.ndarray:
    """dX = dY where x > 0, else dY * alpha * exp(x) (alpha at x = 0; NaN at NaN, see the module docstring).

    With ``is_result`` it reads the output y (after an in-place forward): for x <= 0,
    alpha * exp(x) = y + alpha; y <= 0 exactly where x <= 0 only if alpha >= 0, hence torch's refusal.
    """
    if is_result:
        if alpha < 0:
            raise RuntimeError(
                "In-place elu backward calculation is triggered with a negative slope which is not supported. "
                "This is caused by calling in-place forward function with a negative slope, please call "
                "out-of-place version instead."
            )
        return np.where(input_or_output > 0, grad_output, grad_output * (input_or_output + alpha))
    return np.where(input_or_output > 0, grad_output, grad_output * alpha * np.exp(np.minimum(input_or_output, 0)))


def _check_approximate(approximate: str) -> None:  # torch checks at each call, not in GELU()
    if approximate not in ("none", "tanh"):
        raise RuntimeError("approximate argument must be either none or tanh.")


@np.errstate(over="ignore", invalid="ignore")  # x^3 = inf for |x| > 1e102 (tanh(inf) = 1); -inf * 0 is NaN, as torch
def gelu(input: np.ndarray, approximate: str = "none") -> np.ndarray:
    """y = x * Phi(x), Phi the standard normal CDF: Phi(x) = (1 + erf(x / sqrt(2))) / 2.

    ``approximate='tanh'``: Phi(x) ~ (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3))) / 2. Written as torch
    writes it, ``1 + erf``, which loses the tail for x < -5 in both (gelu(-10) is -0), so they agree.
    """
    _check_approximate(approximate)
    _floating_only(input, "GeluKernelImpl")
    if approximate == "tanh":
        return 0.5 * input * (1 + np.tanh(_SQRT_2_OVER_PI * (input + _KAPPA * input * input * input)))
    return input * 0.5 * (1 + erf(input * _SQRT1_2))


@np.errstate(over="ignore", invalid="ignore")  # as in gelu
def gelu_backward(grad_output: np.ndarray, input: np.ndarray, approximate: str = "none") -> np.ndarray:
    """dX = dY * (Phi(x) + x * phi(x)), phi(x) = exp(-x^2 / 2) / sqrt(2 pi) the normal density.

    From the input (gelu is not monotonic: y cannot give x back). ``approximate='tanh'``, with
    t = tanh(sqrt(2/pi) (x + 0.044715 x^3)): dX = dY * ((1 + t) / 2 + x / 2 * (1 - t^2) * sqrt(2/pi) *
    (1 + 3 * 0.044715 x^2)).
    """
    _check_approximate(approximate)
    if approximate == "tanh":
        inner = _SQRT_2_OVER_PI * (input + _KAPPA * input * input * input)
        tanh_inner = np.tanh(inner)
        slope = (0.5 * input) * (1 - tanh_inner * tanh_inner) * (_SQRT_2_OVER_PI * (1 + 3 * _KAPPA * input * input))
        return grad_output * (0.5 * (1 + tanh_inner) + slope)
    cdf = 0.5 * (1 + erf(input * _SQRT1_2))
    pdf = _INV_SQRT_2PI * np.exp(input * input * -0.5)
    return grad_output * (cdf + input * pdf)


@np.errstate(over="ignore", invalid="ignore")  # exp(-x) = inf: x / inf = -0; at x = -inf, -inf / inf is NaN, as torch
def silu(input: np.ndarray, inplace: bool = False) -> np.ndarray:
    """y = x * sigmoid(x), computed as torch does: x / (1 + exp(-x))."""
    _floating_only(input, "silu_cpu")
    return _write(input, input / (1 + np.exp(-input)), inplace)


@np.errstate(over="ignore", invalid="ignore")  # as in silu; +-inf inputs give NaN, as torch
def silu_backward(grad_output: np.ndarray, input: np.ndarray) -> np.ndarray:
    """dX = dY * s * (1 + x * (1 - s)), s = sigmoid(x): the product rule on x * s, with s' = s (1 - s).

    From the input: silu falls to its minimum at x = -1.28 and rises after, so two inputs can share
    an output and y cannot give x back; an in-place SiLU keeps a copy of its input for this.
    """
    sigmoid_x = 1 / (1 + np.exp(-input))
    return grad_output * sigmoid_x * (1 + input * (1 - sigmoid_x))


@np.errstate(over="ignore")  # exp(beta x) overflows only where x * beta > threshold, whose branch is x itself
def softplus(input: np.ndarray, beta: float = 1.0, threshold: float = 20.0) -> np.ndarray:
    """y = log(1 + exp(beta x)) / beta, or x where beta x > threshold (torch's rule: there the two
    differ by less than exp(-threshold) / beta, and exp would overflow for large x)."""
    _floating_only(input, "softplus_cpu")
    scaled = input * beta
    return np.where(scaled > threshold, input, np.log1p(np.exp(scaled)) / beta)


@np.errstate(over="ignore", invalid="ignore")  # inf / inf in the discarded branch, as in softplus
def softplus_backward(grad_output: np.ndarray, input: np.ndarray, beta: float = 1.0,
                      threshold: float = 20.0) -> np.ndarray:
    """dX = dY * sigmoid(beta x) = dY * z / (z + 1), z = exp(beta x); dY itself where beta x > threshold.

    From the input: torch's formula reads it; exp(beta x) = expm1(beta y) from y is inexact for tiny y.
    """
    scaled = input * beta
    exp_scaled = np.exp(scaled)
    return np.where(scaled > threshold, grad_output, grad_output * exp_scaled / (exp_scaled + 1))


def hardtanh(input: np.ndarray, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> np.ndarray:
    """y = clamp(x, min_val, max_val); NaN stays NaN. Raises ValueError if min_val > max_val, as torch."""
    if min_val > max_val:
        raise ValueError("min_val cannot be greater than max_val")
    return np.clip(input, min_val, max_val, out=input if inplace else None)


def hardtanh_backward(grad_output: np.ndarray, output: np.ndarray, min_val: float = -1.0,
                      max_val: float = 1.0) -> np.ndarray:
    """dX = dY strictly inside (min_val, max_val), else 0: at a bound too (torch's
    ``hardtanh_backward``), and at NaN (see the module docstring).

    From the output y: y lies strictly inside exactly where x does (outside, y sits on a bound),
    so the in-place module needs no copy of its input.
    """
    return np.where((output > min_val) & (output < max_val), grad_output, 0)


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


class Sigmoid(Module):
    """sigmoid elementwise; keeps its output, all the backward needs."""

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = sigmoid(input)
        self.save_for_backward(output)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (output,) = self.saved_tensors()
        return sigmoid_backward(grad_output, output) if needs_input_grad else None


class Tanh(Module):
    """tanh elementwise; keeps its output, all the backward needs."""

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = tanh(input)
        self.save_for_backward(output)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (output,) = self.saved_tensors()
        return tanh_backward(grad_output, output) if needs_input_grad else None


class LeakyReLU(Module):
    """leaky_relu elementwise; keeps its input, or its output when in place (the input is gone)."""

    def __init__(self, negative_slope: float = 1e-2, inplace: bool = False) -> None:
        super().__init__()
        self.negative_slope = negative_slope
        self.inplace = inplace

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = leaky_relu(input, self.negative_slope, self.inplace)
        self.save_for_backward(output if self.inplace else input, self.inplace)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        saved, is_result = self.saved_tensors()
        return leaky_relu_backward(grad_output, saved, self.negative_slope, is_result) if needs_input_grad else None

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}" + (", inplace=True" if self.inplace else "")


class ELU(Module):
    """elu elementwise; keeps its input, or its output when in place (backward from y + alpha)."""

    def __init__(self, alpha: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        self.alpha = alpha
        self.inplace = inplace

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = elu(input, self.alpha, self.inplace)
        self.save_for_backward(output if self.inplace else input, self.inplace)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        saved, is_result = self.saved_tensors()
        return elu_backward(grad_output, saved, self.alpha, is_result) if needs_input_grad else None

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}" + (", inplace=True" if self.inplace else "")


class GELU(Module):
    """gelu elementwise (``approximate`` 'none' or 'tanh', checked at forward as in torch); keeps its input."""

    def __init__(self, approximate: str = "none") -> None:
        super().__init__()
        self.approximate = approximate

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = gelu(input, self.approximate)
        self.save_for_backward(input)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (input,) = self.saved_tensors()
        return gelu_backward(grad_output, input, self.approximate) if needs_input_grad else None

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class SiLU(Module):
    """silu elementwise; keeps its input (a copy of it when in place: the output cannot give x back)."""

    def __init__(self, inplace: bool = False) -> None:
        super().__init__()
        self.inplace = inplace

    def forward(self, input: np.ndarray) -> np.ndarray:
        self.save_for_backward(input.copy() if self.inplace else input)
        return silu(input, self.inplace)

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (input,) = self.saved_tensors()
        return silu_backward(grad_output, input) if needs_input_grad else None

    def extra_repr(self) -> str:
        return "inplace=True" if self.inplace else ""


class Softplus(Module):
    """softplus elementwise, x itself where beta * x > threshold; keeps its input."""

    def __init__(self, beta: float = 1.0, threshold: float = 20.0) -> None:
        super().__init__()
        self.beta = beta
        self.threshold = threshold

    def forward(self, input: np.ndarray) -> np.ndarray:
        self.save_for_backward(input)
        return softplus(input, self.beta, self.threshold)

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (input,) = self.saved_tensors()
        return softplus_backward(grad_output, input, self.beta, self.threshold) if needs_input_grad else None

    def extra_repr(self) -> str:
        return f"beta={self.beta}, threshold={self.threshold}"


class Hardtanh(Module):
    """clamp(x, min_val, max_val) elementwise; keeps its output (enough, in place or not)."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False) -> None:
        super().__init__()
        if max_val <= min_val:  # torch's module insists on a non-empty linear region (F.hardtanh does not)
            raise AssertionError(f"max_val ({max_val}) must be greater than min_val ({min_val})")
        self.min_val = min_val
        self.max_val = max_val
        self.inplace = inplace

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = hardtanh(input, self.min_val, self.max_val, self.inplace)
        self.save_for_backward(output)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (output,) = self.saved_tensors()
        return hardtanh_backward(grad_output, output, self.min_val, self.max_val) if needs_input_grad else None

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}" + (", inplace=True" if self.inplace else "")
