"""Optimizer: parameter groups, per-parameter state, ``zero_grad`` and ``state_dict``, as in torch.

An optimizer holds ``param_groups``, a list of dicts that each carry a list of Parameters under
``"params"`` plus that group's hyper-parameters (``lr``, ``momentum``...), and ``state``, a dict
from Parameter to whatever the update rule keeps between steps (SGD's ``momentum_buffer``).
Subclasses implement ``step``; everything else (including torch's ``state_dict`` format, so a
torch optimizer's state can be loaded) lives here.
"""

from __future__ import annotations

import copy
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from itertools import chain
from typing import Any

import numpy as np

from tinynn._grad_mode import enable_grad
from tinynn.nn.parameter import Parameter


def _is_torch_tensor(value: Any) -> bool:
    # Duck-typed so that tinynn never imports torch.
    return hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy")


def _to_python_scalar(value: Any) -> Any:
    """A 1-element torch tensor or NumPy scalar hyper-parameter as a Python number, else unchanged.

    Python numbers keep float32 updates float32 (NumPy 2 promotes ``np.float64(lr) * float32``).
    """
    if _is_torch_tensor(value) or isinstance(value, np.generic):
        return value.item()
    return value


def _advance_step(state: dict[str, Any]) -> float:
    """torch's ``state["step"] += 1`` on the per-parameter step count; returns the new count.

    The count is a 0-d float32 array, as torch keeps a 0-d float32 tensor (so it round-trips torch's
    state_dict, and counts in float32 as torch does); a plain number is turned into one first, as
    torch's ``__setstate__`` does.
    """
    step = state["step"]
    if not isinstance(step, np.ndarray):
        step = state["step"] = np.array(float(step), dtype=np.float32)
    step += 1
    return float(step)


class Optimizer:
    """Base class of all optimizers (``torch.optim.Optimizer``).

    Args:
        params: an iterable of Parameters, of ``(name, Parameter)`` pairs, or of dicts (parameter
            groups) each with a ``"params"`` entry and optional per-group hyper-parameters.
        defaults: the hyper-parameters a group gets when it does not set them itself.
    """

    def __init__(self, params: Iterable[Any], defaults: dict[str, Any]) -> None:
        if isinstance(params, (Parameter, np.ndarray)) or _is_torch_tensor(params):
            raise TypeError(
                "params argument given to the optimizer should be an iterable of Parameters or dicts, "
                f"but got {type(params).__name__}"
            )
        self.defaults = defaults
        self.state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        self.param_groups: list[dict[str, Any]] = []

        param_groups = list(params)
        if len(param_groups) == 0:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for param_group in param_groups:
            self.add_param_group(param_group)

    def __repr__(self) -> str:
        text = f"{type(self).__name__} ("  # torch's layout, a blank line between groups included
        for index, group in enumerate(self.param_groups):
            text += f"\nParameter Group {index}\n"
            text += "".join(f"    {key}: {group[key]}\n" for key in sorted(group) if key != "params")
        return text + ")"

    # ------------------------------------------------------------------ groups
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Append a group (a dict with ``"params"``); missing hyper-parameters come from ``defaults``.

        Everything is checked before the group (the caller's dict, as in torch) is changed.
        """
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group).__name__}")
        if "params" not in param_group:
            raise KeyError("param_group must have a 'params' entry holding its Parameters")
        params = param_group["params"]
        if isinstance(params, Parameter):
            params = [params]
        elif isinstance(params, set):
            raise TypeError(
                "optimizer parameters need to be organized in ordered collections, but the ordering "
                "of tensors in sets will change between runs. Please use a list instead."
            )
        else:
            params = list(params)

        names = [entry[0] for entry in params if isinstance(entry, tuple)]
        params = [entry[1] if isinstance(entry, tuple) else entry for entry in params]
        if names and len(names) != len(params):
            raise ValueError("all optimizer params should be with/without names. Some param names are missing")
        for param in params:
            if not isinstance(param, Parameter):
                raise TypeError(
                    f"optimizer can only optimize Parameters, but one of the params is {type(param).__name__}"
                )
        has_names = bool(names) or "param_names" in param_group
        for group in self.param_groups:
            if has_names != ("param_names" in group):
                raise ValueError(
                    "all optimizer param groups should be with/without names. cannot add param group "
                    f"{'with' if has_names else 'without'} names to the optimizer"
                )
        if len(params) != len(set(params)):
            warnings.warn(
                "optimizer contains a parameter group with duplicate parameters; in future, this will "
                "cause an error; see github.com/pytorch/pytorch/issues/40967 for more information",
                stacklevel=3,
            )
        existing = set(chain.from_iterable(group["params"] for group in self.param_groups))
        if not existing.isdisjoint(params):
            raise ValueError("some parameters appear in more than one parameter group")

        param_group["params"] = params
        if names:
            param_group["param_names"] = names
        for name, default in self.defaults.items():
            param_group.setdefault(name, default)
        self.param_groups.append(param_group)

    # ------------------------------------------------------------------ gradients and step
    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop every gradient (``grad = None``, the default) or fill it with zeros in place.

        With ``None``, ``step`` skips a parameter that gets no new gradient; with zeros it updates
        it with a zero gradient (which still moves it under momentum or weight decay), as in torch.
        """
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    if set_to_none:
                        param.grad = None
                    else:
                        param.grad.fill(0)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter that has a gradient; subclasses implement the rule."""
        raise NotImplementedError(f"{type(self).__name__} does not implement step()")

    def _start_step(self, closure: Callable[[], Any] | None) -> Any:
        """What a step does before any update, as torch's do: ``closure()`` re-evaluated with grad
        mode on (its loss is returned, else None), torch's other implementations refused, and every
        gradient's shape checked (so that nothing is updated when one is wrong)."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        self._refuse_other_implementations()
        self._check_grad_shapes()
        return loss

    def _check_grad_shapes(self) -> None:
        """Refuse a gradient whose shape is not its parameter's (before any parameter is updated)."""
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None and param.grad.shape != param.data.shape:
                    raise RuntimeError(
                        f"{type(self).__name__}.step: a gradient of shape {param.grad.shape} was found for a "
                        f"parameter of shape {param.data.shape}"
                    )

    def _refuse_other_implementations(self, fused: bool | None = None, foreach: bool | None = None,
                                      differentiable: bool = False) -> None:
        """torch's switches to its other implementations (``foreach``, ``capturable``,
        ``differentiable``, ``fused``) exist here only so that torch's state_dicts load; a true one
        is refused, since tinynn runs torch's single-tensor loop alone. Given the constructor's
        flags, first torch's own refusals of ``fused`` with the others, in its words."""
        if fused:
            if differentiable:
                raise RuntimeError("`fused` does not support `differentiable`")
            if foreach:
                raise RuntimeError("`fused` and `foreach` cannot be `True` together.")
        for group in self.param_groups:
            for flag in ("foreach", "capturable", "differentiable", "fused"):
                if group.get(flag):
                    raise NotImplementedError(
                        f"{type(self).__name__}: {flag}=True is not implemented in tinynn, which runs torch's "
                        f"single-tensor loop; pass {flag}=None or False"
                    )

    # ------------------------------------------------------------------ state_dict
    def state_dict(self) -> dict[str, Any]:
        """torch's format: ``{'state': {index: {...}}, 'param_groups': [{..., 'params': [index, ...]}]}``.

        Parameters become their position across all groups. As in torch the per-parameter state
        is not copied: deep-copy the result to keep a snapshot while training goes on.
        """
        index_of: dict[int, int] = {}
        packed_groups = []
        for group in self.param_groups:
            packed = {key: value for key, value in group.items() if key != "params"}
            for param in group["params"]:
                index_of.setdefault(id(param), len(index_of))
            packed["params"] = [index_of[id(param)] for param in group["params"]]
            packed_groups.append(packed)
        packed_state = {
            (index_of[id(key)] if isinstance(key, Parameter) else key): value for key, value in self.state.items()
        }
        return {"state": packed_state, "param_groups": packed_groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a ``state_dict()`` from tinynn or from a torch optimizer of the same kind.

        Groups are matched by position and must hold as many parameters as ours. torch tensors
        become NumPy arrays; floating state is cast to its parameter's dtype (except ``step``, as
        in torch) and copied, so the two optimizers never share buffers.
        """
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise KeyError(f"optimizer state_dict has no '{key}' entry (got keys {sorted(state_dict)})")
        saved_groups = state_dict["param_groups"]
        if len(self.param_groups) != len(saved_groups):
            raise ValueError("loaded state dict has a different number of parameter groups")
        if any(len(ours["params"]) != len(saved["params"])
               for ours, saved in zip(self.param_groups, saved_groups)):
            raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                             "optimizer's group")
        param_of = dict(zip(chain.from_iterable(group["params"] for group in saved_groups),
                            chain.from_iterable(group["params"] for group in self.param_groups)))

        # Build everything first, so that a bad entry leaves the optimizer untouched.
        state: defaultdict[Any, dict[str, Any]] = defaultdict(dict)
        for saved_id, saved_state in state_dict["state"].items():
            if saved_id in param_of:
                param = param_of[saved_id]
                state[param] = {key: self._cast_state(param, key, value) for key, value in saved_state.items()}
            else:
                state[saved_id] = copy.deepcopy(saved_state)
        new_groups = []
        for ours, saved in zip(self.param_groups, saved_groups):
            group = {key: _to_python_scalar(value) for key, value in copy.deepcopy(saved).items() if key != "params"}
            group["params"] = ours["params"]
            if "param_names" in ours and "param_names" not in group:
                group["param_names"] = ours["param_names"]
            for name, default in self.defaults.items():
                group.setdefault(name, default)
            new_groups.append(group)
        self.state = state
        self.param_groups = new_groups

    @staticmethod
    def _cast_state(param: Parameter, key: str, value: Any) -> Any:
        """A private copy of one saved state value, as NumPy, in the parameter's dtype."""
        if _is_torch_tensor(value):
            value = value.detach().cpu().numpy()
        if not isinstance(value, np.ndarray):
            return copy.deepcopy(value)
        if key == "step":
            return value.copy()
        if value.shape != param.shape:
            raise ValueError(
                f"loaded optimizer state '{key}' has shape {value.shape} but its parameter has shape {param.shape}"
            )
        return value.astype(param.dtype, copy=True)
