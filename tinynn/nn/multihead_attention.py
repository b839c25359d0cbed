"""MultiheadAttention, as torch's ``nn.MultiheadAttention`` (its ``multi_head_attention_forward``,
the non-fast path), with a hand-written backward.

In torch's (L, N, E) layout, with H heads of D = E / H features each:

    q = query Wq^T + bq,  k = key Wk^T + bk,  v = value Wv^T + bv     in-projection, (L|S, N, E)
    k, v += one more key/value row bias_k, bias_v          (add_bias_kv; masks get a 0 column)
    q, k, v -> (N * H, L|S, D)                              head h holds features h*D .. h*D + D - 1
    k, v += one more row of zeros                           (add_zero_attn; masks get a 0 column)
    O_h, P, W = attention_forward(q, k, v, M, 1 / sqrt(D))  per head, see attention.py
    attn_output = out_proj(O_h back to (L, N, E))
    attn_weights = W as (N, H, L, S), averaged over H by default

M merges attn_mask ((L, S) for all, or (N * H, L, S)) and key_padding_mask ((N, S), the same for
every head), each made float first: True (a bool mask's "do not attend") becomes -inf.

The backward runs the same steps in reverse: out_proj's backward, ``attention_backward`` (with
the gradient of the returned weights, if given: dW / H for every head when averaged), the zero
rows and bias rows cut off again (bias_k's gradient is its row's, summed over the batch), and
the in-projection's linear backward: dWq = dq^T query, dbq = sum(dq), dquery = dq Wq. The packed
``in_proj_weight`` gets the three gradients stacked, q's first.

Two of torch's paths, both followed: with ``need_weights=True`` torch runs a plain softmax (a fully
masked row gives NaN); with ``need_weights=False`` it calls scaled_dot_product_attention (0 there),
and with ``is_causal`` and no key_padding_mask it then ignores ``attn_mask`` for a causal mask.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype, float32
from tinynn.nn import init
from tinynn.nn.attention import attention_backward, attention_bias, attention_dropout_noise, attention_forward
from tinynn.nn.linear import Linear, linear, linear_backward
from tinynn.nn.module import Module, _device_type
from tinynn.nn.parameter import Parameter


class NonDynamicallyQuantizableLinear(Linear):
    """A Linear under torch's name for MultiheadAttention's ``out_proj`` (the name only tells torch's
    quantization to leave it alone), so that ``print(model)`` reads as torch's."""


def _canonical_mask(mask: np.ndarray | None, mask_name: str, other: np.ndarray | None, other_name: str,
                    dtype: np.dtype) -> np.ndarray | None:
    """torch's ``F._canonical_mask``: a bool mask becomes 0 / -inf (True = masked) in ``dtype``; a
    float one stays; mismatched mask kinds warn as torch does."""
    if mask is None:
        return None
    if mask.dtype != np.bool_ and mask.dtype.kind != "f":
        raise AssertionError(f"only bool and floating types of {mask_name} are supported")
    if other is not None and mask.dtype != other.dtype:
        warnings.warn(f"Support for mismatched {mask_name} and {other_name} is deprecated. "
                      "Use same type for both instead.", stacklevel=3)
    if mask.dtype == np.bool_:
        return np.where(mask, -np.inf, 0.0).astype(dtype)
    return mask


def _shape_check(query: np.ndarray, key: np.ndarray, value: np.ndarray, key_padding_mask: np.ndarray | None,
                 attn_mask: np.ndarray | None, num_heads: int) -> bool:
    """torch's ``_mha_shape_check``: returns whether the input is batched (3-D) or not (2-D)."""
    if query.ndim not in (2, 3):
        raise AssertionError(f"query should be unbatched 2D or batched 3D tensor but received {query.ndim}-D "
                             "query tensor")
    batched = query.ndim == 3
    name = "batched (3-D)" if batched else "unbatched (2-D)"
    if key.ndim != query.ndim or value.ndim != query.ndim:
        raise AssertionError(f"For {name} `query`, expected `key` and `value` to be {query.ndim}-D but found "
                             f"{key.ndim}-D and {value.ndim}-D tensors respectively")
    if key_padding_mask is not None and key_padding_mask.ndim != query.ndim - 1:
        raise AssertionError(f"For {name} `query`, expected `key_padding_mask` to be `None` or "
                             f"{query.ndim - 1}-D but found {key_padding_mask.ndim}-D tensor instead")
    if attn_mask is not None:
        if attn_mask.ndim not in (2, 3):
            raise AssertionError(f"For {name} `query`, expected `attn_mask` to be `None`, 2-D or 3-D but found "
                                 f"{attn_mask.ndim}-D tensor instead")
        expected = (num_heads, query.shape[0], key.shape[0])
        if not batched and attn_mask.ndim == 3 and attn_mask.shape != expected:
            raise AssertionError(f"Expected `attn_mask` shape to be {expected} but got {attn_mask.shape}")
    return batched


class MultiheadAttention(Module):
    """Attention over H heads with learned in- and out-projections, as ``torch.nn.MultiheadAttention``."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True,
                 add_bias_kv: bool = False, add_zero_attn: bool = False, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, device: Any = None, dtype: Any = None) -> None:
        if embed_dim <= 0 or num_heads <= 0:
            raise ValueError(f"embed_dim and num_heads must be greater than 0, got embed_dim={embed_dim} and "
                             f"num_heads={num_heads} instead")
        if device is not None and _device_type(device) != "cpu":
            raise RuntimeError(f"tinynn runs on the CPU only: got the device {str(device)!r}")
        super().__init__()
        dtype = float32 if dtype is None else as_float_dtype(dtype)
        self.embed_dim = embed_dim
        self.kdim = kdim if kdim is not None else embed_dim
        self.vdim = vdim if vdim is not None else embed_dim
        self._qkv_same_embed_dim = self.kdim == embed_dim and self.vdim == embed_dim
        self.num_heads = num_heads
        self.dropout = dropout
        self.batch_first = batch_first
        self.head_dim = embed_dim // num_heads
        if self.head_dim * num_heads != self.embed_dim:
            raise AssertionError("embed_dim must be divisible by num_heads")
        if not self._qkv_same_embed_dim:
            self.q_proj_weight = Parameter(np.empty((embed_dim, embed_dim), dtype=dtype))
            self.k_proj_weight = Parameter(np.empty((embed_dim, self.kdim), dtype=dtype))
            self.v_proj_weight = Parameter(np.empty((embed_dim, self.vdim), dtype=dtype))
            self.register_parameter("in_proj_weight", None)
        else:
            self.in_proj_weight = Parameter(np.empty((3 * embed_dim, embed_dim), dtype=dtype))
            for name in ("q_proj_weight", "k_proj_weight", "v_proj_weight"):
                self.register_parameter(name, None)
        if bias:
            self.in_proj_bias = Parameter(np.empty(3 * embed_dim, dtype=dtype))
        else:
            self.register_parameter("in_proj_bias", None)
        self.out_proj = NonDynamicallyQuantizableLinear(embed_dim, embed_dim, bias=bias, dtype=dtype)
        if add_bias_kv:
            self.bias_k = Parameter(np.empty((1, 1, embed_dim), dtype=dtype))
            self.bias_v = Parameter(np.empty((1, 1, embed_dim), dtype=dtype))
        else:
            self.bias_k = self.bias_v = None
        self.add_zero_attn = add_zero_attn
        self._reset_parameters()

    def _reset_parameters(self) -> None:
        """torch's init: xavier_uniform_ on the in-projection, zero biases, xavier_normal_ on bias_k/v."""
        if self._qkv_same_embed_dim:
            init.xavier_uniform_(self.in_proj_weight)
        else:
            for weight in (self.q_proj_weight, self.k_proj_weight, self.v_proj_weight):
                init.xavier_uniform_(weight)
        if self.in_proj_bias is not None:
            init.constant_(self.in_proj_bias, 0.0)
            init.constant_(self.out_proj.bias, 0.0)
        if self.bias_k is not None:
            init.xavier_normal_(self.bias_k)
            init.xavier_normal_(self.bias_v)

    def _projection_weights(self) -> list[np.ndarray]:
        """(Wq, Wk, Wv): the packed in_proj_weight's three row blocks, or the separate weights."""
        if self._qkv_same_embed_dim:
            return np.split(self.in_proj_weight.data, 3)
        return [self.q_proj_weight.data, self.k_proj_weight.data, self.v_proj_weight.data]

    def forward(self, query: np.ndarray, key: np.ndarray, value: np.ndarray,
                key_padding_mask: np.ndarray | None = None, need_weights: bool = True,
                attn_mask: np.ndarray | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """(attn_output, attn_weights or None). Shapes (torch's): query (L, N, E), key (S, N, kdim),
        value (S, N, vdim); (N, L, E) etc. with batch_first; (L, E) etc. unbatched. attn_output as
        query; attn_weights (N, L, S), or (N, H, L, S) with ``average_attn_weights=False`` (no N unbatched).
        key_padding_mask (N, S) or (S,); attn_mask (L, S) or (N * H, L, S); bool ones: True = masked."""
        key_padding_mask = _canonical_mask(key_padding_mask, "key_padding_mask", attn_mask, "attn_mask", query.dtype)
        attn_mask = _canonical_mask(attn_mask, "attn_mask", None, "", query.dtype)
        transposed = self.batch_first and query.ndim == 3
        if transposed:
            query, key, value = (x.transpose(1, 0, 2) for x in (query, key, value))
        batched = _shape_check(query, key, value, key_padding_mask, attn_mask, self.num_heads)
        if not batched:
            query, key, value = query[:, None], key[:, None], value[:, None]
            key_padding_mask = None if key_padding_mask is None else key_padding_mask[None]
        bias, causal = self._merged_mask(query, key, value, key_padding_mask, attn_mask, need_weights, is_causal)
        target_len, batch, embed_dim = query.shape
        heads, head_dim = self.num_heads, self.head_dim

        weight_q, weight_k, weight_v = self._projection_weights()
        bias_q, bias_k, bias_v = (None,) * 3 if self.in_proj_bias is None else np.split(self.in_proj_bias.data, 3)
        q, k, v = linear(query, weight_q, bias_q), linear(key, weight_k, bias_k), linear(value, weight_v, bias_v)
        if self.bias_k is not None:
            k = np.concatenate([k, np.broadcast_to(self.bias_k.data, (1, batch, embed_dim))])
            v = np.concatenate([v, np.broadcast_to(self.bias_v.data, (1, batch, embed_dim))])
        # (L, N, E) -> (L, N * H, D) -> (N * H, L, D): torch's view and transpose.
        q, k, v = (x.reshape(x.shape[0], batch * heads, head_dim).transpose(1, 0, 2) for x in (q, k, v))
        if self.add_zero_attn:
            zeros = np.zeros((batch * heads, 1, head_dim), dtype=k.dtype)
            k, v = np.concatenate([k, zeros], axis=1), np.concatenate([v, zeros], axis=1)
        if causal:  # the SDPA path's own causal mask, over the keys as they are now
            bias = attention_bias(target_len, k.shape[1], None, True, query.dtype)
        noise = attention_dropout_noise(q, k, self.dropout) if self.training and self.dropout > 0 else None
        scale = 1 / math.sqrt(head_dim)
        output_heads, probs, weights = attention_forward(q, k, v, bias, scale, noise, safe=not need_weights)
        concat = output_heads.transpose(1, 0, 2).reshape(target_len * batch, embed_dim)
        attn_output = self.out_proj(concat).reshape(target_len, batch, embed_dim)

        self.save_for_backward(query, key, value, q, k, v, probs, noise, scale, transposed, batched,
                               need_weights, average_attn_weights)
        if transposed:
            attn_output = attn_output.transpose(1, 0, 2)
        elif not batched:
            attn_output = attn_output[:, 0]
        if not need_weights:
            return attn_output, None
        attn_weights = weights.reshape(batch, heads, target_len, k.shape[1])
        if average_attn_weights:
            attn_weights = attn_weights.mean(axis=1)
        return attn_output, attn_weights if batched else attn_weights[0]

    def _merged_mask(self, query: np.ndarray, key: np.ndarray, value: np.ndarray,
                     key_padding_mask: np.ndarray | None, attn_mask: np.ndarray | None, need_weights: bool,
                     is_causal: bool) -> tuple[np.ndarray | None, bool]:
        """M ((1 or N * H, L, S')) from the float masks, checked as torch checks them; and whether the
        SDPA path's causal mask replaces attn_mask (is_causal, no key_padding_mask, no weights)."""
        target_len, batch, embed_dim = query.shape
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint. You may use the Transformer "
                               "module method `generate_square_subsequent_mask` to create this mask.")
        causal = is_causal and key_padding_mask is None and not need_weights
        if embed_dim != self.embed_dim:
            raise AssertionError(f"was expecting embedding dimension of {self.embed_dim}, but got {embed_dim}")
        if self._qkv_same_embed_dim and key.shape != value.shape:
            raise AssertionError(f"key shape {key.shape} does not match value shape {value.shape}")
        if not self._qkv_same_embed_dim and key.shape[:2] != value.shape[:2]:
            raise AssertionError(f"key's sequence and batch dims {key.shape[:2]} do not match value's "
                                 f"{value.shape[:2]}")
        if causal:
            return None, True
        source_len, heads = key.shape[0], self.num_heads
        if attn_mask is not None:
            expected = (target_len, source_len) if attn_mask.ndim == 2 else (batch * heads, target_len, source_len)
            if attn_mask.shape != expected:
                raise RuntimeError(f"The shape of the {attn_mask.ndim}D attn_mask is {attn_mask.shape}, but should "
                                   f"be {expected}.")
            attn_mask = attn_mask.reshape(-1, target_len, source_len).astype(query.dtype, copy=False)
        extra = int(self.bias_k is not None) + int(self.add_zero_attn)  # keys added, never masked
        pad = [(0, 0), (0, 0), (0, extra)]
        if attn_mask is not None and extra:
            attn_mask = np.pad(attn_mask, pad)
        if key_padding_mask is not None:
            if key_padding_mask.shape[0] != batch:
                raise AssertionError(f"Expected key_padded_mask.shape[0] to be {batch}, but got "
                                     f"{key_padding_mask.shape[0]}")
            if key_padding_mask.shape[1] != source_len:
                raise AssertionError(f"Expected key_padded_mask.shape[1] to be {source_len + extra}, but got "
                                     f"{key_padding_mask.shape[1] + extra}")
            padding = np.pad(key_padding_mask.astype(query.dtype, copy=False), [(0, 0), (0, extra)])
            padding = np.repeat(padding[:, None, None, :], heads, axis=1).reshape(batch * heads, 1, -1)
            return padding if attn_mask is None else attn_mask + padding, False
        return attn_mask, False

    def backward(self, grad_output: Any, needs_input_grad: bool = True) -> tuple[np.ndarray | None, ...] | None:
        """grad_output: dL/d(attn_output), or a pair (dL/d(attn_output), dL/d(attn_weights) or None).

        Adds every parameter's gradient; returns (grad_query, grad_key, grad_value) in the inputs'
        layouts. For self-attention (one array passed as query, key and value) its gradient is the sum
        of the three, as torch accumulates them into one ``.grad``.
        """
        grad_weights = None
        if isinstance(grad_output, (tuple, list)):
            grad_output, grad_weights = grad_output
        (query, key, value, q, k, v, probs, noise, scale, transposed, batched, need_weights,
         average) = self.saved_tensors()
        target_len, batch, embed_dim = query.shape
        heads, head_dim = self.num_heads, self.head_dim
        if grad_weights is not None and not need_weights:
            raise RuntimeError("MultiheadAttention.backward: a gradient for attn_weights, but the forward ran "
                               "with need_weights=False and returned None")
        if transposed:
            grad_output = grad_output.transpose(1, 0, 2)
        elif not batched:
            grad_output = grad_output[:, None]
            grad_weights = None if grad_weights is None else grad_weights[None]
        if grad_weights is not None:  # (N, [H,] L, S') -> (N * H, L, S'); a mean passes dW / H to each head
            per_head = grad_weights[:, None] / heads if average else grad_weights
            grad_weights = np.broadcast_to(per_head, (batch, heads, *probs.shape[1:])).reshape(probs.shape)

        grad_concat = self.out_proj.backward(grad_output.reshape(target_len * batch, embed_dim))
        grad_heads = grad_concat.reshape(target_len, batch * heads, head_dim).transpose(1, 0, 2)
        grad_q, grad_k, grad_v = attention_backward(grad_heads, q, k, v, probs, scale, noise, grad_weights)
        if self.add_zero_attn:
            grad_k, grad_v = grad_k[:, :-1], grad_v[:, :-1]
        # (N * H, L|S, D) -> (L|S, N, E), undoing the head split.
        grad_q, grad_k, grad_v = (g.transpose(1, 0, 2).reshape(g.shape[1], batch, embed_dim)
                                  for g in (grad_q, grad_k, grad_v))
        if self.bias_k is not None:
            self.bias_k.accumulate_grad(grad_k[-1].sum(axis=0).reshape(1, 1, embed_dim))
            self.bias_v.accumulate_grad(grad_v[-1].sum(axis=0).reshape(1, 1, embed_dim))
            grad_k, grad_v = grad_k[:-1], grad_v[:-1]

        has_bias = self.in_proj_bias is not None
        results = [linear_backward(grad, x, weight, has_bias=has_bias, needs_input_grad=needs_input_grad)
                   for grad, x, weight in zip((grad_q, grad_k, grad_v), (query, key, value),
                                              self._projection_weights())]
        if self._qkv_same_embed_dim:
            self.in_proj_weight.accumulate_grad(np.concatenate([result[1] for result in results]))
        else:
            for param, result in zip((self.q_proj_weight, self.k_proj_weight, self.v_proj_weight), results):
                param.accumulate_grad(result[1])
        if has_bias:
            self.in_proj_bias.accumulate_grad(np.concatenate([result[2] for result in results]))
        if not needs_input_grad:
            return None
        grads = [result[0] for result in results]
        if transposed:
            return tuple(grad.transpose(1, 0, 2) for grad in grads)
        return tuple(grads) if batched else tuple(grad[:, 0] for grad in grads)
