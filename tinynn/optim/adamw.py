"""AdamW: Adam with decoupled weight decay (``torch.optim.AdamW``), op for op torch's."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from tinynn.optim.adam import Adam, adam_update


def adamw_update(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                 max_exp_avg_sq: np.ndarray | None, *, step: float, lr: float, beta1: float, beta2: float,
                 eps: float, weight_decay: float, amsgrad: bool, maximize: bool) -> None:
    """One AdamW step on one array, in place: ``adam_update`` with the weight decay decoupled::

        param *= 1 - lr * weight_decay        (before the moments; the gradient is left alone)
        g = -grad if maximize else grad
        exp_avg = lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq = beta2 * exp_avg_sq + ((1 - beta2) * g) * g
        max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)                      (amsgrad)
        denom = sqrt(exp_avg_sq or max_exp_avg_sq) / (1 - beta2 ** step) ** 0.5 + eps
        param += (-lr / (1 - beta1 ** step) * exp_avg) / denom

    torch's AdamW is its Adam with ``decoupled_weight_decay=True``; so is this.
    """
    adam_update(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step=step, lr=lr, beta1=beta1, beta2=beta2,
                eps=eps, weight_decay=weight_decay, amsgrad=amsgrad, maximize=maximize,
                decoupled_weight_decay=True)


class AdamW(Adam):
    """AdamW (``torch.optim.AdamW``): Adam whose weight decay shrinks the parameters directly
    (``param *= 1 - lr * weight_decay``) instead of joining the gradient, default 1e-2.

    Like torch's, its groups carry ``decoupled_weight_decay=True``, kept True whatever a loaded
    state_dict says.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
                 foreach: bool | None = None, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None) -> None:
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """``Optimizer.load_state_dict``, then ``decoupled_weight_decay=True`` in every group (as torch)."""
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
