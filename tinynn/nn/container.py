"""Containers: ``Sequential`` chains modules, ``Lambda`` wraps a plain function as a module."""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Any, overload

import numpy as np

from tinynn.nn.module import Module


class Sequential(Module):
    """Run children in order; backward runs their backwards in reverse (the chain rule).

    Children are named "0", "1", ... (or by the keys of an ``OrderedDict``), so ``state_dict``
    keys match torch's (``0.weight``). Only the first child is told whether the input gradient is
    needed: every later child's input is an activation whose gradient the chain needs.
    """

    def __init__(self, *args: Module) -> None:
        super().__init__()
        if len(args) == 1 and isinstance(args[0], OrderedDict):
            for name, module in args[0].items():
                self.add_module(name, module)
        else:
            for index, module in enumerate(args):
                self.add_module(str(index), module)

    def forward(self, input: Any) -> Any:
        for module in self._modules.values():
            input = module(input)
        return input

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        names: dict[int, str] = {}
        for name, module in self._modules.items():
            if id(module) in names:
                raise RuntimeError(
                    f"Sequential.backward: child {name} is child {names[id(module)]} again. A tinynn module keeps "
                    "one forward's values for its backward, so one used twice in a forward cannot be "
                    "backpropagated (torch's autograd can). Use two modules sharing the weights instead: "
                    "second.weight = first.weight")
            names[id(module)] = name
        modules = list(self._modules.values())
        for module in reversed(modules[1:]):
            grad_output = module.backward(grad_output)
        if not modules:
            return grad_output
        return modules[0].backward(grad_output, needs_input_grad=needs_input_grad)

    def _key(self, index: int) -> str:
        """The name of the child at ``index`` (negative counts from the end), as torch finds it."""
        size, index = len(self), operator.index(index)
        if not -size <= index < size:
            raise IndexError(f"index {index} is out of range")
        return list(self._modules)[index % size]

    @overload
    def __getitem__(self, index: int) -> Module: ...
    @overload
    def __getitem__(self, index: slice) -> Sequential: ...
    def __getitem__(self, index: int | slice) -> Module:
        if isinstance(index, slice):
            return Sequential(OrderedDict(list(self._modules.items())[index]))
        return self._modules[self._key(index)]

    def __setitem__(self, index: int, module: Module) -> None:
        setattr(self, self._key(index), module)

    def __delitem__(self, index: int | slice) -> None:
        for key in list(self._modules)[index] if isinstance(index, slice) else [self._key(index)]:
            delattr(self, key)
        # Renumber, as torch does, so the names (and state_dict keys) stay 0, 1, 2...
        self._modules = OrderedDict((str(i), module) for i, module in enumerate(self._modules.values()))

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def append(self, module: Module) -> Sequential:
        self.add_module(str(len(self)), module)
        return self

    def insert(self, index: int, module: Module) -> Sequential:
        if not isinstance(module, Module):
            raise AssertionError(f"module should be of type: {Module}")
        size = len(self._modules)
        if not -size <= index <= size:
            raise IndexError(f"Index out of range: {index}")
        index = index + size if index < 0 else index
        for i in range(size, index, -1):
            self._modules[str(i)] = self._modules[str(i - 1)]
        self._modules[str(index)] = module
        return self

    def extend(self, sequential: Iterable[Module]) -> Sequential:
        for module in sequential:
            self.append(module)
        return self

    def pop(self, index: int | slice) -> Module:
        module = self[index]
        del self[index]
        return module

    def __add__(self, other: Sequential) -> Sequential:
        return Sequential(*self, *_only_sequential(other))

    def __iadd__(self, other: Sequential) -> Sequential:
        return self.extend(_only_sequential(other))


def _only_sequential(other: Any) -> Sequential:
    if not isinstance(other, Sequential):
        raise ValueError(f"add operator supports only objects of Sequential class, but {type(other)} is given.")
    return other


class Lambda(Module):
    """Wrap a function as a module (the tutorial's ``Lambda``), e.g. ``Lambda(lambda x: x.reshape(-1, 1, 28, 28))``.

    Backward: if ``backward`` is given it is called as ``backward(grad_output, input)``. Otherwise
    the function must be shape-only (a reshape/view); then dL/dx is dL/dy reshaped to x's shape.
    Whether ``func`` is shape-only is checked, not assumed: on the first backward for an input
    shape, ``func`` is applied to a probe ``arange`` array of that shape, and only a pure reshape
    gives back the same numbers in the same order. A transpose, a slice or arithmetic does not,
    and the backward then raises instead of returning a wrong gradient.
    """

    def __init__(self, func: Callable[[np.ndarray], np.ndarray],
                 backward: Callable[[np.ndarray, np.ndarray], np.ndarray] | None = None) -> None:
        super().__init__()
        self.func = func
        self.backward_func = backward
        self._reshape_only: dict[tuple[int, ...], bool] = {}

    def forward(self, input: np.ndarray) -> np.ndarray:
        output = self.func(input)
        self.save_for_backward(input if self.backward_func else input.shape)
        return output

    def _is_reshape(self, shape: tuple[int, ...]) -> bool:
        if shape not in self._reshape_only:
            probe = np.arange(int(np.prod(shape)), dtype=np.float64).reshape(shape)
            try:
                result = np.asarray(self.func(probe))
                ok = result.size == probe.size and np.array_equal(result.reshape(-1), probe.reshape(-1))
            except Exception:  # any failure on the probe means "not a pure reshape"
                ok = False
            self._reshape_only[shape] = ok
        return self._reshape_only[shape]

    def backward(self, grad_output: np.ndarray, needs_input_grad: bool = True) -> np.ndarray | None:
        (saved,) = self.saved_tensors()
        if self.backward_func is not None:
            return self.backward_func(grad_output, saved)
        shape = saved
        if not self._is_reshape(shape):
            raise RuntimeError(
                f"Lambda({self._func_name()}).backward(): the function is not a pure reshape of its "
                f"input of shape {shape}, so its gradient is unknown; pass backward=fn(grad_output, input)"
            )
        return grad_output.reshape(shape)

    def _func_name(self) -> str:
        return getattr(self.func, "__name__", type(self.func).__name__)

    def extra_repr(self) -> str:
        return self._func_name()
