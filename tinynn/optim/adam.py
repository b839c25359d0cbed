"""Adam (and, with ``decoupled_weight_decay``, AdamW): torch's single-tensor loop, op for op.

torch's ``_single_tensor_adam`` is a handful of in-place tensor ops; ``adam_update`` below is the
same ops on NumPy arrays, in the same order, with every Python-float scalar rounded to the array's
dtype as torch rounds it. Results agree to the last bit or two, not bit for bit: torch's CPU
kernels fuse the multiply and the add of ``lerp_``, ``addcmul_`` and ``add(alpha=)`` into one
rounding (an FMA), and its ``sqrt`` (MKL's, high-accuracy mode) is off by one ulp in about 0.7% of
entries; NumPy rounds each operation correctly. See ``tinynn/testing/tolerances.py`` (OPTIM_*).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from tinynn._textbook import is_textbook
from tinynn.optim.optimizer import Optimizer, _advance_step, _is_torch_tensor, _to_python_scalar


def lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """``torch.lerp(start, end, weight)`` for a scalar weight, in torch's two forms::

        |weight| < 0.5:  start + weight * (end - start)
        otherwise:       end - (end - start) * (1 - weight)

    (each exact at its own end: weight 0 gives ``start``, weight 1 gives ``end``). The weight is
    first rounded to the arrays' dtype, and ``1 - weight`` computed in it, as torch does.
    """
    weight = start.dtype.type(weight)
    if abs(weight) < 0.5:
        return start + float(weight) * (end - start)
    return end - (end - start) * float(1 - weight)


# ---------------------------------------------------------------------------------------- Adam
def adam_update(param: np.ndarray, grad: np.ndarray, exp_avg: np.ndarray, exp_avg_sq: np.ndarray,
                max_exp_avg_sq: np.ndarray | None, *, step: float, lr: float, beta1: float, beta2: float,
                eps: float, weight_decay: float, amsgrad: bool, maximize: bool,
                decoupled_weight_decay: bool) -> None:
    """One Adam step on one array, in place; ``step`` is the count after this step (1 on the first).

    torch's ``_single_tensor_adam``, term by term and in its order::

        g = -grad if maximize else grad
        param *= 1 - lr * weight_decay                 (decoupled: AdamW)
        g = g + weight_decay * param                   (otherwise: L2 penalty, Adam)
        exp_avg = lerp(exp_avg, g, 1 - beta1)          (beta1 * m + (1 - beta1) * g)
        exp_avg_sq = beta2 * exp_avg_sq + ((1 - beta2) * g) * g
        step_size = lr / (1 - beta1 ** step)
        max_exp_avg_sq = max(max_exp_avg_sq, exp_avg_sq)                      (amsgrad)
        denom = sqrt(exp_avg_sq or max_exp_avg_sq) / (1 - beta2 ** step) ** 0.5 + eps
        param += (-step_size * exp_avg) / denom

    ``grad`` is never written to; ``param`` and the moment arrays are. The hyper-parameters must
    be Python floats, so that float32 arrays stay float32 (each is rounded to the dtype, as torch
    rounds a scalar).
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # torch gives inf/NaN silently
        g = np.negative(grad) if maximize else grad
        if weight_decay != 0:
            if decoupled_weight_decay:
                param *= 1 - lr * weight_decay
            else:
                g = g + weight_decay * param
        exp_avg[...] = lerp(exp_avg, g, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * g * g

        bias_correction1 = 1 - beta1**step
        bias_correction2 = 1 - beta2**step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        if amsgrad:
            np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            denom = np.sqrt(max_exp_avg_sq) / bias_correction2_sqrt + eps
        else:
            denom = np.sqrt(exp_avg_sq) / bias_correction2_sqrt + eps
        param += -step_size * exp_avg / denom


class Adam(Optimizer):
    """Adam, optionally AMSGrad (``torch.optim.Adam``): torch's single-tensor loop, op for op.

    Per parameter the state holds ``step`` (a 0-d float32 array, like torch's float32 tensor),
    ``exp_avg``, ``exp_avg_sq`` and, with ``amsgrad``, ``max_exp_avg_sq``; it is created on the
    parameter's first gradient. Parameters whose ``grad`` is None are skipped (their ``step`` does
    not advance). ``foreach``, ``capturable``, ``differentiable`` and ``fused`` select other torch
    implementations; they are accepted as None/False (so torch's state_dicts load) and refused
    when true.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0, amsgrad: bool = False, *, foreach: bool | None = None,
                 maximize: bool = False, capturable: bool = False, differentiable: bool = False,
                 fused: bool | None = None, decoupled_weight_decay: bool = False) -> None:
        # torch's checks, in torch's order and words.
        if _is_torch_tensor(lr):
            if foreach and not capturable:
                raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
            if lr.numel() != 1:
                raise ValueError("Tensor lr must be 1-element")
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise ValueError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if not ((isinstance(betas[0], float) and isinstance(betas[1], float))
                or (_is_torch_tensor(betas[0]) and _is_torch_tensor(betas[1]))):
            raise ValueError("betas must be either both floats or both Tensors")
        for index, beta in enumerate(betas[:2]):
            if _is_torch_tensor(beta):
                if not capturable and foreach:
                    raise ValueError(f"betas[{index}] as a Tensor is not supported for capturable=False and "
                                     "foreach=True")
                if beta.numel() != 1:
                    raise ValueError(f"Tensor betas[{index}] must be 1-element")
        betas = (_to_python_scalar(betas[0]), _to_python_scalar(betas[1]))
        defaults = {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay, "amsgrad": amsgrad,
                    "maximize": maximize, "foreach": foreach, "capturable": capturable,
                    "differentiable": differentiable, "fused": fused,
                    "decoupled_weight_decay": decoupled_weight_decay}
        super().__init__(params, defaults)
        self._refuse_other_implementations(fused=fused, foreach=foreach, differentiable=differentiable)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Update every parameter with a gradient; returns ``closure()`` (re-evaluated loss) if given."""
        loss = self._start_step(closure)
        update = adam_update
        if not is_textbook():  # ENGINE DISPATCH: the same update in cache-sized blocks, split across the cores
            from tinynn._engine.optim import adam_update_in_blocks, split_across_cores

            update = split_across_cores(adam_update_in_blocks)
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            # float(): a np.float64 or tensor hyper-parameter would upcast float32 params.
            hyper = {"lr": float(group["lr"]), "beta1": float(beta1), "beta2": float(beta2),
                     "eps": float(group["eps"]), "weight_decay": float(group["weight_decay"]),
                     "amsgrad": bool(group["amsgrad"]), "maximize": bool(group["maximize"]),
                     "decoupled_weight_decay": bool(group["decoupled_weight_decay"])}
            for param in group["params"]:
                if param.grad is None:
                    continue
                state = self.state[param]
                if len(state) == 0:
                    state["step"] = np.zeros((), dtype=np.float32)
                    state["exp_avg"] = np.zeros_like(param.data)
                    state["exp_avg_sq"] = np.zeros_like(param.data)
                    if hyper["amsgrad"]:
                        state["max_exp_avg_sq"] = np.zeros_like(param.data)
                step = _advance_step(state)
                update(param.data, param.grad, state["exp_avg"], state["exp_avg_sq"],
                       state["max_exp_avg_sq"] if hyper["amsgrad"] else None, step=step, **hyper)
        return loss
