"""SGD with optional momentum, dampening, Nesterov momentum, weight decay and maximize (torch's rule)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tinynn._grad_mode import enable_grad
from tinynn.optim.optimizer import Optimizer


def sgd_update(param: np.ndarray, grad: np.ndarray, momentum_buffer: np.ndarray | None, *, lr: float,
               momentum: float, dampening: float, weight_decay: float, nesterov: bool,
               maximize: bool) -> np.ndarray | None:
    """One SGD step on one array, in place; returns the (new or updated) momentum buffer.

    torch's ``_single_tensor_sgd``, term by term::

        g = -grad if maximize else grad
        g = g + weight_decay * param                            (L2 penalty, before momentum)
        buf = g  (first step)   or   buf = momentum * buf + (1 - dampening) * g
        g = g + momentum * buf  (nesterov)   or   g = buf
        param -= lr * g

    ``grad`` is never written to; ``param`` and ``momentum_buffer`` are. The hyper-parameters
    must be Python floats so that float32 arrays stay float32.
    """
    direction = grad
    if maximize:
        direction = np.negative(grad)
    if weight_decay != 0:
        decay = param * weight_decay
        decay += direction  # g + weight_decay * param, summed into the array we already own
        direction = decay
    if momentum != 0:
        if momentum_buffer is None:
            # First step: buf = g, not dampened; copied unless ``direction`` is already our own array.
            momentum_buffer = grad.copy() if direction is grad else direction
        else:
            momentum_buffer *= momentum
            if dampening == 0:
                momentum_buffer += direction
            else:
                momentum_buffer += direction * (1.0 - dampening)
        if nesterov:
            direction = direction + momentum_buffer * momentum
        else:
            direction = momentum_buffer
    param -= direction * lr
    return momentum_buffer


class SGD(Optimizer):
    """Stochastic gradient descent, optionally with momentum (``torch.optim.SGD``).

    The update (see ``sgd_update``) follows torch exactly, including its momentum convention
    ``buf = momentum * buf + (1 - dampening) * g; param -= lr * buf`` (lr outside the buffer) and a
    first buffer equal to the gradient. Parameters whose ``grad`` is None are skipped.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0, dampening: float = 0,
                 weight_decay: float = 0, nesterov: bool = False, *, maximize: bool = False) -> None:
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        defaults = {"lr": lr, "momentum": momentum, "dampening": dampening, "weight_decay": weight_decay,
                    "nesterov": nesterov, "maximize": maximize}
        super().__init__(params, defaults)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter with a gradient; returns ``closure()`` (re-evaluated loss) if given."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:  # check every gradient first, so a bad one changes nothing
            for param in group["params"]:
                if param.grad is not None and param.grad.shape != param.data.shape:
                    raise RuntimeError(
                        f"SGD.step: a gradient of shape {param.grad.shape} was found for a parameter of "
                        f"shape {param.data.shape}"
                    )
        for group in self.param_groups:
            # float(): a np.float64 or tensor lr (e.g. from a schedule) would upcast float32 params.
            hyper = {"lr": float(group["lr"]), "momentum": float(group["momentum"]),
                     "dampening": float(group["dampening"]), "weight_decay": float(group["weight_decay"]),
                     "nesterov": bool(group["nesterov"]), "maximize": bool(group["maximize"])}
            uses_momentum = hyper["momentum"] != 0
            for param in group["params"]:
                if param.grad is None:
                    continue
                if uses_momentum:
                    state = self.state[param]
                    state["momentum_buffer"] = sgd_update(param.data, param.grad, state.get("momentum_buffer"),
                                                          **hyper)
                else:
                    sgd_update(param.data, param.grad, None, **hyper)
        return loss
