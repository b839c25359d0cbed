r"""Gradient clipping: ``clip_grad_norm_`` and ``clip_grad_value_``, as in ``torch.nn.utils``.

With the gradients ``g_1, ..., g_k`` of the parameters that have one, and ``p`` the norm type, the
*total norm* is the p-norm of the per-gradient p-norms (the p-norm of all entries as one vector)::

    n_i   = ||g_i||_p = (sum_j |g_ij|^p)^(1/p)        (max_j |g_ij| for p = inf, min_j for -inf,
    total = ||(n_1, ..., n_k)||_p                       the count of nonzero entries for p = 0)

and clipping scales every gradient, in place, by one coefficient::

    coef = min(max_norm / (total + 1e-6), 1)            g_i <- coef * g_i

so that afterwards the total norm is at most about ``max_norm``; gradients are never scaled up,
and ``1e-6`` keeps the division finite when every gradient is zero. ``clip_grad_value_`` clamps
every entry into ``[-clip_value, clip_value]`` instead.

The sums are NumPy's, so the last bits may differ from torch's, which adds in its own order.
"""

from __future__ import annotations

import math
import types
import warnings
from collections.abc import Iterable

import numpy as np

from tinynn.nn.parameter import Parameter

__all__ = ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_", "get_total_norm"]


def _format_ord(norm_type: float) -> str:
    return "inf" if norm_type == math.inf else "-inf" if norm_type == -math.inf else f"{norm_type:g}"


@np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore")  # inf and NaN as torch gives them
def vector_norm(x: np.ndarray, norm_type: float = 2.0, foreach: bool | None = False) -> np.ndarray:
    """``||x||_p`` over all entries, a 0-d array of ``x``'s dtype (``torch.linalg.vector_norm``;
    ``foreach`` only words an error as ``torch._foreach_norm`` does)."""
    if x.size == 0:
        if norm_type == math.inf and foreach is not False:
            raise RuntimeError("_foreach_norm cannot compute the infinity norm on an empty tensor because the "
                               "operation does not have an identity")
        if norm_type < 0 or norm_type == math.inf:
            raise RuntimeError(f"linalg.vector_norm cannot compute the {_format_ord(norm_type)} norm on an empty "
                               "tensor because the operation does not have an identity")
        return np.zeros((), x.dtype)
    if x.size == 1:  # one entry's norm is its magnitude, whatever p is (torch's too: no square to overflow)
        return np.asarray(np.abs(x) if norm_type != 0 else x != 0, dtype=x.dtype).reshape(())
    magnitudes = np.abs(x)
    if norm_type == math.inf:
        norm = magnitudes.max()
    elif norm_type == -math.inf:
        norm = magnitudes.min()
    elif norm_type == 0:
        norm = np.count_nonzero(x)
    elif norm_type == 1:
        norm = magnitudes.sum()
    elif norm_type == 2:
        norm = np.sqrt(np.sum(magnitudes * magnitudes))
    else:
        norm = np.sum(magnitudes ** norm_type) ** (1 / norm_type)
    return np.asarray(norm, dtype=x.dtype)


def get_total_norm(tensors: np.ndarray | Iterable[np.ndarray], norm_type: float = 2.0,
                   error_if_nonfinite: bool = False, foreach: bool | None = None) -> np.ndarray:
    r"""The p-norm of the p-norms of ``tensors`` (``torch.nn.utils.get_total_norm``): a 0-d array
    in their widest dtype (a float32 zero for no tensors, torch's default dtype).

    ``error_if_nonfinite``: raise if the total is NaN or infinite. ``foreach`` is accepted for
    torch's signature and changes nothing.
    """
    tensors = [tensors] if isinstance(tensors, np.ndarray) else list(tensors)
    norm_type = float(norm_type)
    if len(tensors) == 0:
        return np.zeros((), np.float32)
    norms = [vector_norm(tensor, norm_type, foreach) for tensor in tensors]
    total = vector_norm(np.stack(norms).astype(np.result_type(*norms)), norm_type)
    if error_if_nonfinite and not np.isfinite(total):
        raise RuntimeError(
            f"The total norm of order {norm_type} for gradients from `parameters` is non-finite, so it cannot be "
            "clipped. To disable this error and scale the gradients by the non-finite norm anyway, set "
            "`error_if_nonfinite=False`"
        )
    return total


def _as_list(parameters: Parameter | Iterable[Parameter]) -> list[Parameter]:
    return [parameters] if isinstance(parameters, Parameter) else list(parameters)


@np.errstate(over="ignore", invalid="ignore")
def clip_grads_with_norm_(parameters: Parameter | Iterable[Parameter], max_norm: float, total_norm: np.ndarray,
                          foreach: bool | None = None) -> None:
    """Multiply every gradient in place by ``min(max_norm / (total_norm + 1e-6), 1)``, in the
    gradient's own dtype (``torch.nn.utils.clip_grads_with_norm_``); a NaN total gives NaNs."""
    grads = [p.grad for p in _as_list(parameters) if p.grad is not None]
    if not grads:
        return
    coef = np.minimum(float(max_norm) / (np.asarray(total_norm) + 1e-6), 1.0)  # NaN stays NaN
    for grad in grads:
        grad *= coef.astype(grad.dtype)


def clip_grad_norm_(parameters: Parameter | Iterable[Parameter], max_norm: float, norm_type: float = 2.0,
                    error_if_nonfinite: bool = False, foreach: bool | None = None) -> np.ndarray:
    """Clip the gradients' total norm to ``max_norm``, in place, and return the total norm before
    clipping (``torch.nn.utils.clip_grad_norm_``; see the module's docstring for the maths).

    ``parameters``: a Parameter or an iterable of them; those whose ``grad`` is None are skipped.
    ``norm_type``: any float, ``inf`` for the largest entry. ``error_if_nonfinite``: raise instead
    of scaling by a NaN or infinite total.
    """
    max_norm, norm_type = float(max_norm), float(norm_type)  # refused here, as in torch, if not numbers
    if isinstance(parameters, types.GeneratorType):
        parameters = list(parameters)
        if not parameters:
            warnings.warn("`parameters` is an empty generator, no gradient clipping will occur.", stacklevel=2)
    parameters = _as_list(parameters)
    grads = [p.grad for p in parameters if p.grad is not None]
    total_norm = get_total_norm(grads, norm_type, error_if_nonfinite, foreach)
    clip_grads_with_norm_(parameters, max_norm, total_norm, foreach)
    return total_norm


def clip_grad_value_(parameters: Parameter | Iterable[Parameter], clip_value: float,
                     foreach: bool | None = None) -> None:
    """Clamp every gradient entry into ``[-clip_value, clip_value]``, in place
    (``torch.nn.utils.clip_grad_value_``); NaN entries stay NaN."""
    clip_value = float(clip_value)
    grads = [param.grad for param in _as_list(parameters) if param.grad is not None]
    if not grads:  # torch's grouping of the gradients refuses an empty list (an internal check, in its words)
        raise RuntimeError("Expected !nested_tensorlist[0].empty() to be true, but got false.  (Could this error "
                           "message be improved?  If so, please report an enhancement request to PyTorch.)")
    if (math.isfinite(clip_value) and abs(clip_value) > float(np.finfo(np.float32).max)
            and any(grad.dtype == np.float32 for grad in grads)):
        # torch's words; it refuses only on reaching a float32 gradient, having clamped others: here
        # nothing is changed first.
        raise RuntimeError("value cannot be converted to type float without overflow")
    for grad in grads:
        np.clip(grad, -clip_value, clip_value, out=grad)
