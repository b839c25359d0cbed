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
    PARITY_F32_KINK_STEP_FRACTION,
    PARITY_F32_RTOL,
    PARITY_F64_RTOL,
)

KINDS = ("loss", "grads", "weights", "optimizer", "hyperparams", "buffers", "val_loss", "val_accuracy")
# What a ReLU input on the other side of its kink changes in a step (see PARITY_F32_KINK_STEP_FRACTION):
# the gradients and, through them, the updated weights and the optimizer's state.
KINK_KINDS = ("grads", "weights", "optimizer")


@dataclass
class Tolerance:
    rtol: float
    atol: float = 0.0
    accuracy_points: float | None = None  # val accuracy: an absolute bound instead of rtol/atol
    check_steps: bool = True
    accuracy_rtol: float | None = None  # val accuracy: its own rtol (it is a float32 number)
    kink_step_fraction: float | None = None  # KINK_KINDS may break it on at most this fraction of steps


def tolerance(dtype: str, mode: str, kinks: bool = False) -> Tolerance:
    """What each compared number is held to, from tinynn/testing/tolerances.py. ``kinks``: the model
    has ReLUs (the CNN stages), whose kinks matter in float32 only (PARITY_F32_KINK_STEP_FRACTION)."""
    if mode == "independent":
        return Tolerance(PARITY_F64_RTOL, accuracy_points=PARITY_F32_ACCURACY_POINTS, check_steps=False)
    if dtype == "float64":
        return Tolerance(PARITY_F64_RTOL, accuracy_rtol=PARITY_ACCURACY_RTOL)
    return Tolerance(PARITY_F32_RTOL, PARITY_F32_ATOL, PARITY_F32_ACCURACY_POINTS,
                     kink_step_fraction=PARITY_F32_KINK_STEP_FRACTION if kinks else None)


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
        self._kink_failures: list[str] | None = None  # this step's, while a kinked step is checked
        for kind in KINDS:
            result.worst.setdefault(kind, 0.0)
            result.checked.setdefault(kind, 0)

    def _fail(self, kind: str, message: str) -> None:
        if self._kink_failures is not None and kind in KINK_KINDS:
            self._kink_failures.append(message)
        else:
            self.result.fail(message)

    def check(self, kind: str, label: str, actual: Any, expected: Any, *, check_dtype: bool = True) -> None:
        a, e = to_numpy(actual), to_numpy(expected)
        self.result.checked[kind] += 1
        if a.shape != e.shape or (check_dtype and a.dtype != e.dtype):
            self.result.worst[kind] = float("inf")
            self._fail(kind, f"{label}: tinynn {a.dtype}{list(a.shape)} vs torch {e.dtype}{list(e.shape)}")
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
                self._fail(kind, f"{label}: tinynn {float(a):.4f} vs torch {float(e):.4f}, "
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
            self._fail(kind, str(exc))

    def step(self, index: int, tinynn_step: Step, torch_step: Step) -> None:
        """Every array of one step; with a ``kink_step_fraction``, the KINK_KINDS that break the
        tolerance mark the step as kinked (counted, and bounded by ``finish``) instead of failing it."""
        if self.tol.kink_step_fraction is None:
            self._check_step(index, tinynn_step, torch_step)
            return
        self._kink_failures = []
        before = {kind: self.result.worst[kind] for kind in KINK_KINDS}
        try:
            self._check_step(index, tinynn_step, torch_step)
        finally:
            failures, self._kink_failures = self._kink_failures, None
        if failures:  # its differences go to kink_worst: ``worst`` stays the rounding of the other steps
            for kind in KINK_KINDS:
                self.result.kink_worst[kind] = max(self.result.kink_worst.get(kind, 0.0), self.result.worst[kind])
                self.result.worst[kind] = before[kind]
            self.result.kink_steps += 1
            if len(self.result.kink_examples) < 3:
                self.result.kink_examples.append(failures[0])

    def finish(self) -> None:
        """After the last step: too many kinked steps is a failure (PARITY_F32_KINK_STEP_FRACTION)."""
        bound = self.tol.kink_step_fraction
        # One kinked step is always allowed: in a short run (the tests' 10 steps) a single kink is
        # 10% of the steps, while a wrong gradient kinks every step.
        if bound is not None and self.result.kink_steps > max(1.0, bound * self.result.steps):
            self.result.fail(f"{self.result.kink_steps} of {self.result.steps} steps broke the gradient tolerance, "
                             f"more than the {bound:.0%} that ReLU kinks explain "
                             f"(first: {'; '.join(self.result.kink_examples)})")

    def _check_step(self, index: int, tinynn_step: Step, torch_step: Step) -> None:
        where = f"step {index}"
        self.check("loss", f"{where} loss", tinynn_step.loss, torch_step.loss)
        if set(tinynn_step.grads) != set(torch_step.grads):
            self._fail("grads", f"{where}: gradients for {sorted(tinynn_step.grads)} "
                                f"vs torch {sorted(torch_step.grads)}")
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
                self._fail(kind, f"{where}: {kind} {sorted(tinynn_arrays)} vs torch {sorted(torch_arrays)}")
            for name in torch_arrays.keys() & tinynn_arrays.keys():
                # the step counts: tinynn keeps numbers where torch keeps tensors of its own dtype
                self.check(kind, f"{where} {kind} {name}", tinynn_arrays[name], torch_arrays[name],
                           check_dtype=not name.endswith((" step", "num_batches_tracked")))
        self._check_hyperparameters(where, tinynn_step, torch_step)

    def _check_hyperparameters(self, where: str, tinynn_step: Step, torch_step: Step) -> None:
        """Each group's lr, betas and momentum as the step left them: a scheduler's work (OneCycleLR
        moves lr and beta1 every step), compared before the next step uses them."""
        if tinynn_step.optimizer is None or torch_step.optimizer is None:
            return
        groups = zip(tinynn_step.optimizer.param_groups, torch_step.optimizer.param_groups)
        for index, (mine, theirs) in enumerate(groups):
            for key in ("lr", "betas", "momentum"):
                if key in theirs or key in mine:
                    self.check("hyperparams", f"{where} group {index} {key}", np.asarray(mine.get(key), np.float64),
                               np.asarray(theirs.get(key), np.float64), check_dtype=False)

    def epoch(self, index: int, tinynn_epoch: Epoch, torch_epoch: Epoch) -> None:
        # Metrics are Python floats on one side and tensors or NumPy scalars on the other: no dtype check.
        self.check("val_loss", f"epoch {index} val loss", tinynn_epoch.val_loss, torch_epoch.val_loss,
                   check_dtype=False)
        self.check("val_accuracy", f"epoch {index} val accuracy", tinynn_epoch.val_accuracy,
                   torch_epoch.val_accuracy, check_dtype=False)
