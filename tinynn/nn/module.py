"""Module: the base class of every layer, with a hand-written ``backward`` instead of autograd.

The protocol every module follows:

* ``forward(input)`` computes the output and, in grad mode, calls ``save_for_backward(...)``
  with whatever its backward will need (the input, a mask, the im2col columns...).
* ``backward(grad_output, needs_input_grad=True)`` reads those values back with
  ``saved_tensors()``, ADDS each parameter's gradient into ``param.grad`` (so gradients accumulate
  as in torch) and returns dL/d(input). With ``needs_input_grad=False`` it may skip that work and
  return ``None``: torch does the same for an input that does not require grad, such as a batch
  of images entering the first layer.

Each forward can be backpropagated once: the saved values are released by the backward, as torch
frees its graph. A module called twice before one backward only remembers the second call.
The saved values are the arrays themselves, not copies (as in torch): change one in place
between forward and backward (a Linear's input, a large Conv2d's input) and the gradients are
computed from the changed values. torch catches that with a version counter on every tensor and
raises an error; NumPy arrays have no such counter, so tinynn cannot check.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from tinynn._dtype import as_float_dtype
from tinynn._grad_mode import is_grad_enabled
from tinynn.nn._state_dict import IncompatibleKeys, load_state_dict, state_items
from tinynn.nn.parameter import Parameter

_KEPT_NOTHING = object()  # marks "the last forward ran under no_grad"


class Module:
    """Base class for all tinynn layers (``torch.nn.Module`` without autograd)."""

    training: bool

    def __init__(self) -> None:
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_non_persistent_buffers_set", set())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "_saved", None)

    # ------------------------------------------------------------------ forward / backward
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f'Module [{type(self).__name__}] is missing the required "forward" function')

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        raise NotImplementedError(f"{type(self).__name__} has no backward")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def save_for_backward(self, *values: Any) -> None:
        """Keep ``values`` for the backward; under ``tinynn.no_grad()`` keep nothing."""
        object.__setattr__(self, "_saved", values if is_grad_enabled() else _KEPT_NOTHING)

    def saved_tensors(self) -> tuple[Any, ...]:
        """Return (and release) what the last forward saved, or explain why there is nothing."""
        saved = self._saved
        if saved is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward() was called with nothing saved: run a forward "
                "first (each forward can be backpropagated once, as in torch). A module called twice "
                "in one forward keeps only its last call's values: use two modules sharing the weights"
            )
        if saved is _KEPT_NOTHING:
            raise RuntimeError(
                f"{type(self).__name__}.backward() after a forward under tinynn.no_grad(): nothing "
                "was kept for backward; run the forward outside no_grad()"
            )
        object.__setattr__(self, "_saved", None)
        return saved

    # ------------------------------------------------------------------ registration
    def __setattr__(self, name: str, value: Any) -> None:
        params = self.__dict__.get("_parameters")
        modules = self.__dict__.get("_modules")
        buffers = self.__dict__.get("_buffers")
        if isinstance(value, (Parameter, Module)) and params is None:
            raise AttributeError("cannot assign parameters or modules before Module.__init__() call")
        if isinstance(value, Parameter):
            self._forget(name, keep=params)
            params[name] = value
        elif isinstance(value, Module):
            self._forget(name, keep=modules)
            modules[name] = value
        elif buffers is not None and name in buffers:
            if value is not None and not isinstance(value, np.ndarray):
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as buffer '{name}' (np.ndarray or None expected)"
                )
            buffers[name] = value
        elif params is not None and name in params:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as parameter '{name}' "
                    "(tinynn.nn.Parameter or None expected)"
                )
            params[name] = None
        elif modules is not None and name in modules:
            if value is not None:
                raise TypeError(
                    f"cannot assign '{type(value).__name__}' as child module '{name}' "
                    "(tinynn.nn.Module or None expected)"
                )
            modules[name] = None
        else:
            object.__setattr__(self, name, value)

    def __getattr__(self, name: str) -> Any:
        # Only reached when normal lookup fails: parameters, buffers and children live in their dicts.
        d = self.__dict__
        for store in ("_parameters", "_buffers", "_modules"):
            if store in d and name in d[store]:
                return d[store][name]
        raise AttributeError(f"'{type(self).__name__}' object has no attribute '{name}'")

    def __delattr__(self, name: str) -> None:
        if name in self._parameters:
            del self._parameters[name]
        elif name in self._buffers:
            del self._buffers[name]
            self._non_persistent_buffers_set.discard(name)
        elif name in self._modules:
            del self._modules[name]
        else:
            object.__delattr__(self, name)

    def _forget(self, name: str, keep: dict) -> None:
        """Drop ``name`` from the stores other than ``keep``, before it is registered there (an
        entry replaced in its own store keeps its place in the order, as in torch)."""
        self.__dict__.pop(name, None)
        for store in (self._parameters, self._buffers, self._modules):
            if store is not keep:
                store.pop(name, None)
        self._non_persistent_buffers_set.discard(name)

    def register_buffer(self, name: str, tensor: np.ndarray | None, persistent: bool = True) -> None:
        """Keep an array that is state but not a parameter (BatchNorm's ``running_mean``).

        Buffers get no gradient and no optimizer step; they follow ``.to(dtype)`` (floating ones
        only) and, when ``persistent``, appear in ``state_dict`` after the module's parameters.
        """
        if "_buffers" not in self.__dict__:
            raise AttributeError("cannot assign buffer before Module.__init__() call")
        if not isinstance(name, str):
            raise TypeError(f"buffer name should be a string. Got {type(name).__name__}")
        if "." in name:
            raise KeyError('buffer name can\'t contain "."')
        if name == "":
            raise KeyError('buffer name can\'t be empty string ""')
        if hasattr(self, name) and name not in self._buffers:
            raise KeyError(f"attribute '{name}' already exists")
        if tensor is not None and not isinstance(tensor, np.ndarray):
            raise TypeError(
                f"cannot assign '{type(tensor).__name__}' object to buffer '{name}' (np.ndarray or None required)"
            )
        self._buffers[name] = tensor
        if persistent:
            self._non_persistent_buffers_set.discard(name)
        else:
            self._non_persistent_buffers_set.add(name)

    def register_parameter(self, name: str, param: Parameter | None) -> None:
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"cannot assign '{type(param).__name__}' object to parameter '{name}'")
        self._parameters[name] = param

    def add_module(self, name: str, module: Module | None) -> None:
        if module is not None and not isinstance(module, Module):
            raise TypeError(f"{type(module).__name__} is not a Module subclass")
        if "." in name or name == "":
            raise KeyError(f'module name can\'t contain ".", got: {name!r}' if name else "module name can't be empty")
        self._modules[name] = module

    register_module = add_module

    # ------------------------------------------------------------------ traversal
    def named_modules(self, memo: set[int] | None = None, prefix: str = "",
                      remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """(dotted name, module) for self and every descendant, depth first; a module that is a
        child in several places appears once unless ``remove_duplicate`` is False (torch's rule)."""
        if remove_duplicate:
            memo = set() if memo is None else memo
            if id(self) in memo:
                return
            memo.add(id(self))
        yield prefix, self
        for name, child in self._modules.items():
            if child is not None:
                yield from child.named_modules(memo, f"{prefix}.{name}" if prefix else name, remove_duplicate)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def named_children(self) -> Iterator[tuple[str, Module]]:
        for name, child in self._modules.items():
            if child is not None:
                yield name, child

    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def named_parameters(self, prefix: str = "", recurse: bool = True,
                         remove_duplicate: bool = True) -> Iterator[tuple[str, Parameter]]:
        """(dotted name, Parameter) pairs in registration order; a shared Parameter appears once,
        under its first name, unless ``remove_duplicate`` is False."""
        seen: set[int] = set()
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse
                   else iter([(prefix, self)]))
        for module_prefix, module in modules:
            for name, param in module._parameters.items():
                if param is None or id(param) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(param))
                yield (f"{module_prefix}.{name}" if module_prefix else name), param

    def parameters(self, recurse: bool = True) -> Iterator[Parameter]:
        for _, param in self.named_parameters(recurse=recurse):
            yield param

    def named_buffers(self, prefix: str = "", recurse: bool = True,
                      remove_duplicate: bool = True) -> Iterator[tuple[str, np.ndarray]]:
        """(dotted name, array) for every buffer that is not None, as ``named_parameters``."""
        seen: set[int] = set()
        modules = (self.named_modules(prefix=prefix, remove_duplicate=remove_duplicate) if recurse
                   else iter([(prefix, self)]))
        for module_prefix, module in modules:
            for name, buffer in module._buffers.items():
                if buffer is None or id(buffer) in seen:
                    continue
                if remove_duplicate:
                    seen.add(id(buffer))
                yield (f"{module_prefix}.{name}" if module_prefix else name), buffer

    def buffers(self, recurse: bool = True) -> Iterator[np.ndarray]:
        for _, buffer in self.named_buffers(recurse=recurse):
            yield buffer

    def get_submodule(self, target: str) -> Module:
        """The submodule at the dotted path ``target`` (``""`` is self), as ``named_modules`` names it."""
        module: Module = self
        for item in target.split(".") if target else ():
            module = _lookup(module, item, Module, "nn.Module")
        return module

    def get_parameter(self, target: str) -> Parameter:
        """The parameter at the dotted path ``target``, as ``named_parameters`` names it."""
        module_path, _, name = target.rpartition(".")
        return _lookup(self.get_submodule(module_path), name, Parameter, "nn.Parameter")

    def get_buffer(self, target: str) -> np.ndarray:
        """The buffer at the dotted path ``target``, as ``named_buffers`` names it."""
        module_path, _, name = target.rpartition(".")
        module = self.get_submodule(module_path)
        if name not in module._buffers:
            raise AttributeError(f"`{name}` is not a buffer" if hasattr(module, name)
                                 else f"{type(module).__name__} has no attribute `{name}`")
        return module._buffers[name]

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Set every parameter's ``requires_grad``; ``False`` freezes them: backward adds no grad."""
        for param in self.parameters():
            param.requires_grad_(requires_grad)
        return self

    def apply(self, fn: Callable[[Module], None]) -> Module:
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    # ------------------------------------------------------------------ state
    def state_dict(self) -> OrderedDict[str, np.ndarray]:
        """Parameter and persistent buffer arrays by torch's dotted names (``0.weight``,
        ``1.running_mean``), in torch's order; the arrays are shared, not copied."""
        return OrderedDict(state_items(self))

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True) -> IncompatibleKeys:
        """Copy values (ndarrays or torch tensors) into the existing parameter and buffer arrays,
        keeping their dtype; torch's errors for missing, unexpected and mis-shaped entries, and
        nothing written unless everything fits (see ``tinynn/nn/_state_dict.py``)."""
        return load_state_dict(self, state_dict, strict)

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.parameters():
            if set_to_none:
                param.grad = None
            elif param.grad is not None:
                param.grad[...] = 0

    def train(self, mode: bool = True) -> Module:
        if not isinstance(mode, bool):
            raise ValueError("training mode is expected to be boolean")
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        return self.train(False)

    def to(self, *args: Any, **kwargs: Any) -> Module:
        """``to(device)``, ``to(dtype)``, ``to(device, dtype)`` (or by keyword), as in torch: casts
        every parameter (and its grad) and every floating buffer to a floating ``dtype``. tinynn
        runs on the CPU only, so the device may only be the CPU (``"cpu"``, ``torch.device("cpu")``),
        which changes nothing."""
        device, dtype = kwargs.pop("device", None), kwargs.pop("dtype", None)
        kwargs.pop("non_blocking", None)
        if kwargs:
            raise TypeError(f"to() got an unexpected keyword argument '{next(iter(kwargs))}'")
        for arg in args:
            if _is_device(arg):
                device = arg
            else:
                dtype = arg
        if device is not None and _device_type(device) != "cpu":
            raise RuntimeError(f"tinynn runs on the CPU only: to() got the device {str(device)!r}; "
                               "use 'cpu' (torch's side of a comparison can run on the GPU)")
        target = None if dtype is None else as_float_dtype(dtype)  # checked before anything changes
        for param in self.parameters() if target is not None else ():
            param.data = param.data.astype(target, copy=False)
            if param.grad is not None:
                param.grad = param.grad.astype(target, copy=False)
        for module in self.modules() if target is not None else ():
            for name, buffer in module._buffers.items():
                if buffer is not None and buffer.dtype.kind == "f":  # counters stay integers, as in torch
                    module._buffers[name] = buffer.astype(target, copy=False)
        return self

    def cpu(self) -> Module:
        return self

    def cuda(self, device: Any = None) -> Module:
        return self.to("cuda" if device is None else f"cuda:{device}" if isinstance(device, int) else device)

    def double(self) -> Module:
        return self.to(np.float64)

    def float(self) -> Module:
        return self.to(np.float32)

    # ------------------------------------------------------------------ printing
    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = []
        extra = self.extra_repr()
        if extra:
            lines = extra.split("\n")
        for name, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"({name}): {child_repr}")
        main = type(self).__name__ + "("
        if lines:
            if len(lines) == 1 and not self._modules:
                main += lines[0]
            else:
                main += "\n  " + "\n  ".join(lines) + "\n"
        return main + ")"


def _lookup(owner: Module, name: str, kind: type, kind_name: str) -> Any:
    """``owner.name``, refused with torch's words when it is missing or not a ``kind``."""
    if not hasattr(owner, name):
        raise AttributeError(f"{type(owner).__name__} has no attribute `{name}`")
    value = getattr(owner, name)
    if not isinstance(value, kind):
        raise AttributeError(f"`{name}` is not an {kind_name}")
    return value


def _device_type(device: Any) -> str:
    """``"cpu"`` for "cpu", "cuda:0" -> "cuda", torch.device("cpu") -> "cpu"."""
    return str(getattr(device, "type", device)).split(":")[0]


def _is_device(arg: Any) -> bool:
    """A device (a name such as "cpu" or "cuda:1", or a torch.device), not a dtype."""
    if hasattr(arg, "type") and hasattr(arg, "index"):  # torch.device
        return True
    return isinstance(arg, str) and _device_type(arg) in ("cpu", "cuda", "mps", "xpu", "meta", "hip", "xla")
