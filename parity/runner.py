"""Drive a stage's torch and tinynn versions in lockstep and compare every step.

Each version is a generator (see parity/events.py). The runner resumes torch, then tinynn, and
compares what they yielded: the loss, every gradient, every weight after the update, the SGD
momentum buffers, and each epoch's validation loss and accuracy. Only the time spent inside each
generator counts towards that framework's seconds.

Modes:
* ``lockstep`` (float64): both run on their own from the same start; every number must agree to
  PARITY_F64_RTOL at every step.
* ``per_step`` (float32): before each step tinynn takes torch's current weights and momentum, so
  each step is checked from shared weights (PARITY_F32_RTOL / PARITY_F32_ATOL).
* ``independent`` (float32): both train on their own; only the final validation accuracy is held
  to a bound (PARITY_F32_ACCURACY_POINTS), since float32 training is chaotic.
"""

from __future__ import annotations

import os
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from parity.compare import assert_close, to_numpy
from parity.context import StageContext, TutorialData
from parity.events import Epoch, Start, Step
from parity.tolerances import (
    PARITY_F32_ACCURACY_POINTS,
    PARITY_F32_ATOL,
    PARITY_F32_RTOL,
    PARITY_F64_RTOL,
)

# cuBLAS reads this when CUDA starts; deterministic algorithms need it (harmless without a GPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

KINDS = ("loss", "grads", "weights", "momentum", "val_loss", "val_accuracy")
MAX_FAILURES_KEPT = 10


class ParityError(RuntimeError):
    """The two versions of a stage cannot be compared (different parameters, out of step...)."""


@dataclass
class RunConfig:
    dtype: str = "float64"
    device: str = "cpu"  # where torch runs stages 1-12 (stage 13 takes CUDA whenever torch has it)
    epochs: int = 2
    max_steps: int | None = None  # per epoch: the training set is cut to its first max_steps * 64 rows
    valid_size: int | None = None  # the validation set is cut to its first valid_size rows
    seed: int = 0


@dataclass
class SideRecord:
    """What one framework did in a run."""

    losses: list[float] = field(default_factory=list)
    epoch_ends: list[int] = field(default_factory=list)  # step count at each epoch's end
    val_loss: list[float] = field(default_factory=list)
    val_accuracy: list[float] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def train_loss(self) -> float:
        """Mean training loss over the last epoch (the last steps run, when the run stopped early)."""
        start = self.epoch_ends[-2] if len(self.epoch_ends) >= 2 else 0
        tail = self.losses[start:] or self.losses
        return float(np.mean(tail)) if tail else float("nan")

    def to_json(self) -> dict[str, Any]:
        return {"train_loss": self.train_loss, "val_loss": self.val_loss, "val_accuracy": self.val_accuracy,
                "seconds": round(self.seconds, 3), "losses": self.losses}


@dataclass
class StageResult:
    name: str
    title: str
    kind: str
    mode: str
    torch_device: str = "cpu"
    steps: int = 0
    worst: dict[str, float] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)  # arrays compared, per kind
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    error: str | None = None
    tinynn: SideRecord = field(default_factory=SideRecord)
    torch: SideRecord = field(default_factory=SideRecord)
    end_to_end: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        e2e_ok = self.end_to_end is None or self.end_to_end.get("ok", False)
        return self.error is None and self.failure_count == 0 and self.steps > 0 and e2e_ok

    def fail(self, message: str) -> None:
        self.failure_count += 1
        if len(self.failures) < MAX_FAILURES_KEPT:
            self.failures.append(message)


@dataclass
class Tolerance:
    rtol: float
    atol: float = 0.0
    accuracy_points: float | None = None  # val accuracy: an absolute bound instead of rtol/atol
    check_steps: bool = True


TOLERANCES = {
    "lockstep": Tolerance(PARITY_F64_RTOL),
    "per_step": Tolerance(PARITY_F32_RTOL, PARITY_F32_ATOL, PARITY_F32_ACCURACY_POINTS),
    "independent": Tolerance(PARITY_F32_RTOL, PARITY_F32_ATOL, PARITY_F32_ACCURACY_POINTS, check_steps=False),
}


# ---------------------------------------------------------------------------------------- torch set-up
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@contextmanager
def torch_settings(dtype: str, device: str) -> Iterator[None]:
    """torch's global defaults for a run, restored afterwards.

    ``set_default_dtype`` makes the tutorial's unchanged code build float64 tensors and models;
    ``set_default_device`` puts them on the GPU for ``--device cuda``. With a GPU, TF32 is off and
    only deterministic algorithms run, so a GPU run is reproducible and IEEE-exact per operation.
    """
    import torch

    saved = (torch.get_default_dtype(), torch.get_default_device(),
             (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.set_default_dtype(torch.float64 if dtype == "float64" else torch.float32)
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # warn_only: AdaptiveAvgPool2d's CUDA backward has no deterministic version and would raise.
        # With output size 1 (stages 12, 13) each input gets exactly one atomic add, so the order of
        # additions cannot change any bit; the warning says nothing useful here and is silenced.
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device != "cpu":
        torch.set_default_device(device)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="adaptive_avg_pool2d_backward_cuda does not have a deterministic")
            yield
    finally:
        torch.set_default_dtype(saved[0])
        if device != "cpu":
            # None, not "cpu": a default device installs a mode that slows every later torch call.
            torch.set_default_device(None if saved[1].type == "cpu" else saved[1])
        torch.use_deterministic_algorithms(saved[2][0], warn_only=saved[2][1])
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved[3:]


# ---------------------------------------------------------------------------------------- helpers
def _array_of(param: Any) -> np.ndarray:
    """The writable ndarray behind a tinynn Parameter or a plain array."""
    data = getattr(param, "data", None)
    return data if isinstance(data, np.ndarray) and not isinstance(param, np.ndarray) else param


def momentum_buffers(step: Step) -> dict[str, Any]:
    """SGD's momentum buffers by parameter name (empty without momentum)."""
    if step.optimizer is None:
        return {}
    buffers = {}
    for name, param in step.params.items():
        state = step.optimizer.state.get(param)
        if state and state.get("momentum_buffer") is not None:
            buffers[name] = state["momentum_buffer"]
    return buffers


def _load_start(tinynn_start: Start, torch_start: Start) -> str:
    """Give tinynn torch's initial weights (values and dtype); return torch's device."""
    if set(tinynn_start.params) != set(torch_start.params):
        raise ParityError(
            f"the models' parameters differ: torch has {sorted(torch_start.params)}, "
            f"tinynn has {sorted(tinynn_start.params)}"
        )
    torch_values = {name: to_numpy(value) for name, value in torch_start.params.items()}
    first = next(iter(torch_start.params.values()), None)
    device = str(getattr(first, "device", "cpu"))
    if tinynn_start.model is not None and torch_values:
        tinynn_start.model.to(next(iter(torch_values.values())).dtype)
    for name, target in tinynn_start.params.items():
        array, value = _array_of(target), torch_values[name]
        if array.shape != value.shape or array.dtype != value.dtype:
            raise ParityError(
                f"parameter {name}: tinynn has {array.dtype}{list(array.shape)}, torch {value.dtype}{list(value.shape)}"
            )
        np.copyto(array, value)
    return device


def _sync(tinynn_step: Step, torch_step: Step) -> None:
    """Per-step mode: tinynn continues from torch's weights and momentum, not its own."""
    for name, target in tinynn_step.params.items():
        np.copyto(_array_of(target), to_numpy(torch_step.params[name]))
    torch_buffers = momentum_buffers(torch_step)
    if not torch_buffers:
        return
    for name, param in tinynn_step.params.items():
        state = tinynn_step.optimizer.state[param]
        state["momentum_buffer"] = np.array(to_numpy(torch_buffers[name]), copy=True)


class _Checker:
    def __init__(self, result: StageResult, tolerance: Tolerance) -> None:
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
        if diff <= self.tol.atol + self.tol.rtol * scale:
            return
        try:  # a NaN in the same place in both, or any other reason: let assert_close decide and explain
            assert_close(a, e, rtol=self.tol.rtol, atol=self.tol.atol, name=label, check_dtype=check_dtype)
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
        tinynn_buffers, torch_buffers = momentum_buffers(tinynn_step), momentum_buffers(torch_step)
        if set(tinynn_buffers) != set(torch_buffers):
            self.result.fail(f"{where}: momentum buffers for {sorted(tinynn_buffers)} vs torch {sorted(torch_buffers)}")
        for name in torch_buffers.keys() & tinynn_buffers.keys():
            self.check("momentum", f"{where} momentum {name}", tinynn_buffers[name], torch_buffers[name])

    def epoch(self, index: int, tinynn_epoch: Epoch, torch_epoch: Epoch) -> None:
        # Metrics are Python floats on one side and tensors or NumPy scalars on the other: no dtype check.
        self.check("val_loss", f"epoch {index} val loss", tinynn_epoch.val_loss, torch_epoch.val_loss,
                   check_dtype=False)
        self.check("val_accuracy", f"epoch {index} val accuracy", tinynn_epoch.val_accuracy,
                   torch_epoch.val_accuracy, check_dtype=False)


class _Timed:
    """A generator whose ``next()`` time is added up; ``None`` once it is exhausted."""

    def __init__(self, generator: Iterator[Any], record: SideRecord, framework: str) -> None:
        self.generator = generator
        self.record = record
        self.framework = framework

    def next(self) -> Any:
        start = time.perf_counter()
        try:
            return next(self.generator)
        except StopIteration:
            return None
        except Exception as exc:
            raise _FrameworkError(self.framework, exc) from exc
        finally:
            self.record.seconds += time.perf_counter() - start

    def close(self) -> None:
        try:
            self.generator.close()
        except Exception:  # closing after a failure must not hide that failure
            pass


class _FrameworkError(Exception):
    def __init__(self, framework: str, exc: BaseException) -> None:
        super().__init__(framework)
        self.framework = framework
        self.exc = exc


def _describe(error: _FrameworkError) -> str:
    frames = [frame for frame in traceback.extract_tb(error.exc.__traceback__)
              if not frame.filename.endswith(os.path.join("parity", "runner.py"))]
    where = "; ".join(f"{os.path.relpath(f.filename) if os.path.isabs(f.filename) else f.filename}:{f.lineno} "
                      f"in {f.name}" for f in frames[-3:])
    return f"{error.framework} raised {type(error.exc).__name__}: {error.exc} (at {where})"


def cut_data(data: TutorialData, config: RunConfig, batch_size: int = 64) -> TutorialData:
    """The data a run uses: the training set cut to ``max_steps`` batches, the validation set to ``valid_size``."""
    n_train = None if config.max_steps is None else config.max_steps * batch_size
    n_valid = config.valid_size
    return TutorialData(data.x_train[:n_train], data.y_train[:n_train], data.x_valid[:n_valid],
                        data.y_valid[:n_valid], data.source)


# ---------------------------------------------------------------------------------------- one pass
def drive(stage: ModuleType, data: TutorialData, config: RunConfig, mode: str,
          progress: Callable[[str], None] | None = None) -> StageResult:
    """Run one stage in both frameworks in lockstep (data already cut) and compare as ``mode`` says."""
    import torch

    import tinynn

    result = StageResult(stage.NAME, stage.TITLE, stage.KIND, mode)
    checker = _Checker(result, TOLERANCES[mode])
    ctx = StageContext(data, config.epochs, config.seed)
    torch.manual_seed(config.seed)
    tinynn.manual_seed(config.seed)
    torch_side = _Timed(stage.torch_version(ctx), result.torch, "torch")
    tinynn_side = _Timed(stage.tinynn_version(ctx), result.tinynn, "tinynn")
    epochs_seen = 0
    try:
        torch_start, tinynn_start = torch_side.next(), tinynn_side.next()
        if not isinstance(torch_start, Start) or not isinstance(tinynn_start, Start):
            raise ParityError("each version must first yield Start(...) with its model's parameters")
        result.torch_device = _load_start(tinynn_start, torch_start)
        while True:
            torch_event, tinynn_event = torch_side.next(), tinynn_side.next()
            if torch_event is None and tinynn_event is None:
                break
            if type(torch_event) is not type(tinynn_event):
                raise ParityError(f"out of step after {result.steps} steps: torch yielded "
                                  f"{type(torch_event).__name__}, tinynn {type(tinynn_event).__name__}")
            if isinstance(torch_event, Step):
                result.steps += 1
                result.torch.losses.append(float(torch_event.loss))
                result.tinynn.losses.append(float(tinynn_event.loss))
                checker.step(result.steps, tinynn_event, torch_event)
                if mode == "per_step":
                    _sync(tinynn_event, torch_event)
            elif isinstance(torch_event, Epoch):
                epochs_seen += 1
                for side, event in ((result.torch, torch_event), (result.tinynn, tinynn_event)):
                    side.epoch_ends.append(result.steps)
                    side.val_loss.append(event.val_loss)
                    side.val_accuracy.append(event.val_accuracy)
                checker.epoch(epochs_seen, tinynn_event, torch_event)
                if progress:
                    progress(_epoch_line(result, epochs_seen, config.epochs))
            else:
                raise ParityError(f"unexpected event {torch_event!r}")
    except _FrameworkError as exc:
        result.error = _describe(exc)
    except ParityError as exc:
        result.error = str(exc)
    finally:
        torch_side.close()
        tinynn_side.close()
    if mode == "independent" and result.error is None:
        result.end_to_end = _end_to_end(result)
    return result


def _epoch_line(result: StageResult, epoch: int, epochs: int) -> str:
    t, n = result.torch, result.tinynn
    worst = max(result.worst.get(kind, 0.0) for kind in ("loss", "grads", "weights"))
    return (f"    epoch {epoch}/{epochs}: {result.steps} steps, val loss tinynn {n.val_loss[-1]:.4f} "
            f"torch {t.val_loss[-1]:.4f}, val acc {n.val_accuracy[-1]:.4f} / {t.val_accuracy[-1]:.4f}, "
            f"worst rel diff {worst:.1e} ({n.seconds:.1f}s / {t.seconds:.1f}s)")


def _end_to_end(result: StageResult) -> dict[str, Any]:
    tinynn_acc = result.tinynn.val_accuracy[-1] if result.tinynn.val_accuracy else float("nan")
    torch_acc = result.torch.val_accuracy[-1] if result.torch.val_accuracy else float("nan")
    gap = abs(tinynn_acc - torch_acc)
    return {"tinynn_val_accuracy": tinynn_acc, "torch_val_accuracy": torch_acc, "accuracy_gap": gap,
            "bound": PARITY_F32_ACCURACY_POINTS, "ok": bool(gap <= PARITY_F32_ACCURACY_POINTS)}


# ---------------------------------------------------------------------------------------- a stage, a run
def run_stage(stage: ModuleType, data: TutorialData, config: RunConfig,
              progress: Callable[[str], None] | None = None) -> StageResult:
    """float64: one lockstep pass. float32: a per-step pass (the checks), then an independent one
    (each framework's own training, its figures and timings, and the end-to-end accuracy bound)."""
    data = cut_data(data, config)
    if config.dtype == "float64":
        return drive(stage, data, config, "lockstep", progress)
    if progress:
        progress("    float32, per step from torch's weights:")
    checked = drive(stage, data, config, "per_step", progress)
    if progress:
        progress("    float32, each framework on its own:")
    free = drive(stage, data, config, "independent", progress)
    checked.tinynn, checked.torch = free.tinynn, free.torch
    checked.end_to_end = free.end_to_end or {"ok": False}
    checked.end_to_end["worst_rel_diff"] = {k: free.worst.get(k, 0.0) for k in KINDS}
    if free.error and not checked.error:
        checked.error = f"independent run: {free.error}"
    return checked


def warm_up_torch() -> None:
    """One small conv + SGD-momentum step, so that torch's one-off start-up costs (lazy imports in
    its optimizers, first kernel dispatch) are not billed to the first stage's timing."""
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 1, 28, 28)), torch.arange(8))
        loss.backward()
        opt.step()
        opt.zero_grad()


def run_stages(stages: list[ModuleType], data: TutorialData, config: RunConfig,
               progress: Callable[[str], None] | None = None) -> list[StageResult]:
    results = []
    with torch_settings(config.dtype, config.device):
        warm_up_torch()
        for number, stage in enumerate(stages, start=1):
            if progress:
                progress(f"[{number}/{len(stages)}] {stage.NAME}: {stage.TITLE}")
            result = run_stage(stage, data, config, progress)
            if progress:
                progress(_summary_line(result))
            results.append(result)
    return results


def _summary_line(result: StageResult) -> str:
    status = "ok" if result.ok else "FAILED"
    worst = ", ".join(f"{kind} {result.worst.get(kind, 0.0):.1e}" for kind in ("loss", "grads", "weights"))
    lines = [f"    {status}: {result.steps} steps on torch {result.torch_device}, worst rel diff {worst}; "
             f"tinynn {result.tinynn.seconds:.1f}s, torch {result.torch.seconds:.1f}s"]
    if result.error:
        lines.append(f"    error: {result.error}")
    lines += [f"    {failure}" for failure in result.failures[:3]]
    if result.failure_count > 3:
        lines.append(f"    ... {result.failure_count - 3} more failed checks")
    if result.end_to_end and not result.end_to_end.get("ok", False) and "accuracy_gap" in result.end_to_end:
        lines.append(f"    end to end: val accuracy {result.end_to_end['accuracy_gap']:.4f} apart "
                     f"(bound {result.end_to_end['bound']})")
    return "\n".join(lines)
