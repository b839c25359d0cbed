"""The comparisons: each array tinynn produced against torch's, held to the tolerance of the mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from parity.events import Epoch, Step
from tinynn.testing.compare import assert_close, to_numpy
from tinynn.testing.tolerances import (
    PARITY_ACCURACY_RTOL,
    PARITY_F32_ACCURACY_POINTS,
    PARITY_F32_ATOL,
    PARITY_F32_RTOL,
    PARITY_F64_RTOL,
)

KINDS = ("loss", "grads", "weights", "optimizer", "buffers", "val_loss", "val_accuracy")


@dataclass
class Tolerance:
    rtol: float
    atol: float = 0.0
    accuracy_points: float | None = None  # val accuracy: an absolute bound instead of rtol/atol
    check_steps: bool = True
    accuracy_rtol: float | None = None  # val accuracy: its own rtol (it is a float32 number)


def tolerance(dtype: str, mode: str) -> Tolerance:
    """What each compared number is held to, from tinynn/testing/tolerances.py."""
    if mode == "independent":
        return Tolerance(PARITY_F64_RTOL, accuracy_points=PARITY_F32_ACCURACY_POINTS, check_steps=False)
    if dtype == "float64":
        return Tolerance(PARITY_F64_RTOL, accuracy_rtol=PARITY_ACCURACY_RTOL)
    return Tolerance(PARITY_F32_RTOL, PARITY_F32_ATOL, PARITY_F32_ACCURACY_POINTS)


def optimizer_state(step: Step) -> dict[str, Any]:
    """The optimizer's state by ``"<parameter> <key>"`` (``"conv1.weight momentum_buffer"``,
    ``"fc.bias exp_avg_sq"``, ``"fc.bias step"``): SGD's momentum, Adam's moments and step count."""
    if step.optimizer is None:
        return {}
    entries = {}
    for name, param in step.params.items():
        for key, value in (step.optimizer.state.get(param) or {}).items():
            if value is not None:
                entries[f"{name} {key}"] = value
    return entries


class Checker:
    def __init__(self, result: Any, tolerance: Tolerance) -> None:
        self.result = result
        self.tol = tolerance
        for kind in KINDS:
            result.worst.setdefault(kind, 0.0)
            result.checked.setdefault(kind, 0)

    def check(self, kind: str, label: str, actual: Any, expected: Any, *, check_dtype: bool = True) -> None:
        a, e = to_numpy(actual), to_numpy(expected)
        self.result.checked[kind] += 1
        if a.shape != e.shape or (check_dtype and a.dtype != e.dtype):
            self.result.worst[kind] = float("inf")
            self.result.fail(f"{label}: tinynn {a.dtype}{list(a.shape)} vs torch {e.dtype}{list(e.shape)}")
            return
        a64, e64 = np.asarray(a, dtype=np.float64), np.asarray(e, dtype=np.float64)
        diff = float(np.max(np.abs(a64 - e64))) if a.size else 0.0
        scale = float(np.max(np.abs(e64))) if e.size else 0.0
        rel = 0.0 if diff == 0.0 else (diff / scale if scale > 0 else float("inf"))
        if np.isnan(rel):
            rel = float("inf")
        self.result.worst[kind] = max(self.result.worst[kind], rel)
        if not self.tol.check_steps:  # independent float32 runs: only the final accuracy is bounded
            return
        if kind == "val_accuracy" and self.tol.accuracy_points is not None:
            if not diff <= self.tol.accuracy_points:
                self.result.fail(f"{label}: tinynn {float(a):.4f} vs torch {float(e):.4f}, "
                                 f"more than {self.tol.accuracy_points:g} apart")
            return
        rtol = self.tol.rtol
        if kind == "val_accuracy" and self.tol.accuracy_rtol is not None:
            rtol = self.tol.accuracy_rtol
        if diff <= self.tol.atol + rtol * scale:
            return
        try:  # a NaN in the same place in both, or any other reason: let assert_close decide and explain
            assert_close(a, e, rtol=rtol, atol=self.tol.atol, name=label, check_dtype=check_dtype)
        except AssertionError as exc:
            self.result.fail(str(exc))

    def step(self, index: int, tinynn_step: Step, torch_step: Step) -> None:
        where = f"step {index}"
        self.check("loss", f"{where} loss", tinynn_step.loss, torch_step.loss)
        if set(tinynn_step.grads) != set(torch_step.grads):
            self.result.fail(f"{where}: gradients for {sorted(tinynn_step.grads)} vs torch {sorted(torch_step.grads)}")
        for name in torch_step.grads.keys() & tinynn_step.grads.keys():
            self.check("grads", f"{where} grad {name}", tinynn_step.grads[name], torch_step.grads[name])
        for name, param in torch_step.params.items():
            if name in tinynn_step.params:
                self.check("weights", f"{where} weight {name}", tinynn_step.params[name], param)
        for kind, tinynn_arrays, torch_arrays in (
            ("optimizer", optimizer_state(tinynn_step), optimizer_state(torch_step)),
            ("buffers", tinynn_step.buffers, torch_step.buffers),
        ):
            if set(tinynn_arrays) != set(torch_arrays):
                self.result.fail(f"{where}: {kind} {sorted(tinynn_arrays)} vs torch {sorted(torch_arrays)}")
            for name in torch_arrays.keys() & tinynn_arrays.keys():
                # the step counts: tinynn keeps numbers where torch keeps tensors of its own dtype
                self.check(kind, f"{where} {kind} {name}", tinynn_arrays[name], torch_arrays[name],
                           check_dtype=not name.endswith((" step", "num_batches_tracked")))

    def epoch(self, index: int, tinynn_epoch: Epoch, torch_epoch: Epoch) -> None:
        # Metrics are Python floats on one side and tensors or NumPy scalars on the other: no dtype check.
        self.check("val_loss", f"epoch {index} val loss", tinynn_epoch.val_loss, torch_epoch.val_loss,
                   check_dtype=False)
        self.check("val_accuracy", f"epoch {index} val accuracy", tinynn_epoch.val_accuracy,
                   torch_epoch.val_accuracy, check_dtype=False)
