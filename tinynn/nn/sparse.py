"""Embedding: a lookup table of ``num_embeddings`` rows of ``embedding_dim`` values, ``y = W[idx]``.

The forward copies one row of W for each index, so the gradient adds each upstream row back into
the row it came from (torch's ``embedding_dense_backward``)::

    Y[i] = W[idx[i]]                                  (i over every position of the index array)
    dW[k] = sum over i with idx[i] == k of dY[i]       (a row used twice gets both gradients)

Also as torch:

* ``padding_idx``: that row's dW stays 0 (the row is still looked up in the forward);
* ``scale_grad_by_freq``: each dY[i] is divided by how often idx[i] occurs in this batch, so
  dW[k] is the mean of its upstream rows rather than their sum;
* ``max_norm``: before the lookup, every row the batch uses whose ``norm_type``-norm exceeds
  ``max_norm`` is scaled IN PLACE by ``max_norm / (norm + 1e-7)`` (torch's ``embedding_renorm_``,
  done without gradient: the backward is the plain one above).

The indices get no gradient (they are integers): the module's backward returns None.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype, float32, torch_name
from tinynn.nn import init
from tinynn.nn.module import Module, _device_type
from tinynn.nn.parameter import Parameter

_NO_SPARSE = "tinynn has no sparse gradients: use sparse=False"


def _normalize_padding_idx(padding_idx: int | None, num_embeddings: int) -> int | None:
    """A negative padding_idx counts from the end (-1 is the last row); torch's error outside the table."""
    if padding_idx is None:
        return None
    if not -num_embeddings <= padding_idx < num_embeddings:
        raise AssertionError("Padding_idx must be within num_embeddings")
    return padding_idx + num_embeddings if padding_idx < 0 else padding_idx


def _check_indices(input: Any, num_embeddings: int, function: str = "embedding", argument: int = 1) -> None:
    """torch's errors for indices that are not int64/int32, or not rows of the table."""
    if not isinstance(input, np.ndarray):
        raise TypeError(f"{function}(): argument 'input' must be a NumPy array of indices, not {type(input).__name__}")
    if input.dtype not in (np.int64, np.int32):
        got = "CPUBoolType" if input.dtype == np.bool_ else f"torch.{torch_name(input.dtype)}Tensor"
        raise RuntimeError(f"Expected tensor for argument #{argument} 'indices' to have one of the following "
                           f"scalar types: Long, Int; but got {got} instead (while checking arguments for {function})")
    if input.size and (input.min() < 0 or input.max() >= num_embeddings):
        raise IndexError("index out of range in self")


def embedding_renorm_(weight: np.ndarray, input: np.ndarray, max_norm: float, norm_type: float = 2.0) -> np.ndarray:
    """Scale IN PLACE each row of ``weight`` named in ``input`` whose p-norm exceeds ``max_norm``:
    ``W[k] *= max_norm / (||W[k]||_p + 1e-7)``, each row once however often it is named. Returns weight.

    As torch: the norm (summed here in float64) is rounded to the weight's dtype, as torch's norm
    tensor is, and the scale is computed in float64.
    """
    rows = np.unique(input)  # sorted, each once: torch sorts the indices and skips repeats
    if rows.size and weight.shape[1] == 0 and abs(norm_type) == math.inf:
        raise RuntimeError(f"linalg.vector_norm cannot compute the {norm_type} norm on an empty tensor because "
                           "the operation does not have an identity")
    norms = np.linalg.norm(weight[rows].astype(np.float64), ord=norm_type, axis=1)
    norms = norms.astype(weight.dtype).astype(np.float64)
    over = norms > max_norm
    scale = max_norm / (norms[over] + 1e-7)
    weight[rows[over]] *= scale[:, None].astype(weight.dtype)
    return weight


def embedding(input: np.ndarray, weight: np.ndarray, padding_idx: int | None = None, max_norm: float | None = None,
              norm_type: float = 2.0, scale_grad_by_freq: bool = False, sparse: bool = False) -> np.ndarray:
    """Y = W[input]: one row of ``weight`` per index.

    Shapes: input (*) of int64 or int32 indices in [0, num_embeddings), weight
    (num_embeddings, embedding_dim) -> (*, embedding_dim), a new array in weight's dtype.
    ``padding_idx`` and ``scale_grad_by_freq`` change only the backward (``embedding_backward``);
    ``max_norm`` renormalises the used rows of ``weight`` in place first (``embedding_renorm_``).
    Out-of-range indices are refused before the weight is touched (torch, with ``max_norm``, may
    renormalise some rows first, and words a too-large index as ``select(): index ... out of range``).
    """
    if sparse:
        raise NotImplementedError(_NO_SPARSE)
    _normalize_padding_idx(padding_idx, weight.shape[0] if weight.ndim else 0)  # torch checks this first
    if weight.ndim != 2:
        raise RuntimeError("'weight' must be 2-D")
    if max_norm is not None:
        _check_indices(input, weight.shape[0], "embedding_renorm_", argument=2)
        embedding_renorm_(weight, input, max_norm, norm_type)
    _check_indices(input, weight.shape[0])
    return np.take(weight, input, axis=0)  # W[input]: the rows gathered into a new array


def embedding_backward(grad_output: np.ndarray, input: np.ndarray, num_weights: int, padding_idx: int | None = None,
                       scale_grad_by_freq: bool = False) -> np.ndarray:
    """dW[k] = sum of dY[i] over the positions i where input[i] == k; dW[padding_idx] = 0.

    With ``scale_grad_by_freq`` each dY[i] is first divided by count(input[i]), its index's number
    of occurrences in ``input``. Shapes: grad_output (*, embedding_dim), input (*) ->
    (num_weights, embedding_dim), in grad_output's dtype.
    """
    padding_idx = _normalize_padding_idx(padding_idx, num_weights)
    indices = input.reshape(-1)
    grad_rows = grad_output.reshape(indices.size, grad_output.shape[-1])
    if scale_grad_by_freq:
        counts = np.bincount(indices, minlength=num_weights)
        grad_rows = grad_rows * (1.0 / counts[indices]).astype(grad_output.dtype)[:, None]
    grad_weight = np.zeros((num_weights, grad_output.shape[-1]), dtype=grad_output.dtype)
    np.add.at(grad_weight, indices, grad_rows)  # unbuffered: a repeated index adds every time
    if padding_idx is not None:
        grad_weight[padding_idx] = 0
    return grad_weight


def _as_array(value: Any) -> np.ndarray:
    """An ndarray from an ndarray or a torch tensor (sharing memory, as torch's Parameter does)."""
    return value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)


class Embedding(Module):
    """A table of ``num_embeddings`` vectors of size ``embedding_dim``, initialised N(0, 1) with the
    ``padding_idx`` row (if any) zeroed; ``forward(indices)`` looks them up (``torch.nn.Embedding``)."""

    def __init__(self, num_embeddings: int, embedding_dim: int, padding_idx: int | None = None,
                 max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                 sparse: bool = False, _weight: Any = None, _freeze: bool = False, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        if sparse:
            raise NotImplementedError(_NO_SPARSE)
        if device is not None and _device_type(device) != "cpu":
            raise RuntimeError(f"tinynn runs on the CPU only: got the device {str(device)!r}; use 'cpu'")
        self.num_embeddings, self.embedding_dim = num_embeddings, embedding_dim
        self.padding_idx = _normalize_padding_idx(padding_idx, num_embeddings)
        self.max_norm, self.norm_type = max_norm, norm_type
        self.scale_grad_by_freq, self.sparse = scale_grad_by_freq, sparse
        if _weight is None:
            dtype = float32 if dtype is None else as_float_dtype(dtype)
            self.weight = Parameter(np.empty((num_embeddings, embedding_dim), dtype=dtype), requires_grad=not _freeze)
            self.reset_parameters()
        else:
            weight = _as_array(_weight)
            if list(weight.shape) != [num_embeddings, embedding_dim]:
                raise AssertionError("Shape of weight does not match num_embeddings and embedding_dim")
            self.weight = Parameter(weight, requires_grad=not _freeze)  # shared, not copied, as in torch

    def reset_parameters(self) -> None:
        """torch's init: W ~ N(0, 1), then the padding row set to 0."""
        init.normal_(self.weight)
        self._fill_padding_idx_with_zero()

    def _fill_padding_idx_with_zero(self) -> None:
        if self.padding_idx is not None:
            self.weight.data[self.padding_idx] = 0

    def forward(self, input: np.ndarray) -> np.ndarray:
        weight = self._parameters["weight"].data
        output = embedding(input, weight, self.padding_idx, self.max_norm, self.norm_type)
        self.save_for_backward(input)
        return output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> None:
        """Add dW (see ``embedding_backward``) into ``weight.grad``; the indices get no gradient: None."""
        (input,) = self.saved_tensors()
        expected = (*input.shape, self.embedding_dim)
        if grad_output.shape != expected:
            raise RuntimeError(f"Embedding.backward: grad_output has shape {grad_output.shape}, expected {expected}")
        weight = self._parameters["weight"]
        if weight.requires_grad:  # frozen (from_pretrained's default): nothing to compute
            weight.accumulate_grad(embedding_backward(grad_output, input, self.num_embeddings, self.padding_idx,
                                                      self.scale_grad_by_freq))
        return None

    def extra_repr(self) -> str:
        text = f"{self.num_embeddings}, {self.embedding_dim}"
        if self.padding_idx is not None:
            text += f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            text += f", max_norm={self.max_norm}"
        if self.norm_type != 2:
            text += f", norm_type={self.norm_type}"
        if self.scale_grad_by_freq is not False:
            text += f", scale_grad_by_freq={self.scale_grad_by_freq}"
        return text

    @classmethod
    def from_pretrained(cls, embeddings: Any, freeze: bool = True, padding_idx: int | None = None,
                        max_norm: float | None = None, norm_type: float = 2.0, scale_grad_by_freq: bool = False,
                        sparse: bool = False) -> Embedding:
        """An Embedding whose weight IS ``embeddings`` (rows, cols), shared, not copied, and frozen
        unless ``freeze=False``; the padding row is kept as given (torch zeroes it only at init)."""
        weight = _as_array(embeddings)
        if weight.ndim != 2:
            raise AssertionError("Embeddings parameter is expected to be 2-dimensional")
        rows, cols = weight.shape
        return cls(num_embeddings=rows, embedding_dim=cols, _weight=weight, _freeze=freeze, padding_idx=padding_idx,
                   max_norm=max_norm, norm_type=norm_type, scale_grad_by_freq=scale_grad_by_freq, sparse=sparse)
