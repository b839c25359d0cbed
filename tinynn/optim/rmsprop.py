"""RMSprop, optionally centered and with momentum (``torch.optim.RMSprop``), op for op torch's."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tinynn.optim.adam import lerp
from tinynn.optim.optimizer import Optimizer, _advance_step, _is_torch_tensor


def rmsprop_update(param: np.ndarray, grad: np.ndarray, square_avg: np.ndarray, grad_avg: np.ndarray | None,
                   momentum_buffer: np.ndarray | None, *, lr: float, alpha: float, eps: float,
                   weight_decay: float, momentum: float, centered: bool, maximize: bool) -> None:
    """One RMSprop step on one array, in place.

    torch's ``_single_tensor_rmsprop``, term by term and in its order (``lerp`` in
    ``tinynn.optim.adam``)::

        g = -grad if maximize else grad
        g = g + weight_decay * param                              (L2 penalty)
        square_avg = alpha * square_avg + ((1 - alpha) * g) * g
        grad_avg = lerp(grad_avg, g, 1 - alpha)                   (centered)
        avg = sqrt(square_avg - grad_avg * grad_avg) + eps        (centered)
        avg = sqrt(square_avg) + eps                              (otherwise)
        buf = momentum * buf + g / avg;  param += -lr * buf       (momentum > 0)
        param += (-lr * g) / avg                                  (otherwise)

    ``grad_avg`` is needed when ``centered``, ``momentum_buffer`` when ``momentum > 0``.
    ``grad`` is never written to. The hyper-parameters must be Python floats, so that float32
    arrays stay float32.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # torch gives inf/NaN silently
        g = np.negative(grad) if maximize else grad
        if weight_decay != 0:
            g = g + weight_decay * param
        square_avg *= alpha
        square_avg += (1 - alpha) * g * g
        if centered:
            grad_avg[...] = lerp(grad_avg, g, 1 - alpha)
            avg = np.sqrt(square_avg - grad_avg * grad_avg)
        else:
            avg = np.sqrt(square_avg)
        avg = avg + eps
        if momentum > 0:
            momentum_buffer *= momentum
            momentum_buffer += g / avg
            param += -lr * momentum_buffer
        else:
            param += -lr * g / avg


class RMSprop(Optimizer):
    """RMSprop (``torch.optim.RMSprop``): divide by a running root mean square of the gradient.

    Per parameter the state holds ``step`` (a 0-d float32 array, like torch's tensor),
    ``square_avg``, ``momentum_buffer`` (if the group's momentum was positive when the state was
    created) and ``grad_avg`` (if centered), created on the parameter's first gradient. Parameters
    whose ``grad`` is None are skipped. ``capturable``, ``foreach`` and ``differentiable`` are
    accepted as None/False and refused when true (see ``Optimizer._refuse_other_implementations``).
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0, momentum: float = 0, centered: bool = False, capturable: bool = False,
                 foreach: bool | None = None, maximize: bool = False, differentiable: bool = False) -> None:
        # torch's checks, in torch's order and words.
        if _is_torch_tensor(lr) and lr.numel() != 1:
            raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise ValueError(f"Invalid alpha value: {alpha}")
        defaults = {"lr": lr, "momentum": momentum, "alpha": alpha, "eps": eps, "centered": centered,
                    "weight_decay": weight_decay, "capturable": capturable, "foreach": foreach,
                    "maximize": maximize, "differentiable": differentiable}
        super().__init__(params, defaults)
        self._refuse_other_implementations()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter with a gradient; returns ``closure()`` (re-evaluated loss) if given."""
        loss = self._start_step(closure)
        for group in self.param_groups:
            # float(): a np.float64 or tensor hyper-parameter would upcast float32 params.
            hyper = {"lr": float(group["lr"]), "alpha": float(group["alpha"]), "eps": float(group["eps"]),
                     "weight_decay": float(group["weight_decay"]), "momentum": float(group["momentum"]),
                     "centered": bool(group["centered"]), "maximize": bool(group["maximize"])}
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if len(state) == 0:
                    state["step"] = np.zeros((), dtype=np.float32)
                    state["square_avg"] = np.zeros_like(param.data)
                    if hyper["momentum"] > 0:
                        state["momentum_buffer"] = np.zeros_like(param.data)
                    if hyper["centered"]:
                        state["grad_avg"] = np.zeros_like(param.data)
                _advance_step(state)  # counted, as in torch, though the update does not use it
                rmsprop_update(param.data, param.grad, state["square_avg"],
                               state["grad_avg"] if hyper["centered"] else None,
                               state["momentum_buffer"] if hyper["momentum"] > 0 else None, **hyper)
        return loss
