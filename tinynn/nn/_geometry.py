"""The arguments of conv2d and of the poolings: checked as torch checks them (with torch's messages) and normalised.

``conv_geometry`` turns (input shape, weight shape, stride, padding, dilation, groups) into a
``ConvGeometry``: the kernel, the four paddings (``'same'`` pads an even kernel one more at the
bottom/right, as torch does) and the output size ``(H + pads - d*(k-1) - 1) // s + 1`` per dim;
``pool_geometry`` does the same for the poolings, ``ceil_mode`` included.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import numpy as np

from tinynn._dtype import torch_name

Pads = tuple[int, int, int, int]  # (top, bottom, left, right)


def pair(value: Any, message: str) -> tuple[int, int]:
    """``3 -> (3, 3)``, ``(3, 2) -> (3, 2)``, ``(3,) -> (3, 3)``; anything else raises RuntimeError(message)."""
    def is_int(v: Any) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if is_int(value):
        return int(value), int(value)
    if isinstance(value, (tuple, list)) and len(value) in (1, 2) and all(is_int(v) for v in value):
        return int(value[0]), int(value[-1])
    raise RuntimeError(message)


class ConvGeometry(NamedTuple):
    """Normalised arguments of one convolution; ``pads`` are (top, bottom, left, right)."""

    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: Pads
    dilation: tuple[int, int]
    groups: int
    out_size: tuple[int, int]


def conv_pair(value: Any, name: str) -> tuple[int, int]:
    shown = list(value) if isinstance(value, (tuple, list)) else value
    return pair(value, f"expected {name} to be a single integer value or a list of 2 values to match the "
                       f"convolution dimensions, but got {name}={shown}")


def conv_geometry(input_shape: tuple[int, ...], weight_shape: tuple[int, ...], stride: Any, padding: Any,
                  dilation: Any, groups: int, bias_shape: tuple[int, ...] | None = None) -> ConvGeometry:
    """Check a conv2d call as torch does (same messages) and normalise its arguments.

    ``input_shape`` is 4-D (batched). Output size per dim: ``(H + pads - d*(k-1) - 1) // s + 1``.
    A layer calls this with the same arguments at every step, so answers are cached when the
    arguments are plain ints, tuples of ints or strings (True == 1 and 1.0 == 1 as cache keys, but
    not as arguments: anything else is checked every time).
    """
    args = (tuple(input_shape), tuple(weight_shape), stride, padding, dilation, groups,
            None if bias_shape is None else tuple(bias_shape))
    if all(_plain(value) for value in (stride, padding, dilation, groups)):
        return _cached_conv_geometry(*args)
    return _conv_geometry(*args)


def _plain(value: Any) -> bool:
    return type(value) in (int, str) or (type(value) is tuple and all(type(v) is int for v in value))


@functools.lru_cache(maxsize=1024)
def _cached_conv_geometry(*args: Any) -> ConvGeometry:
    return _conv_geometry(*args)


def _conv_geometry(input_shape: tuple[int, ...], weight_shape: tuple[int, ...], stride: Any, padding: Any,
                   dilation: Any, groups: int, bias_shape: tuple[int, ...] | None = None) -> ConvGeometry:
    stride, dilation = conv_pair(stride, "stride"), conv_pair(dilation, "dilation")
    if len(weight_shape) != 4:
        raise RuntimeError(f"conv2d: expected a 4-D weight (out_channels, in_channels/groups, kH, kW), "
                           f"got weight of size {list(weight_shape)}")
    kernel = (int(weight_shape[2]), int(weight_shape[3]))
    if isinstance(padding, str):
        if padding not in ("same", "valid"):
            raise RuntimeError(f"Invalid padding string: {padding!r}, should be one of {{'valid', 'same'}}")
        if padding == "same" and any(s != 1 for s in stride):
            raise RuntimeError("padding='same' is not supported for strided convolutions")
        # torch pads 'same' by d*(k-1) in all, the odd one extra at the bottom/right.
        total = [d * (k - 1) if padding == "same" else 0 for d, k in zip(dilation, kernel)]
        pads = (total[0] // 2, total[0] - total[0] // 2, total[1] // 2, total[1] - total[1] // 2)
    else:
        pad_h, pad_w = conv_pair(padding, "padding")
        pads = (pad_h, pad_h, pad_w, pad_w)
    if any(p < 0 for p in pads):
        raise RuntimeError("negative padding is not supported")
    if any(s <= 0 for s in stride):
        raise RuntimeError(f"non-positive stride is not supported, got stride={list(stride)}")
    if any(d <= 0 for d in dilation):
        raise RuntimeError(f"dilation should be greater than zero, but got dilation={list(dilation)}")
    if not isinstance(groups, (int, np.integer)) or groups <= 0:
        raise RuntimeError(f"non-positive groups is not supported, got groups={groups}")
    groups = int(groups)
    if weight_shape[0] < groups or weight_shape[0] % groups:
        raise RuntimeError(f"Given groups={groups}, expected weight to be divisible by {groups} at dimension 0, "
                           f"but got weight of size {list(weight_shape)} instead")
    if input_shape[1] != weight_shape[1] * groups:
        raise RuntimeError(
            f"Given groups={groups}, weight of size {list(weight_shape)}, expected input{list(input_shape)} to "
            f"have {weight_shape[1] * groups} channels, but got {input_shape[1]} channels instead"
        )
    if bias_shape is not None and tuple(bias_shape) != (weight_shape[0],):
        raise RuntimeError(f"Given weight of size {list(weight_shape)}, expected bias to be 1-dimensional with "
                           f"{weight_shape[0]} elements, but got bias of size {list(bias_shape)} instead")
    padded = (input_shape[2] + pads[0] + pads[1], input_shape[3] + pads[2] + pads[3])
    dilated = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    if padded[0] < dilated[0] or padded[1] < dilated[1]:
        raise RuntimeError(
            f"Calculated padded input size per channel: ({padded[0]} x {padded[1]}). Kernel size: "
            f"({dilated[0]} x {dilated[1]}). Kernel size can't be greater than actual input size"
        )
    out_size = ((padded[0] - dilated[0]) // stride[0] + 1, (padded[1] - dilated[1]) // stride[1] + 1)
    return ConvGeometry(kernel, stride, pads, dilation, groups, out_size)


def as_batched(input: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, bool]:
    """Accept 3-D (unbatched) input as torch does; return the 4-D view and whether it was 3-D."""
    if input.ndim not in (3, 4):
        raise RuntimeError(f"Expected 3D (unbatched) or 4D (batched) input to conv2d, but got input of size: "
                           f"{list(input.shape)}")
    if input.dtype.kind != "f":
        raise TypeError(f"conv2d: expected a floating-point input, got {input.dtype}")
    if weight.dtype != input.dtype:
        raise RuntimeError(f"expected scalar type {torch_name(input.dtype)} but found {torch_name(weight.dtype)} "
                           "(conv2d: input and weight must have the same dtype)")
    return (input[None], True) if input.ndim == 3 else (input, False)


# ------------------------------------------------------------------------------------ pooling windows
class PoolGeometry(NamedTuple):
    kernel: tuple[int, int]
    stride: tuple[int, int]
    pads: Pads
    dilation: tuple[int, int]
    out_size: tuple[int, int]


def _pool_output_size(size: int, kernel: int, stride: int, pad: int, dilation: int, ceil_mode: bool) -> int:
    """torch's ``pooling_output_shape``: with ceil_mode the last window may hang over, but must start inside."""
    out = (size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)) // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def pool_geometry(op: str, input_shape: tuple[int, ...], kernel_size: Any, stride: Any, padding: Any,
                  dilation: Any = 1, ceil_mode: bool = False) -> PoolGeometry:
    """Check pooling arguments as torch does (same messages) and normalise them."""
    kernel = pair(kernel_size, f"{op}: kernel_size must either be a single int, or a tuple of two ints, "
                               f"got {kernel_size!r}")
    if stride is None or (isinstance(stride, (tuple, list)) and len(stride) == 0):
        stride = kernel
    stride = pair(stride, f"{op}: stride must either be omitted, a single int, or a tuple of two ints, got {stride!r}")
    pad = pair(padding, f"{op}: padding must either be a single int, or a tuple of two ints, got {padding!r}")
    dilation = pair(dilation, f"{op}: dilation must be either a single int, or a tuple of two ints, got {dilation!r}")
    if 0 in stride:
        raise RuntimeError("stride should not be zero")
    for p, k, d in zip(pad, kernel, dilation):
        if p < 0:
            raise RuntimeError(f"pad must be non-negative, but got pad: {p}")
        if p > ((k - 1) * d + 1) // 2:
            raise RuntimeError(f"pad should be at most half of effective kernel size, but got pad={p}, "
                               f"kernel_size={k} and dilation={d}")
    if kernel[0] <= 0 or kernel[1] <= 0:
        raise RuntimeError(f"kernel size should be greater than zero, but got kH: {kernel[0]} kW: {kernel[1]}")
    if stride[0] <= 0 or stride[1] <= 0:
        raise RuntimeError(f"stride should be greater than zero, but got dH: {stride[0]} dW: {stride[1]}")
    if dilation[0] <= 0 or dilation[1] <= 0:
        raise RuntimeError(f"dilation should be greater than zero, but got dilationH: {dilation[0]} "
                           f"dilationW: {dilation[1]}")
    # torch's pool2d_shape_check also bounds the padding by half the kernel itself, dilation aside.
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise RuntimeError(f"pad should be smaller than or equal to half of kernel size, but got padW = {pad[1]}, "
                           f"padH = {pad[0]}, kW = {kernel[1]}, kH = {kernel[0]}")
    channels, height, width = input_shape[1:]
    out_size = tuple(_pool_output_size(*args, ceil_mode)
                     for args in zip((height, width), kernel, stride, pad, dilation))
    if out_size[0] < 1 or out_size[1] < 1:
        raise RuntimeError(f"Given input size: ({channels}x{height}x{width}). Calculated output size: "
                           f"({channels}x{out_size[0]}x{out_size[1]}). Output size is too small")
    return PoolGeometry(kernel, stride, (pad[0], pad[0], pad[1], pad[1]), dilation, out_size)


# ------------------------------------------------------------------------------------ pooling calls
def pool_batched(op: str, input: np.ndarray) -> tuple[np.ndarray, bool]:
    if input.ndim not in (3, 4) or any(size == 0 for size in input.shape[-3:]):
        raise RuntimeError(f"{op}: Expected 3D or 4D (batch mode) tensor with optional 0 dim batch size for input, "
                           f"but got:{list(input.shape)}")
    if input.dtype.kind != "f":
        raise TypeError(f"{op}: expected a floating-point input, got {input.dtype}")
    return (input[None], True) if input.ndim == 3 else (input, False)


def check_grad(op: str, grad_output: np.ndarray, expected: tuple[int, ...]) -> None:
    if grad_output.shape != expected:
        raise RuntimeError(f"{op}_backward: expected grad_output of size {list(expected)}, "
                           f"got {list(grad_output.shape)}")


def unbatch(array: np.ndarray, unbatched: bool) -> np.ndarray:
    return array[0] if unbatched else array


def avg_args(input: np.ndarray, kernel_size: Any, stride: Any, padding: Any, ceil_mode: bool,
             divisor_override: int | None) -> tuple[np.ndarray, bool, PoolGeometry]:
    batched, unbatched = pool_batched("avg_pool2d", input)
    geometry = pool_geometry("avg_pool2d", batched.shape, kernel_size, stride, padding, 1, ceil_mode)
    if divisor_override is not None and divisor_override == 0:
        raise RuntimeError("divisor must be not zero")
    return batched, unbatched, geometry


def winners_from_indices(indices: np.ndarray, input_shape: tuple[int, ...], geometry: PoolGeometry) -> np.ndarray:
    """The kernel offset ``i*kw + j`` that each of torch's indices points at; refuses indices that
    do not point into their own window (so they cannot send a gradient anywhere else)."""
    height, width = input_shape[2:]
    rows = np.arange(geometry.out_size[0])[:, None] * geometry.stride[0] - geometry.pads[0]
    cols = np.arange(geometry.out_size[1]) * geometry.stride[1] - geometry.pads[2]
    h, w = np.divmod(indices, width)
    i, i_rest = np.divmod(h - rows, geometry.dilation[0])
    j, j_rest = np.divmod(w - cols, geometry.dilation[1])
    inside = ((indices >= 0) & (indices < height * width) & (i_rest == 0) & (j_rest == 0)
              & (i >= 0) & (i < geometry.kernel[0]) & (j >= 0) & (j < geometry.kernel[1]))
    if not inside.all():
        raise RuntimeError("max_pool2d_backward: indices do not point into their pooling windows")
    return i * geometry.kernel[1] + j


def max_args(input: np.ndarray, kernel_size: Any, stride: Any, padding: Any, dilation: Any,
             ceil_mode: bool) -> tuple[np.ndarray, bool, PoolGeometry]:
    batched, unbatched = pool_batched("max_pool2d", input)
    return batched, unbatched, pool_geometry("max_pool2d", batched.shape, kernel_size, stride, padding, dilation,
                                             ceil_mode)


def adaptive_size(input_shape: tuple[int, ...], output_size: Any) -> tuple[int, int]:
    if isinstance(output_size, (int, np.integer)) or output_size is None:
        output_size = (output_size, output_size)
    if not isinstance(output_size, (tuple, list)) or len(output_size) != 2:
        raise RuntimeError("adaptive_avg_pool2d: output_size must be 2")
    # None keeps the input's size along that axis.
    size = tuple(int(input_shape[-2 + k] if s is None else s) for k, s in enumerate(output_size))
    if size[0] < 0 or size[1] < 0:
        raise RuntimeError(f"adaptive_avg_pool2d: elements of output_size must be greater than or equal to 0 but "
                           f"received {{{size[0]}, {size[1]}}}")
    return size


def adaptive_args(input: np.ndarray, output_size: Any) -> tuple[np.ndarray, bool, tuple[int, int]]:
    if input.ndim not in (3, 4):
        raise RuntimeError(f"adaptive_avg_pool2d(): Expected 3D or 4D tensor, but got {list(input.shape)}")
    for dim in range(input.ndim - 3, input.ndim):
        if input.shape[dim] == 0:
            raise RuntimeError(f"adaptive_avg_pool2d(): Expected input to have non-zero size for non-batch "
                               f"dimensions, but input has sizes {list(input.shape)} with dimension {dim} being empty")
    if input.dtype.kind != "f":
        raise TypeError(f"adaptive_avg_pool2d: expected a floating-point input, got {input.dtype}")
    size = adaptive_size(input.shape, output_size)
    return (input[None], True, size) if input.ndim == 3 else (input, False, size)
