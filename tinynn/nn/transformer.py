"""TransformerEncoderLayer and TransformerEncoder, as torch's (the ordinary, non-fast path), with a
backward composed from the parts' own backwards.

One layer, on x of shape (L, N, E) ((N, L, E) with ``batch_first``, (L, E) unbatched)::

    SA(h) = dropout1(self_attn(h, h, h, attn_mask, key_padding_mask, need_weights=False, is_causal))
    FF(h) = dropout2(linear2(dropout(activation(linear1(h)))))

    norm_first=False (post-norm, the paper's):   x1 = norm1(x + SA(x));   y = norm2(x1 + FF(x1))
    norm_first=True  (pre-norm):                 x1 = x + SA(norm1(x));   y = x1 + FF(norm2(x1))

The backward runs those lines in reverse. A residual y = h + F(h) sends dy down both paths and sums
them, dh = dy + F.backward(dy); a self-attention block reads h three times (query, key, value), so its
input gradient is the sum of the three that MultiheadAttention.backward returns::

    SA.backward(g) = sum(self_attn.backward(dropout1.backward(g)))
    FF.backward(g) = linear1.backward(activation.backward(dropout.backward(linear2.backward(dropout2.backward(g)))))

    post-norm:  g1 = norm2.backward(dy);   dx1 = g1 + FF.backward(g1)
                g0 = norm1.backward(dx1);  dx = g0 + SA.backward(g0)
    pre-norm:   dx1 = dy + norm2.backward(FF.backward(dy))
                dx = dx1 + norm1.backward(SA.backward(dx1))

Each part is called once per forward, so each keeps exactly the values its own backward needs, and
each adds its parameters' gradients into ``.grad``. The encoder is ``num_layers`` deep copies of one
layer, then an optional final ``norm``: y = norm(L_{n-1}(... L_0(x))). Its backward runs ``norm``'s
first, then the layers' from the last to the first.

Masks, as torch: ``src_mask`` (L, S) or (N * nhead, L, S), ``src_key_padding_mask`` (N, S) ((S,)
unbatched); bool ones are turned into 0 / -inf (True = masked) first. The encoder also detects a
causal ``mask`` when ``is_causal`` is None, and passes that hint on to every layer. torch's fast path
(eval and no grad) is not reproduced: it computes the same values, except that the encoder's nested
tensor route (batch_first, a left-aligned ``src_key_padding_mask``) returns 0 at padded positions,
where the ordinary path (and tinynn) gives the values computed there.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from tinynn.nn.activation import GELU, ReLU, gelu, relu
from tinynn.nn.dropout import Dropout
from tinynn.nn.linear import Linear
from tinynn.nn.module import Module
from tinynn.nn.multihead_attention import MultiheadAttention, _canonical_mask
from tinynn.nn.normalization import LayerNorm

Activation = str | Callable[[np.ndarray], np.ndarray] | Module


class ModuleList(Module):
    """Just enough of torch's ``nn.ModuleList`` for ``TransformerEncoder.layers``: children named "0",
    "1", ... (so state_dict keys read ``layers.0.self_attn.in_proj_weight``), indexing, len, iteration,
    and torch's repr, which folds repeated children into ``(0-1): 2 x ...``."""

    def __init__(self, modules: Iterable[Module] = ()) -> None:
        super().__init__()
        for index, module in enumerate(modules):
            self.add_module(str(index), module)

    def _key(self, index: int) -> str:
        size = len(self._modules)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range")
        return str(index % size)

    def __getitem__(self, index: int) -> Module:
        return self._modules[self._key(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        self.add_module(self._key(index), module)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __repr__(self) -> str:
        blocks: list[list[Any]] = []  # [first index, last index, repr] of each run of equal reprs
        for index, module in enumerate(self):
            text = repr(module)
            if blocks and blocks[-1][2] == text:
                blocks[-1][1] = index
            else:
                blocks.append([index, index, text])
        if not blocks:
            return "ModuleList()"
        lines = [(f"({first}): {text}" if first == last else f"({first}-{last}): {last - first + 1} x {text}")
                 .replace("\n", "\n  ") for first, last, text in blocks]
        return "ModuleList(\n  " + "\n  ".join(lines) + "\n)"


def _get_clones(module: Module, n: int) -> ModuleList:
    """n independent deep copies of ``module`` (torch's ``_get_clones``): same values, own arrays."""
    return ModuleList([copy.deepcopy(module) for _ in range(n)])


def _get_activation_fn(activation: str) -> Callable[[np.ndarray], np.ndarray]:
    if activation == "relu":
        return relu
    if activation == "gelu":
        return gelu
    raise RuntimeError(f"activation should be relu/gelu, not {activation}")


def _activation_module(activation: Any) -> Module:
    """The module that runs ``activation`` with a backward: itself for tinynn's ReLU or GELU, a new
    ReLU() / GELU() for tinynn's F.relu / F.gelu; anything else is refused (tinynn needs a backward)."""
    if isinstance(activation, (ReLU, GELU)):
        return activation
    if activation is relu:
        return ReLU()
    if activation is gelu:
        return GELU()
    raise TypeError(f"TransformerEncoderLayer: activation must be 'relu', 'gelu', tinynn.nn.functional.relu or "
                    f"gelu, or a tinynn.nn.ReLU or GELU module (tinynn needs its backward), got {activation!r}")


def _get_seq_len(src: np.ndarray, batch_first: bool) -> int:
    """The sequence length of ``src``: (L, E), (L, N, E), or (N, L, E) with ``batch_first``."""
    return src.shape[0] if src.ndim == 2 else src.shape[1 if batch_first else 0]


def _detect_is_causal_mask(mask: np.ndarray | None, is_causal: bool | None = None, size: int | None = None) -> bool:
    """torch's rule: ``is_causal`` as given when not None; else whether ``mask`` is exactly the float
    causal mask of ``size`` (0 on and below the diagonal, -inf above)."""
    if is_causal is not None or mask is None:
        return is_causal is True
    size = size if size is not None else mask.shape[-2]
    causal = np.triu(np.full((size, size), -np.inf, dtype=mask.dtype), k=1)
    return mask.shape == causal.shape and bool(np.all(mask == causal))


class TransformerEncoderLayer(Module):
    """Self-attention then a feed-forward network, each with a residual and a LayerNorm, as
    ``torch.nn.TransformerEncoderLayer`` (see the module docstring for the equations)."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int = 2048, dropout: float = 0.1,
                 activation: Activation = relu, layer_norm_eps: float = 1e-5, batch_first: bool = False,
                 norm_first: bool = False, bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.self_attn = MultiheadAttention(d_model, nhead, dropout=dropout, bias=bias, batch_first=batch_first,
                                            device=device, dtype=dtype)
        self.linear1 = Linear(d_model, dim_feedforward, bias=bias, dtype=dtype)
        self.dropout = Dropout(dropout)
        self.linear2 = Linear(dim_feedforward, d_model, bias=bias, dtype=dtype)
        self.norm_first = norm_first
        self.norm1 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, device=device, dtype=dtype)
        self.norm2 = LayerNorm(d_model, eps=layer_norm_eps, bias=bias, device=device, dtype=dtype)
        self.dropout1 = Dropout(dropout)
        self.dropout2 = Dropout(dropout)
        if isinstance(activation, str):
            activation = _get_activation_fn(activation)
        _activation_module(activation)  # refuse what has no backward now, not at the first forward
        self.activation_relu_or_gelu = (1 if activation is relu or isinstance(activation, ReLU) else
                                        2 if activation is gelu or isinstance(activation, GELU) else 0)
        self.activation = activation  # a module is registered as a child, as in torch; a function is not

    def forward(self, src: np.ndarray, src_mask: np.ndarray | None = None,
                src_key_padding_mask: np.ndarray | None = None, is_causal: bool = False) -> np.ndarray:
        """src (L, N, E), (N, L, E) with batch_first, or (L, E) -> the same shape. src_mask (L, L) or
        (N * nhead, L, L), src_key_padding_mask (N, L) or (L,): bool (True = masked) or float (added)."""
        src_key_padding_mask = _canonical_mask(src_key_padding_mask, "src_key_padding_mask", src_mask, "src_mask",
                                               src.dtype)
        src_mask = _canonical_mask(src_mask, "src_mask", None, "", src.dtype)
        activation = _activation_module(self.activation)  # read each forward: it may have been reassigned
        x = src
        if self.norm_first:
            x = x + self._sa_block(self.norm1(x), src_mask, src_key_padding_mask, is_causal=is_causal)
            x = x + self._ff_block(self.norm2(x), activation)
        else:
            x = self.norm1(x + self._sa_block(x, src_mask, src_key_padding_mask, is_causal=is_causal))
            x = self.norm2(x + self._ff_block(x, activation))
        self.save_for_backward(activation, self.norm_first)
        return x

    def _sa_block(self, x: np.ndarray, attn_mask: np.ndarray | None, key_padding_mask: np.ndarray | None,
                  is_causal: bool = False) -> np.ndarray:
        x = self.self_attn(x, x, x, attn_mask=attn_mask, key_padding_mask=key_padding_mask, need_weights=False,
                           is_causal=is_causal)[0]
        return self.dropout1(x)

    def _ff_block(self, x: np.ndarray, activation: Module) -> np.ndarray:
        x = self.linear2(self.dropout(activation(self.linear1(x))))
        return self.dropout2(x)

    def _sa_block_backward(self, grad: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        """d(SA)/dh^T grad: the three gradients of h (as query, key and value) summed."""
        grads = self.self_attn.backward(self.dropout1.backward(grad), needs_input_grad=needs_input_grad)
        return None if grads is None else grads[0] + grads[1] + grads[2]

    def _ff_block_backward(self, grad: np.ndarray, activation: Module) -> np.ndarray:
        grad = self.linear2.backward(self.dropout2.backward(grad))
        return self.linear1.backward(activation.backward(self.dropout.backward(grad)))

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        """dL/d(src) from dL/d(output) (both src's shape); adds every parameter's gradient into ``.grad``.
        With ``needs_input_grad=False`` the parameters still get theirs and None is returned."""
        activation, norm_first = self.saved_tensors()
        if norm_first:
            grad_x1 = grad_output + self.norm2.backward(self._ff_block_backward(grad_output, activation))
            grad_sa = self.norm1.backward(self._sa_block_backward(grad_x1), needs_input_grad=needs_input_grad)
            return grad_x1 + grad_sa if needs_input_grad else None
        grad = self.norm2.backward(grad_output)
        grad = self.norm1.backward(grad + self._ff_block_backward(grad, activation))
        grad_sa = self._sa_block_backward(grad, needs_input_grad=needs_input_grad)
        return grad + grad_sa if needs_input_grad else None


def _why_no_nested_tensor(layer: Module) -> str:
    """torch's reason (or "") why TransformerEncoder would not use nested tensors with this layer."""
    name = "encoder_layer"
    if not isinstance(layer, TransformerEncoderLayer):
        return f"{name} was not TransformerEncoderLayer"
    attention = layer.self_attn
    checks = [(layer.norm_first, f"{name}.norm_first was True"),
              (not attention.batch_first, f"{name}.self_attn.batch_first was not True(use batch_first for better "
                                          "inference performance)"),
              (not attention._qkv_same_embed_dim, f"{name}.self_attn._qkv_same_embed_dim was not True"),
              (attention.in_proj_bias is None, f"{name}.self_attn was passed bias=False"),
              (not layer.activation_relu_or_gelu, f"{name}.activation_relu_or_gelu was not True"),
              (layer.norm1.eps != layer.norm2.eps, f"{name}.norm1.eps was not equal to {name}.norm2.eps"),
              (attention.num_heads % 2 == 1, f"{name}.self_attn.num_heads is odd")]
    return next((reason for failed, reason in checks if failed), "")


class TransformerEncoder(Module):
    """``num_layers`` deep copies of ``encoder_layer`` run in turn, then ``norm`` if given, as
    ``torch.nn.TransformerEncoder``. ``enable_nested_tensor`` and ``mask_check`` are kept (and torch's
    warning given) but change nothing: they only steer torch's fast path."""

    def __init__(self, encoder_layer: Module, num_layers: int, norm: Module | None = None,
                 enable_nested_tensor: bool = True, mask_check: bool = True) -> None:
        super().__init__()
        self.layers = _get_clones(encoder_layer, num_layers)
        self.num_layers = num_layers
        self.norm = norm
        self.enable_nested_tensor = enable_nested_tensor
        self.use_nested_tensor = enable_nested_tensor
        self.mask_check = mask_check
        why_not = _why_no_nested_tensor(encoder_layer)
        if enable_nested_tensor and why_not:
            warnings.warn(f"enable_nested_tensor is True, but self.use_nested_tensor is False because {why_not}",
                          stacklevel=2)
            self.use_nested_tensor = False

    def forward(self, src: np.ndarray, mask: np.ndarray | None = None,
                src_key_padding_mask: np.ndarray | None = None, is_causal: bool | None = None) -> np.ndarray:
        """src (L, N, E), (N, L, E) with the layers' batch_first, or (L, E) -> the same shape. mask and
        src_key_padding_mask as TransformerEncoderLayer's; ``is_causal`` None: detected from ``mask``."""
        src_key_padding_mask = _canonical_mask(src_key_padding_mask, "src_key_padding_mask", mask, "mask", src.dtype)
        mask = _canonical_mask(mask, "mask", None, "", src.dtype)
        batch_first = self.layers[0].self_attn.batch_first
        is_causal = _detect_is_causal_mask(mask, is_causal, _get_seq_len(src, batch_first))
        output = src
        for layer in self.layers:
            output = layer(output, src_mask=mask, is_causal=is_causal, src_key_padding_mask=src_key_padding_mask)
        if self.norm is not None:
            output = self.norm(output)
        self.save_for_backward(self.norm)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        """dL/d(src): the final norm's backward first, then the layers' in reverse; adds every
        parameter's gradient into ``.grad`` (None returned with ``needs_input_grad=False``)."""
        (norm,) = self.saved_tensors()
        layers = list(self.layers)
        if len({id(layer) for layer in layers}) != len(layers):
            raise RuntimeError("TransformerEncoder.backward: one module is in self.layers twice. A tinynn module keeps "
                               "one forward's values for its backward, so it cannot be backpropagated through "
                               "twice: give each place its own copy (copy.deepcopy)")
        grad = grad_output if norm is None else norm.backward(grad_output)
        for layer in reversed(layers[1:]):
            grad = layer.backward(grad)
        return layers[0].backward(grad, needs_input_grad=needs_input_grad) if layers else grad
