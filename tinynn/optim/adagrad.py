"""Adagrad (``torch.optim.Adagrad``): torch's single-tensor loop, op for op (see ``adam.py`` on rounding)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tinynn.optim.optimizer import Optimizer, _advance_step, _is_torch_tensor


def adagrad_update(param: np.ndarray, grad: np.ndarray, state_sum: np.ndarray, *, step: float, lr: float,
                   lr_decay: float, weight_decay: float, eps: float, maximize: bool) -> None:
    """One Adagrad step on one array, in place; ``step`` is the count after this step (1 on the first).

    torch's ``_single_tensor_adagrad``, term by term and in its order::

        g = -grad if maximize else grad
        g = g + weight_decay * param                        (L2 penalty)
        clr = lr / (1 + (step - 1) * lr_decay)
        sum = sum + g * g
        param += (-clr * g) / (sqrt(sum) + eps)

    ``grad`` is never written to. The hyper-parameters must be Python floats, so that float32
    arrays stay float32.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # torch gives inf/NaN silently
        g = np.negative(grad) if maximize else grad
        if weight_decay != 0:
            g = g + weight_decay * param
        clr = lr / (1 + (step - 1) * lr_decay)
        state_sum += g * g
        std = np.sqrt(state_sum) + eps
        param += -clr * g / std


class Adagrad(Optimizer):
    """Adagrad (``torch.optim.Adagrad``): each entry's step shrinks with its summed squared gradients.

    As in torch, the state of every parameter is created with the optimizer: ``step`` (a 0-d
    float32 array, like torch's tensor) at 0 and ``sum`` filled with ``initial_accumulator_value``
    (the constructor's, also for groups that set their own, and for parameters added later, as
    torch does). Parameters whose ``grad`` is None are skipped. ``foreach``, ``differentiable``
    and ``fused`` are accepted as None/False and refused when true.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, lr_decay: float = 0, weight_decay: float = 0,
                 initial_accumulator_value: float = 0, eps: float = 1e-10, foreach: bool | None = None, *,
                 maximize: bool = False, differentiable: bool = False, fused: bool | None = None) -> None:
        # torch's checks, in torch's order and words.
        if _is_torch_tensor(lr) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= lr_decay:
            raise ValueError(f"Invalid lr_decay value: {lr_decay}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= initial_accumulator_value:
            raise ValueError(f"Invalid initial_accumulator_value value: {initial_accumulator_value}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        defaults = {"lr": lr, "lr_decay": lr_decay, "eps": eps, "weight_decay": weight_decay,
                    "initial_accumulator_value": initial_accumulator_value, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable, "fused": fused}
        super().__init__(params, defaults)
        self._refuse_other_implementations(fused=fused, foreach=foreach, differentiable=differentiable)
        for group in self.param_groups:
            for param in group["params"]:
                self._init_state(param)

    def _init_state(self, param: Any) -> None:
        state = self.state[param]
        state["step"] = np.zeros((), dtype=np.float32)
        state["sum"] = np.full_like(param.data, float(self.defaults["initial_accumulator_value"]))

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter with a gradient; returns ``closure()`` (re-evaluated loss) if given."""
        loss = self._start_step(closure)
        for group in self.param_groups:
            # float(): a np.float64 or tensor hyper-parameter would upcast float32 params.
            hyper = {"lr": float(group["lr"]), "lr_decay": float(group["lr_decay"]),
                     "weight_decay": float(group["weight_decay"]), "eps": float(group["eps"]),
                     "maximize": bool(group["maximize"])}
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if len(state) == 0:  # added with add_param_group, or absent from a loaded state_dict
                    self._init_state(param)
                step = _advance_step(state)
                adagrad_update(param.data, param.grad, state["sum"], step=step, **hyper)
        return loss
