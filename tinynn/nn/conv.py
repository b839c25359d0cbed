"""2-D convolution: im2col, one matrix product, and its hand-written backward; the ``Conv2d`` module.

Pad the input, read every window through a strided view, and lay the windows out as the rows of
one matrix ``cols`` (im2col). A convolution is then one matrix product per group::

    cols: (N*Ho*Wo, C*kh*kw)   one row per output pixel, columns ordered (c, i, j) like W.reshape(O, -1)
    Y    = cols @ W.T + b      W: (O, C*kh*kw), Y: (N*Ho*Wo, O), then viewed as (N, O, Ho, Wo)
    dW   = dY.T @ cols
    db   = dY.sum(0)
    dX   = col2im(dY @ W)      each column of dcols adds back into the input pixel it was read from

With ``groups`` the channels split into groups that never meet: the same products, one per group.
The loop versions, one multiply-add at a time, are in ``tinynn.nn.naive``; the fast version of the
same maths (channels-last memory, chunks, threads) is in ``tinynn/_engine/conv.py``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from tinynn._dtype import as_float_dtype
from tinynn._textbook import is_textbook
from tinynn.nn import init
from tinynn.nn._geometry import ConvGeometry, as_batched, conv_geometry, conv_pair
from tinynn.nn.module import Module
from tinynn.nn.parameter import Parameter


def windows(padded: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
            dilation: tuple[int, int]) -> np.ndarray:
    """Every window of a padded ``(N, C, Hp, Wp)`` array, as a ``(N, C, Ho, Wo, kh, kw)`` view (no copy).

    ``windows[n, c, oh, ow, i, j] = padded[n, c, oh*sh + i*dh, ow*sw + j*dw]``.
    """
    span = ((kernel[0] - 1) * dilation[0] + 1, (kernel[1] - 1) * dilation[1] + 1)
    every = sliding_window_view(padded, span, axis=(2, 3))  # a window at every pixel, stride 1, dilation 1
    return every[:, :, ::stride[0], ::stride[1], ::dilation[0], ::dilation[1]]


def add_windows(grad_windows: np.ndarray, padded_shape: tuple[int, ...], stride: tuple[int, int],
                dilation: tuple[int, int]) -> np.ndarray:
    """The adjoint of ``windows``: ``(N, C, Ho, Wo, kh, kw)`` -> ``(N, C, Hp, Wp)``, summing every tap.

    One vectorized add per kernel offset (i, j): the taps at that offset, from all outputs, land on
    a strided grid of the input. Overlapping windows (stride < kernel) add up, as the chain rule asks.
    """
    out_h, out_w, kernel_h, kernel_w = grad_windows.shape[2:]
    grad_padded = np.zeros(padded_shape, dtype=grad_windows.dtype)
    for i in range(kernel_h):
        for j in range(kernel_w):
            rows = slice(i * dilation[0], i * dilation[0] + (out_h - 1) * stride[0] + 1, stride[0])
            cols = slice(j * dilation[1], j * dilation[1] + (out_w - 1) * stride[1] + 1, stride[1])
            grad_padded[:, :, rows, cols] += grad_windows[:, :, :, :, i, j]
    return grad_padded


def pad(input: np.ndarray, pads: tuple[int, int, int, int], value: float = 0.0) -> np.ndarray:
    """``(N, C, H, W)`` -> ``(N, C, H + top + bottom, W + left + right)``, the border filled with ``value``."""
    top, bottom, left, right = pads
    return np.pad(input, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


def im2col(input: np.ndarray, geometry: ConvGeometry) -> np.ndarray:
    """``(N, C, H, W)`` -> ``cols`` of shape ``(N*Ho*Wo, C*kh*kw)``; loop twin: ``naive.im2col``."""
    view = windows(pad(input, geometry.pads), geometry.kernel, geometry.stride, geometry.dilation)
    batch, channels, out_h, out_w, kernel_h, kernel_w = view.shape
    return view.transpose(0, 2, 3, 1, 4, 5).reshape(batch * out_h * out_w, channels * kernel_h * kernel_w)


def col2im(grad_cols: np.ndarray, input_shape: tuple[int, ...], geometry: ConvGeometry) -> np.ndarray:
    """The adjoint of ``im2col``: ``(N*Ho*Wo, C*kh*kw)`` -> ``(N, C, H, W)``; loop twin: ``naive.col2im``."""
    batch, channels, height, width = input_shape
    top, bottom, left, right = geometry.pads
    grad_windows = grad_cols.reshape(batch, *geometry.out_size, channels, *geometry.kernel).transpose(0, 3, 1, 2, 4, 5)
    padded_shape = (batch, channels, height + top + bottom, width + left + right)
    grad_padded = add_windows(grad_windows, padded_shape, geometry.stride, geometry.dilation)
    return grad_padded[:, :, top:top + height, left:left + width]


def by_group(matrix: np.ndarray, groups: int) -> np.ndarray:
    """``(rows, g*k) -> (g, rows, k)``: each group's columns as a matrix of its own (a view)."""
    rows, width = matrix.shape
    return matrix.reshape(rows, groups, width // groups).transpose(1, 0, 2)


def ungroup(stacked: np.ndarray) -> np.ndarray:
    """``(g, rows, k) -> (rows, g*k)``, the inverse of ``by_group``."""
    groups, rows, width = stacked.shape
    return stacked.transpose(1, 0, 2).reshape(rows, groups * width)


@np.errstate(invalid="ignore", over="ignore")  # as in torch: infinities make NaNs silently
def conv2d_forward(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None,
                   geometry: ConvGeometry) -> tuple[np.ndarray, np.ndarray]:
    """``(Y, cols)`` for a batched input; ``cols`` is kept for the backward's dW.

    Shapes: input (N, C, H, W), weight (O, C/g, kh, kw), bias (O,) -> Y (N, O, Ho, Wo).
    ``Y = cols @ W.T + b``, one product per group. Loop twin: ``naive.conv2d``.
    """
    groups, out_channels = geometry.groups, weight.shape[0]
    cols = im2col(input, geometry)  # (N*Ho*Wo, C*kh*kw)
    weight_by_group = weight.reshape(groups, out_channels // groups, cols.shape[1] // groups)  # (g, O/g, C/g*kh*kw)
    output = ungroup(by_group(cols, groups) @ weight_by_group.transpose(0, 2, 1))  # (N*Ho*Wo, O)
    if bias is not None:
        output += bias
    return output.reshape(input.shape[0], *geometry.out_size, out_channels).transpose(0, 3, 1, 2), cols


@np.errstate(invalid="ignore", over="ignore")  # as in torch: infinities make NaNs silently
def conv2d_backward_from_cols(grad_output: np.ndarray, cols: np.ndarray, input_shape: tuple[int, ...],
                              weight: np.ndarray, geometry: ConvGeometry, has_bias: bool = True,
                              needs_input_grad: bool = True
                              ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """``(dX, dW, db)`` from the forward's ``cols``.

    ``Y = cols @ W.T + b`` is a product like ``Linear``'s, so with dY the ``(N*Ho*Wo, O)`` matrix of
    ``grad_output``, per group: ``dW = dY.T @ cols``, ``db = dY.sum(0)``, ``dcols = dY @ W``, and
    ``dX = col2im(dcols)``. Loop twin: ``naive.conv2d_backward``.
    """
    groups, out_channels = geometry.groups, weight.shape[0]
    grad_y = grad_output.transpose(0, 2, 3, 1).reshape(len(cols), out_channels)  # (N*Ho*Wo, O)
    weight_by_group = weight.reshape(groups, out_channels // groups, cols.shape[1] // groups)
    grad_weight = (by_group(grad_y, groups).transpose(0, 2, 1) @ by_group(cols, groups)).reshape(weight.shape)
    grad_bias = grad_y.sum(axis=0) if has_bias else None
    if not needs_input_grad:
        return None, grad_weight, grad_bias
    grad_cols = ungroup(by_group(grad_y, groups) @ weight_by_group)  # (N*Ho*Wo, C*kh*kw)
    return col2im(grad_cols, input_shape, geometry), grad_weight, grad_bias


# ------------------------------------------------------------------------------ engine dispatch
# The one place where conv2d may leave this file: unless in textbook mode (``tinynn.textbook``),
# the same maths runs on ``tinynn/_engine/conv.py``, which is fast (see its README). Each backward
# takes the path its forward took: the two keep different things between them.
def _forward(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, geometry: ConvGeometry,
             owner: object = None) -> tuple[np.ndarray, Any, bool]:
    if is_textbook():
        return (*conv2d_forward(input, weight, bias, geometry), False)
    from tinynn._engine import conv as engine

    return (*engine.conv2d_forward(input, weight, bias, geometry, owner), True)


def _backward(grad_output: np.ndarray, saved: Any, on_engine: bool, input: np.ndarray, weight: np.ndarray,
              geometry: ConvGeometry, has_bias: bool, needs_input_grad: bool, owner: object = None
              ) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    if not on_engine:
        cols = im2col(input, geometry) if saved is None else saved
        return conv2d_backward_from_cols(grad_output, cols, input.shape, weight, geometry, has_bias, needs_input_grad)
    from tinynn._engine import conv as engine

    return engine.conv2d_backward(grad_output, input, weight, geometry, saved, has_bias, needs_input_grad, owner)


# ------------------------------------------------------------------------------ the functional API
def conv2d(input: np.ndarray, weight: np.ndarray, bias: np.ndarray | None = None, stride: Any = 1,
           padding: Any = 0, dilation: Any = 1, groups: int = 1) -> np.ndarray:
    """2-D cross-correlation, like ``torch.nn.functional.conv2d``.

    Shapes: input (N, C, H, W) or (C, H, W), weight (O, C/groups, kh, kw), bias (O,) ->
    output (N, O, Ho, Wo). ``padding`` may be an int, a pair, 'valid' or 'same'.
    """
    batched, unbatched = as_batched(input, weight)
    geometry = conv_geometry(batched.shape, weight.shape, stride, padding, dilation, groups,
                             None if bias is None else bias.shape)
    if bias is not None and bias.dtype != input.dtype:
        raise RuntimeError(f"Input type ({input.dtype}) and bias type ({bias.dtype}) should be the same")
    output = _forward(batched, weight, bias, geometry)[0]
    return output[0] if unbatched else output


def conv2d_backward(grad_output: np.ndarray, input: np.ndarray, weight: np.ndarray, stride: Any = 1,
                    padding: Any = 0, dilation: Any = 1, groups: int = 1, has_bias: bool = True,
                    needs_input_grad: bool = True) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Gradients of ``conv2d``: ``(grad_input, grad_weight, grad_bias)`` (see ``conv2d_backward_from_cols``).

    ``grad_input`` is None when ``needs_input_grad`` is False (the work is skipped), ``grad_bias``
    when ``has_bias`` is False.
    """
    batched, unbatched = as_batched(input, weight)
    if unbatched:
        grad_output = grad_output[None]
    geometry = conv_geometry(batched.shape, weight.shape, stride, padding, dilation, groups)
    expected = (batched.shape[0], weight.shape[0], *geometry.out_size)
    if grad_output.shape != expected:
        raise RuntimeError(f"conv2d_backward: expected grad_output of size {list(expected)}, "
                           f"got {list(grad_output.shape)}")
    if grad_output.dtype != input.dtype:
        raise RuntimeError(f"conv2d_backward: grad_output dtype {grad_output.dtype} != input dtype {input.dtype}")
    grad_input, grad_weight, grad_bias = _backward(grad_output, None, not is_textbook(), batched, weight, geometry,
                                                   has_bias, needs_input_grad)
    if unbatched and grad_input is not None:
        grad_input = grad_input[0]
    return grad_input, grad_weight, grad_bias


class Conv2d(Module):
    """Applies a 2-D convolution over a (N, C, H, W) input, like ``torch.nn.Conv2d``.

    ``weight``: (out_channels, in_channels/groups, kh, kw), ``bias``: (out_channels,), both
    initialised as torch does: uniform in +-1/sqrt(fan_in), fan_in = in_channels/groups*kh*kw.
    The engine's backward of a large layer reads its input again (to rebuild the columns), so the
    input must not change in place between forward and backward (see ``tinynn.nn.module``).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any = 1,
                 padding: Any = 0, dilation: Any = 1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        if not isinstance(groups, (int, np.integer)) or groups <= 0:
            raise ValueError("groups must be a positive integer")
        if in_channels % groups:
            raise ValueError("in_channels must be divisible by groups")
        if out_channels % groups:
            raise ValueError("out_channels must be divisible by groups")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise ValueError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and conv_pair(stride, "stride") != (1, 1):
                raise ValueError("padding='same' is not supported for strided convolutions")
        valid_modes = {"zeros", "reflect", "replicate", "circular"}
        if padding_mode not in valid_modes:
            raise ValueError(f"padding_mode must be one of {valid_modes}, but got padding_mode={padding_mode!r}")
        if padding_mode != "zeros":
            raise NotImplementedError(f"Conv2d: padding_mode={padding_mode!r} is not implemented in tinynn; "
                                      "only 'zeros' is")
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, int(groups)
        self.kernel_size = conv_pair(kernel_size, "kernel_size")
        self.stride = conv_pair(stride, "stride")
        self.padding = padding if isinstance(padding, str) else conv_pair(padding, "padding")
        self.dilation = conv_pair(dilation, "dilation")
        self.padding_mode = padding_mode
        float_dtype = as_float_dtype(dtype if dtype is not None else np.float32)
        self.weight = Parameter(np.empty((out_channels, in_channels // groups, *self.kernel_size), dtype=float_dtype))
        self.bias = Parameter(np.empty(out_channels, dtype=float_dtype)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input: np.ndarray) -> np.ndarray:
        weight = self.weight.data
        bias = None if self.bias is None else self.bias.data
        batched, unbatched = as_batched(input, weight)
        geometry = conv_geometry(batched.shape, weight.shape, self.stride, self.padding, self.dilation, self.groups)
        output, saved, on_engine = _forward(batched, weight, bias, geometry, owner=self)
        self.save_for_backward(batched, saved, on_engine, geometry, unbatched)
        return output[0] if unbatched else output

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        input, saved, on_engine, geometry, unbatched = self.saved_tensors()
        if unbatched:
            grad_output = grad_output[None]
        grad_input, grad_weight, grad_bias = _backward(grad_output, saved, on_engine, input, self.weight.data,
                                                       geometry, self.bias is not None, needs_input_grad, owner=self)
        self.weight.accumulate_grad(grad_weight)
        if self.bias is not None:
            self.bias.accumulate_grad(grad_bias)
        if grad_input is None:
            return None
        return grad_input[0] if unbatched else grad_input

    def extra_repr(self) -> str:
        text = f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}"
        if self.padding != (0, 0):
            text += f", padding={self.padding}"
        if self.dilation != (1, 1):
            text += f", dilation={self.dilation}"
        if self.groups != 1:
            text += f", groups={self.groups}"
        if self.bias is None:
            text += ", bias=False"
        if self.padding_mode != "zeros":
            text += f", padding_mode={self.padding_mode}"
        return text
