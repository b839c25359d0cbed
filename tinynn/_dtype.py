"""dtype names and checks shared by modules (torch's float32 default)."""

from __future__ import annotations

from typing import Any

import numpy as np

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int64 = np.dtype(np.int64)

_TORCH_NAMES = {"float32": "Float", "float64": "Double", "float16": "Half", "int64": "Long",
                "int32": "Int", "int16": "Short", "int8": "Char", "uint8": "Byte", "bool": "Bool"}


def as_float_dtype(dtype: Any) -> np.dtype:
    """Turn ``np.float64``, ``"float64"`` or a torch dtype into a NumPy floating dtype, or raise."""
    if not isinstance(dtype, (str, np.dtype, type)):  # a torch.dtype prints as "torch.float64"
        dtype = str(dtype).replace("torch.", "")
    if isinstance(dtype, str):
        dtype = {"float": "float32", "double": "float64", "half": "float16"}.get(dtype, dtype)
    try:
        result = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"expected a floating dtype such as tinynn.float32, got {dtype!r}") from None
    if result.kind != "f":
        raise TypeError(f"expected a floating dtype such as tinynn.float32, got {result}")
    return result


def torch_name(dtype: np.dtype) -> str:
    """The name torch prints for a dtype in its error messages (float32 -> Float)."""
    return _TORCH_NAMES.get(np.dtype(dtype).name, np.dtype(dtype).name)
