"""``state_dict`` and ``load_state_dict`` for ``Module``: which arrays, in what order, and loading
that checks everything before it writes anything (torch's ``Module._load_from_state_dict``)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from tinynn.nn.parameter import Parameter

if TYPE_CHECKING:
    from tinynn.nn.module import Module


class IncompatibleKeys(NamedTuple):
    missing_keys: list[str]
    unexpected_keys: list[str]


def as_numpy(value: Any) -> np.ndarray:
    """An ndarray from an ndarray, a Parameter or a (CPU or CUDA) torch tensor."""
    if isinstance(value, Parameter):
        return value.data
    if hasattr(value, "detach") and hasattr(value, "cpu"):
        return value.detach().cpu().numpy()
    return np.asarray(value)


def state_items(module: Module) -> Iterator[tuple[str, np.ndarray]]:
    """torch's state_dict order: each module's parameters, then its persistent buffers, then its
    children, depth first; a module or parameter shared by several names is listed under each.
    None entries (a Linear without bias, BatchNorm without running stats) are left out."""
    for prefix, sub in module.named_modules(remove_duplicate=False):
        dot = f"{prefix}." if prefix else ""
        for name, param in sub._parameters.items():
            if param is not None:
                yield dot + name, param.data
        for name, buffer in sub._buffers.items():
            if buffer is not None and name not in sub._non_persistent_buffers_set:
                yield dot + name, buffer


def load_state_dict(module: Module, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
    """Copy ``state_dict``'s values into ``module``'s arrays in place (keeping their dtype).

    Shape mismatches and values that do not convert to the array's dtype (strings, say) are always
    errors; missing and unexpected keys are errors when ``strict``. Every value is checked and
    converted before anything is written, so a failed load leaves the module unchanged.
    """
    own = dict(state_items(module))
    missing = [key for key in own if key not in state_dict]
    unexpected = [key for key in state_dict if key not in own]
    errors = []
    if strict and missing:  # torch's order: missing, unexpected, then the size mismatches
        errors.append("Missing key(s) in state_dict: " + ", ".join(f'"{k}"' for k in missing) + ". ")
    if strict and unexpected:
        errors.append("Unexpected key(s) in state_dict: " + ", ".join(f'"{k}"' for k in unexpected) + ". ")
    values = {}
    for key, target in own.items():
        if key not in state_dict:
            continue
        value = as_numpy(state_dict[key])
        if value.shape != target.shape:
            errors.append(
                f"size mismatch for {key}: copying a param with shape {value.shape} from checkpoint, "
                f"the shape in current model is {target.shape}."
            )
            continue
        try:  # converted now, not while copying: a string array must fail before the first write
            values[key] = value.astype(target.dtype, casting="unsafe", copy=False)  # torch's copy_ casts too
        except (ValueError, TypeError) as error:
            errors.append(  # torch's message when copy_ fails
                f'While copying the parameter named "{key}", whose dimensions in the model are {target.shape} and '
                f"whose dimensions in the checkpoint are {value.shape}, an exception occurred : {error.args}."
            )
    if errors:
        raise RuntimeError(f"Error(s) in loading state_dict for {type(module).__name__}:\n\t" + "\n\t".join(errors))
    for key, value in values.items():
        np.copyto(own[key], value)
    return IncompatibleKeys(missing, unexpected)
