"""Dropout: zero each entry (dropout) or each whole channel (dropout2d) with probability p while
training, and scale what is kept by 1 / (1 - p), so that the expected output is the input.

    y = x * noise,  noise = keep / (1 - p),  keep ~ Bernoulli(1 - p)
    dX = dY * noise  (the same noise: y is linear in x)

This is torch's arithmetic step for step (aten's ``_dropout_impl``): ``noise`` is the keep mask in
x's dtype divided in place by ``1 - p`` (itself rounded to that dtype first), then multiplied into x.
So the same mask gives bit-identical outputs and gradients. Also as torch:

* eval mode (``training=False``), ``p == 0`` or an empty input: x itself is returned (no copy, no
  draw), and the backward passes dY on unchanged;
* ``p == 1``: x * 0 (a NaN or inf input gives NaN, as in torch), with no draw.

The mask: ``keep = generator.random(noise_shape) >= p``, uniform draws in [0, 1) from
``tinynn.default_generator()`` read at each call (so ``tinynn.manual_seed`` makes it repeatable):
P(U >= p) = 1 - p. torch draws its own numbers from its own generator, so the masks differ;
``tinynn.testing.replay_torch_dropout`` feeds torch's masks to tinynn for a side-by-side check.
"""

from __future__ import annotations

import warnings

import numpy as np

from tinynn._dtype import torch_name
from tinynn._random import default_generator
from tinynn.nn.module import Module


def _check_p(p: float) -> None:
    if p < 0 or p > 1:
        raise ValueError(f"dropout probability has to be between 0 and 1, but got {p}")


def dropout_noise(input: np.ndarray, p: float = 0.5, training: bool = True,
                  channelwise: bool = False) -> np.ndarray | None:
    """The array dropout multiplies ``input`` by: keep / (1 - p) in input's dtype, drawn now.

    Shape: input's, or with ``channelwise`` (dropout2d) ``(N, C, 1, ..., 1)``, one draw per channel
    that broadcasts over the rest. None where dropout is the identity (eval, p == 0, empty input);
    a 0-d zero for p == 1.
    """
    _check_p(p)
    if not training or p == 0 or input.size == 0:
        return None
    if p == 1:
        return np.zeros((), dtype=input.dtype)
    if input.dtype.kind != "f":
        raise RuntimeError(f"result type Float can't be cast to the desired output type {torch_name(input.dtype)}")
    if channelwise and input.ndim < 2:
        raise RuntimeError("Feature dropout requires at least 2 dimensions in the input")
    shape = input.shape[:2] + (1,) * (input.ndim - 2) if channelwise else input.shape
    keep = default_generator().random(shape) >= p
    noise = keep.astype(input.dtype)
    noise /= np.asarray(1 - p, dtype=input.dtype)  # torch: noise.div_(1 - p)
    return noise


@np.errstate(invalid="ignore")  # p = 1 multiplies by 0: inf * 0 is NaN, silently, as in torch
def _apply_noise(input: np.ndarray, noise: np.ndarray | None, inplace: bool) -> np.ndarray:
    """input * noise (into input with ``inplace``); input itself when noise is None."""
    if noise is None:
        return input
    if inplace:
        input *= noise
        return input
    return input * noise


def dropout(input: np.ndarray, p: float = 0.5, training: bool = True, inplace: bool = False) -> np.ndarray:
    """Zero each entry with probability p and scale the rest by 1 / (1 - p); any shape, same dtype.

    Draws its own mask; to backpropagate, draw it with ``dropout_noise`` and keep it (as the
    ``Dropout`` module does): ``y = x * noise``, then ``dropout_backward(dY, noise)``.
    """
    return _apply_noise(input, dropout_noise(input, p, training), inplace)


@np.errstate(invalid="ignore")  # p = 1 multiplies by 0: inf * 0 is NaN, silently, as in torch
def dropout_backward(grad_output: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
    """dX = dY * noise, with the forward's noise; dY itself where the forward was the identity (None)."""
    return grad_output if noise is None else grad_output * noise


def _warn_dropout2d_dims(ndim: int) -> None:
    """torch 2.13's warnings: dropout2d is for (N, C, H, W) and, for now, takes (N, C, L) too."""
    if ndim not in (3, 4):
        warnings.warn(
            f"dropout2d: Received a {ndim}-D input to dropout2d, which is deprecated and will result in an "
            "error in a future release. To retain the behavior and silence this warning, please use dropout "
            "instead. Note that dropout2d exists to provide channel-wise dropout on inputs with 2 spatial "
            "dimensions, a channel dimension, and an optional batch dimension (i.e. 3D or 4D inputs).",
            UserWarning, stacklevel=3,
        )
    if ndim == 3:
        warnings.warn(
            "dropout2d: Received a 3D input to dropout2d and assuming that channel-wise 1D dropout behavior is "
            "desired - input is interpreted as shape (N, C, L), where C is the channel dim. This behavior will "
            "change in a future release to interpret the input as one without a batch dimension, i.e. shape "
            "(C, H, W). To maintain the 1D channel-wise dropout behavior, please switch to using dropout1d instead.",
            UserWarning, stacklevel=3,
        )


def dropout2d(input: np.ndarray, p: float = 0.5, training: bool = True, inplace: bool = False) -> np.ndarray:
    """Zero each whole channel ``input[n, c]`` with probability p, scale the rest by 1 / (1 - p).

    Input (N, C, H, W). As torch 2.13, other ranks warn; a 3-D input is taken as (N, C, L), NOT as
    an unbatched (C, H, W) image (torch's documented stop-gap), and any rank >= 2 drops ``input[n, c]``.
    """
    _check_p(p)
    _warn_dropout2d_dims(input.ndim)
    return _apply_noise(input, dropout_noise(input, p, training, channelwise=True), inplace)


def dropout2d_backward(grad_output: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
    """dX = dY * noise, the (N, C, 1, 1) noise broadcast over each channel; dY itself for None."""
    return dropout_backward(grad_output, noise)


class _DropoutNd(Module):
    """What Dropout and Dropout2d share, as torch's ``_DropoutNd``: p, inplace and the backward."""

    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__()
        _check_p(p)
        self.p = p
        self.inplace = inplace

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (noise,) = self.saved_tensors()
        return dropout_backward(grad_output, noise) if needs_input_grad else None

    def extra_repr(self) -> str:
        return f"p={self.p}, inplace={self.inplace}"


class Dropout(_DropoutNd):
    """dropout while training, the identity in eval mode; keeps its noise, all the backward needs."""

    def forward(self, input: np.ndarray) -> np.ndarray:
        noise = dropout_noise(input, self.p, self.training)
        self.save_for_backward(noise)
        return _apply_noise(input, noise, self.inplace)


class Dropout2d(_DropoutNd):
    """dropout2d (whole channels) while training, the identity in eval mode; keeps its (N, C, 1, 1)
    noise, which broadcasts in the backward as in the forward."""

    def forward(self, input: np.ndarray) -> np.ndarray:
        _warn_dropout2d_dims(input.ndim)
        noise = dropout_noise(input, self.p, self.training, channelwise=True)
        self.save_for_backward(noise)
        return _apply_noise(input, noise, self.inplace)
