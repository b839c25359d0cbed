"""Scaled dot-product attention: the forward and its hand-written backward, as torch's
``F.scaled_dot_product_attention``. ``MultiheadAttention`` (multihead_attention.py) is built on
the same two core functions, ``attention_forward`` and ``attention_backward``.

For queries Q (L, E), keys K (S, E) and values V (S, Ev) (any leading batch dims):

    S = scale * Q K^T + M          scores (L, S); scale = 1 / sqrt(E) unless given
    P = softmax(S) along keys      each row sums to 1
    W = P * noise                  dropout of the probabilities (noise = keep / (1 - p)); W = P without
    O = W V                        (L, Ev)

M is the additive mask: 0 where query i may look at key j, -inf where not (a bool mask's False,
or j > i with ``is_causal``), or a float mask as given. The backward, from the upstream dO:

    dV = W^T dO
    dW = dO V^T   (+ the gradient of W itself, when the weights are an output: MultiheadAttention)
    dP = dW * noise
    dS = P * (dP - rowsum(dP * P))   softmax's Jacobian applied row by row (softmax_backward)
    dQ = scale * dS K
    dK = scale * dS^T Q

Fully masked rows: torch's documented reference takes the softmax of a row of -inf, which is
NaN. torch 2.13's CPU kernels do not: they use ``aten._safe_softmax``, which gives probabilities
0 to a row whose scores are all -inf, so that row's output is 0 and it passes no gradient. tinynn
matches the kernels (``safe=True`` below). MultiheadAttention with ``need_weights=True`` runs its
own plain softmax in torch and gives NaN there; it passes ``safe=False`` to match.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinynn.nn.dropout import dropout_noise
from tinynn.nn.softmax import softmax, softmax_backward

# torch's C++ names of dtypes, as its SDPA errors print them.
_CPP_NAMES = {"float32": "float", "float64": "double", "float16": "c10::Half", "int64": "long int",
              "int32": "int", "int16": "short int", "int8": "signed char", "uint8": "unsigned char", "bool": "bool"}


def _cpp_name(dtype: np.dtype) -> str:
    return _CPP_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)


def _check_sdpa_args(query: Any, key: Any, value: Any, attn_mask: Any, is_causal: bool) -> None:
    """torch's argument errors, before any arithmetic."""
    for name, array in (("query", query), ("key", key), ("value", value)):
        if not isinstance(array, np.ndarray):
            raise TypeError(f"scaled_dot_product_attention(): argument '{name}' must be a NumPy array, "
                            f"not {type(array).__name__}")
    if query.dtype != key.dtype or query.dtype != value.dtype:
        raise RuntimeError(
            f"Expected query, key, and value to have the same dtype, but got query.dtype: {_cpp_name(query.dtype)} "
            f"key.dtype: {_cpp_name(key.dtype)} and value.dtype: {_cpp_name(value.dtype)} instead.")
    if min(query.ndim, key.ndim, value.ndim) < 2:
        raise RuntimeError(
            "Expected query, key, and value to all be  at least 2 dimensional, but got query.dim: "
            f"{query.ndim} key.dim: {key.ndim} and value.dim: {value.ndim} instead.")
    if query.dtype.kind != "f":
        raise TypeError(f"scaled_dot_product_attention(): expected floating-point inputs, got {query.dtype}")
    if attn_mask is not None:
        if is_causal:
            raise RuntimeError(
                "_scaled_dot_product_attention: Explicit attn_mask should not be set when is_causal=True")
        if attn_mask.dtype not in (np.bool_, np.float32, query.dtype):
            raise RuntimeError(
                "Expected attn_mask dtype to be bool or float or to match query dtype, but got attn_mask.dtype: "
                f"{_cpp_name(attn_mask.dtype)} and  query.dtype: {_cpp_name(query.dtype)} instead.")
    if query.shape[-1] != key.shape[-1] or key.shape[-2] != value.shape[-2]:
        raise RuntimeError(
            f"scaled_dot_product_attention(): query (..., L, E) {query.shape}, key (..., S, E) {key.shape} and "
            f"value (..., S, Ev) {value.shape} do not fit: query and key need the same E, key and value the same S")


def attention_bias(target_len: int, source_len: int, attn_mask: np.ndarray | None, is_causal: bool,
                   dtype: np.dtype) -> np.ndarray | None:
    """M, the float mask added to the scores: (L, S) or the mask's broadcastable shape; None for no mask.

    A bool mask: 0 where True (the pair takes part), -inf where False. A float mask: itself (in
    the query's dtype). ``is_causal``: -inf above the diagonal of the (L, S) grid, top-left aligned
    (query i sees keys 0..i), as torch's ``tril``.
    """
    if is_causal:
        allowed = np.tril(np.ones((target_len, source_len), dtype=bool))
        return np.where(allowed, 0.0, -np.inf).astype(dtype)
    if attn_mask is None:
        return None
    if attn_mask.dtype == np.bool_:
        return np.where(attn_mask, 0.0, -np.inf).astype(dtype)
    return attn_mask.astype(dtype, copy=False)


def _repeat_heads(array: np.ndarray, heads: int) -> np.ndarray:
    """enable_gqa: each key/value head serves ``heads // array.shape[-3]`` query heads in a row
    (torch's ``repeat_interleave`` along dim -3)."""
    if array.ndim < 3 or heads % array.shape[-3] != 0:
        raise RuntimeError("Number of heads in key and value must divide the number of heads in query "
                           f"(query has {heads} heads, key/value {array.shape[-3] if array.ndim >= 3 else 1})")
    return np.repeat(array, heads // array.shape[-3], axis=-3)


def _sum_heads(grad: np.ndarray, kv_heads: int) -> np.ndarray:
    """The backward of ``_repeat_heads``: each key/value head sums the gradients of its query heads."""
    groups = grad.shape[-3] // kv_heads
    return grad.reshape(*grad.shape[:-3], kv_heads, groups, *grad.shape[-2:]).sum(axis=-3)


def _sum_to_shape(grad: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Undo broadcasting: sum ``grad`` over the leading dims that ``shape`` lacks or has as 1."""
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape)))) if grad.ndim > len(shape) else grad
    axes = tuple(i for i, side in enumerate(shape) if side == 1 and grad.shape[i] != 1)
    return grad.sum(axis=axes, keepdims=True) if axes else grad


def attention_dropout_noise(query: np.ndarray, key: np.ndarray, dropout_p: float) -> np.ndarray | None:
    """The dropout noise (keep / (1 - p), shape (..., L, S)) for the attention probabilities of
    ``query`` and ``key``, drawn now from tinynn's generator (``tinynn.nn.dropout.dropout_noise``);
    None for p == 0. Pass it as ``noise`` to the forward and to the backward."""
    shape = (*np.broadcast_shapes(query.shape[:-2], key.shape[:-2]), query.shape[-2], key.shape[-2])
    return dropout_noise(np.empty(shape, dtype=query.dtype), dropout_p, training=True)


@np.errstate(invalid="ignore", over="ignore")  # -inf scores and NaN rows stay silent, as in torch
def attention_forward(query: np.ndarray, key: np.ndarray, value: np.ndarray, bias: np.ndarray | None,
                      scale: float, noise: np.ndarray | None = None,
                      safe: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The core: O = W V with W = softmax(scale * Q K^T + M) * noise (noise None: no dropout).

    Shapes: query (..., L, E), key (..., S, E), value (..., S, Ev), bias broadcastable to
    (..., L, S). ``safe``: rows whose scores are all -inf get probabilities 0 (torch's SDPA
    kernels), else NaN (a plain softmax). Returns (output (..., L, Ev), P, W), P and W (..., L, S).
    """
    scores = query @ np.swapaxes(key, -2, -1) * scale
    if bias is not None:
        scores = scores + bias
    probs = softmax(scores, -1)
    if safe and probs.size:
        fully_masked = np.all(scores == -np.inf, axis=-1, keepdims=True)
        probs = np.where(fully_masked, 0.0, probs).astype(probs.dtype, copy=False)
    weights = probs if noise is None else probs * noise
    return weights @ value, probs, weights


@np.errstate(invalid="ignore", over="ignore")  # NaN rows (need_weights' plain softmax) stay silent
def attention_backward(grad_output: np.ndarray, query: np.ndarray, key: np.ndarray, value: np.ndarray,
                       probs: np.ndarray, scale: float, noise: np.ndarray | None = None,
                       grad_weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The core's backward (see the module docstring), from the forward's P and noise.

    ``grad_weights``: dL/dW where W itself is an output (MultiheadAttention's attn_weights), added
    to dO V^T. Returns (dQ, dK, dV), in the broadcast batch shape (the caller sums to its inputs).
    """
    weights = probs if noise is None else probs * noise
    grad_value = np.swapaxes(weights, -2, -1) @ grad_output
    grad_weights_total = grad_output @ np.swapaxes(value, -2, -1)
    if grad_weights is not None:
        grad_weights_total = grad_weights_total + grad_weights
    grad_probs = grad_weights_total if noise is None else grad_weights_total * noise
    grad_scores = softmax_backward(grad_probs, probs, -1)
    grad_query = scale * (grad_scores @ key)
    grad_key = scale * (np.swapaxes(grad_scores, -2, -1) @ query)
    return grad_query, grad_key, grad_value


def _prepare(query: np.ndarray, key: np.ndarray, value: np.ndarray, attn_mask: np.ndarray | None,
             is_causal: bool, scale: float | None,
             enable_gqa: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, float]:
    """Checks, then (key, value) with GQA heads repeated, the bias M and the scale."""
    _check_sdpa_args(query, key, value, attn_mask, is_causal)
    if enable_gqa:
        key, value = _repeat_heads(key, query.shape[-3]), _repeat_heads(value, query.shape[-3])
    bias = attention_bias(query.shape[-2], key.shape[-2], attn_mask, is_causal, query.dtype)
    scale = 1 / math.sqrt(query.shape[-1]) if scale is None else scale
    return key, value, bias, scale


def scaled_dot_product_attention(query: np.ndarray, key: np.ndarray, value: np.ndarray,
                                 attn_mask: np.ndarray | None = None, dropout_p: float = 0.0,
                                 is_causal: bool = False, scale: float | None = None, enable_gqa: bool = False,
                                 *, noise: np.ndarray | None = None) -> np.ndarray:
    """softmax(scale * Q K^T + M) V, as torch's ``F.scaled_dot_product_attention``.

    Shapes: query (..., L, E), key (..., S, E), value (..., S, Ev) -> (..., L, Ev); batch dims
    broadcast. ``attn_mask`` broadcastable to (..., L, S): bool (True = takes part) or float (added
    to the scores). ``is_causal``: query i sees keys 0..i (an error together with ``attn_mask``).
    ``scale``: default 1 / sqrt(E). ``enable_gqa``: key and value may have fewer heads (dim -3)
    than query, each shared by consecutive query heads. Fully masked rows give 0 (module docstring).

    Dropout, as torch, is applied whenever ``dropout_p`` > 0 (pass 0.0 in eval mode). To
    backpropagate through it, draw ``noise = attention_dropout_noise(query, key, dropout_p)`` and
    pass it here and to the backward; without ``noise`` the forward draws its own and forgets it.
    """
    key_full, value_full, bias, scale = _prepare(query, key, value, attn_mask, is_causal, scale, enable_gqa)
    if noise is None and dropout_p > 0:
        noise = attention_dropout_noise(query, key_full, dropout_p)
    output, _, _ = attention_forward(query, key_full, value_full, bias, scale, noise)
    return output


def scaled_dot_product_attention_backward(
    grad_output: np.ndarray, query: np.ndarray, key: np.ndarray, value: np.ndarray,
    attn_mask: np.ndarray | None = None, dropout_p: float = 0.0, is_causal: bool = False,
    scale: float | None = None, enable_gqa: bool = False, *, noise: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(dQ, dK, dV) of ``scaled_dot_product_attention`` with the same arguments, shaped as the inputs.

    Recomputes P from the inputs (as torch's memory-efficient kernels do), then ``attention_backward``;
    gradients of broadcast batch dims and of GQA's shared heads are summed back. With
    ``dropout_p`` > 0 the forward's ``noise`` is required. A float ``attn_mask`` gets no gradient here
    (torch gives it dS, summed to its shape).
    """
    if dropout_p > 0 and noise is None:
        raise ValueError("scaled_dot_product_attention_backward: dropout_p > 0 needs the forward's noise: draw it "
                         "with attention_dropout_noise(query, key, dropout_p) and pass noise= to both calls")
    key_full, value_full, bias, scale = _prepare(query, key, value, attn_mask, is_causal, scale, enable_gqa)
    _, probs, _ = attention_forward(query, key_full, value_full, bias, scale, noise)
    grad_query, grad_key, grad_value = attention_backward(grad_output, query, key_full, value_full, probs,
                                                          scale, noise)
    if enable_gqa:
        grad_key, grad_value = _sum_heads(grad_key, key.shape[-3]), _sum_heads(grad_value, value.shape[-3])
    return (_sum_to_shape(grad_query, query.shape), _sum_to_shape(grad_key, key.shape),
            _sum_to_shape(grad_value, value.shape))
