"""Drive a stage's torch and tinynn versions in lockstep and compare every step.

Each version is a generator (see parity/events.py). The runner resumes torch, then tinynn, and
compares what they yielded: the loss, every gradient, every weight after the update, the SGD
momentum buffers, and each epoch's validation loss and accuracy. Only the time spent inside each
generator counts towards that framework's seconds.

Modes:
* ``lockstep`` (float64): both run on their own from the same start; every number must agree to
  PARITY_F64_RTOL at every step.
* ``per_step`` (float32, or float64 on chaotic data): before each step tinynn takes torch's current
  weights and momentum, so each step is checked from shared weights (PARITY_F32_RTOL /
  PARITY_F32_ATOL in float32, PARITY_F64_RTOL in float64).
* ``independent`` (after a per-step pass): both train on their own; only the final validation
  accuracy is held to a bound (PARITY_F32_ACCURACY_POINTS), and only where that is meaningful.

Chaos: on MNIST float64 training is not chaotic (a 1e-15 nudge to torch's weights stays within 1e-15
in loss over two epochs), so lockstep is the proof there. Fashion-MNIST at the tutorial's lr 0.5 is:
measured here, the same nudge grows to a 1% loss difference within 100 steps of the logistic
regression and to O(1) by step 500, even in float64 and within torch alone. There only the per-step
checks prove anything, so they are used in both dtypes and the end-to-end bound is not applied.
"""

from __future__ import annotations

import contextlib
import os
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from parity.checks import KINDS, Checker, optimizer_state, tolerance
from parity.context import StageContext, TutorialData
from parity.events import Epoch, Start, Step
from parity.torch_setup import torch_settings, warm_up_torch
from tinynn.testing.compare import to_numpy
from tinynn.testing.tolerances import PARITY_F32_ACCURACY_POINTS, PARITY_F32_KINK_STEP_FRACTION

CHAOTIC_DATA = ("fashion-mnist",)  # see the module docstring
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
    per_step: bool | None = None  # None: float32 or chaotic data (see CHAOTIC_DATA) -> per step
    textbook: bool = False  # tinynn ran its textbook code (tinynn.is_textbook()), not the engine

    @property
    def tinynn_code(self) -> str:
        return "textbook" if self.textbook else "engine"

    def checks_per_step(self, source: str, chaotic_on: tuple[str, ...] = CHAOTIC_DATA) -> bool:
        """``chaotic_on``: the datasets on which a stage's float64 training is chaotic (a stage's
        ``CHAOTIC_ON``, measured for it; the tutorial's stages at lr 0.5 default to CHAOTIC_DATA)."""
        if self.per_step is not None:
            return self.per_step
        return self.dtype == "float32" or source in chaotic_on


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
    data: str = "mnist"  # the dataset it trained on: each stage may have its own (see run_stages)
    torch_device: str = "cpu"
    steps: int = 0
    worst: dict[str, float] = field(default_factory=dict)
    checked: dict[str, int] = field(default_factory=dict)  # arrays compared, per kind
    failures: list[str] = field(default_factory=list)
    failure_count: int = 0
    kink_steps: int = 0  # float32 per step: steps a ReLU's kink explains (parity/checks.py)
    kink_examples: list[str] = field(default_factory=list)
    kink_worst: dict[str, float] = field(default_factory=dict)  # the worst rel diffs on those steps
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


# ---------------------------------------------------------------------------------------- helpers
def _array_of(param: Any) -> np.ndarray:
    """The writable ndarray behind a tinynn Parameter or a plain array."""
    data = getattr(param, "data", None)
    return data if isinstance(data, np.ndarray) and not isinstance(param, np.ndarray) else param


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
    if tinynn_start.model is not None and torch_start.model is not None:  # BatchNorm's running statistics
        for name, buffer in torch_start.model.named_buffers():
            np.copyto(tinynn_start.model.get_buffer(name), to_numpy(buffer))
    return device


def _same_dropout(torch_start: Start) -> contextlib.AbstractContextManager[Any]:
    """tinynn's dropout layers drop what torch's dropped: the masks are read from torch's own draws
    (tinynn.testing.replay_torch_dropout), as the weights are copied from torch's at the start."""
    import torch

    model = torch_start.model
    drawing = (torch.nn.RNNBase, torch.nn.MultiheadAttention)  # these draw their own dropout, inside
    if model is None or not any(isinstance(m, torch.nn.modules.dropout._DropoutNd)
                                or (isinstance(m, drawing) and m.dropout > 0) for m in model.modules()):
        return contextlib.nullcontext()
    from tinynn.testing import replay_torch_dropout

    return replay_torch_dropout(model, strict=False)  # a run stopped by an error leaves masks unused


def _sync(tinynn_step: Step, torch_step: Step) -> None:
    """Per-step mode: tinynn continues from torch's weights, optimizer state and buffers, not its own."""
    for name, target in tinynn_step.params.items():
        np.copyto(_array_of(target), to_numpy(torch_step.params[name]))
    for entry, value in optimizer_state(torch_step).items():
        name, key = entry.rsplit(" ", 1)
        tinynn_step.optimizer.state[tinynn_step.params[name]][key] = np.array(to_numpy(value), copy=True)
    for name, value in torch_step.buffers.items():
        np.copyto(tinynn_step.model.get_buffer(name), value)


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
                        data.y_valid[:n_valid], data.source, data.vocab)


# ---------------------------------------------------------------------------------------- one pass
def drive(stage: ModuleType, data: TutorialData, config: RunConfig, mode: str,
          progress: Callable[[str], None] | None = None) -> StageResult:
    """Run one stage in both frameworks in lockstep (data already cut) and compare as ``mode`` says."""
    import torch

    import tinynn

    result = StageResult(stage.NAME, stage.TITLE, stage.KIND, mode, data=data.source)
    checker = Checker(result, tolerance(config.dtype, mode, kinks=stage.KIND == "cnn"))  # the CNNs' ReLUs
    ctx = StageContext(data, config.epochs, config.seed)
    torch.manual_seed(config.seed)
    tinynn.manual_seed(config.seed)
    torch_side = _Timed(stage.torch_version(ctx), result.torch, "torch")
    tinynn_side = _Timed(stage.tinynn_version(ctx), result.tinynn, "tinynn")
    epochs_seen = 0
    same_dropout = contextlib.ExitStack()
    try:
        torch_start, tinynn_start = torch_side.next(), tinynn_side.next()
        if not isinstance(torch_start, Start) or not isinstance(tinynn_start, Start):
            raise ParityError("each version must first yield Start(...) with its model's parameters")
        result.torch_device = _load_start(tinynn_start, torch_start)
        same_dropout.enter_context(_same_dropout(torch_start))
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
        same_dropout.close()
    checker.finish()
    if mode == "independent" and result.error is None:
        bound = None if data.source in getattr(stage, "CHAOTIC_ON", CHAOTIC_DATA) else PARITY_F32_ACCURACY_POINTS
        result.end_to_end = _end_to_end(result, bound)
    return result


def _epoch_line(result: StageResult, epoch: int, epochs: int) -> str:
    t, n = result.torch, result.tinynn
    worst = max(result.worst.get(kind, 0.0) for kind in ("loss", "grads", "weights"))
    return (f"    epoch {epoch}/{epochs}: {result.steps} steps, val loss tinynn {n.val_loss[-1]:.4f} "
            f"torch {t.val_loss[-1]:.4f}, val acc {n.val_accuracy[-1]:.4f} / {t.val_accuracy[-1]:.4f}, "
            f"worst rel diff {worst:.1e} ({n.seconds:.1f}s / {t.seconds:.1f}s)")


def _end_to_end(result: StageResult, bound: float | None) -> dict[str, Any]:
    """Final validation accuracy of the independent runs, held to ``bound`` (None: chaotic data, not bounded)."""
    tinynn_acc = result.tinynn.val_accuracy[-1] if result.tinynn.val_accuracy else float("nan")
    torch_acc = result.torch.val_accuracy[-1] if result.torch.val_accuracy else float("nan")
    gap = abs(tinynn_acc - torch_acc)
    return {"tinynn_val_accuracy": tinynn_acc, "torch_val_accuracy": torch_acc, "accuracy_gap": gap,
            "bound": bound, "ok": bound is None or bool(gap <= bound)}


# ---------------------------------------------------------------------------------------- a stage, a run
def run_stage(stage: ModuleType, data: TutorialData, config: RunConfig,
              progress: Callable[[str], None] | None = None) -> StageResult:
    """float64 on MNIST: one lockstep pass. float32 (or chaotic data): a per-step pass (the checks),
    then an independent one (each framework's own training, its figures and timings, and the
    end-to-end accuracy bound)."""
    data = cut_data(data, config, getattr(stage, "BATCH_SIZE", 64))
    chaotic_on = getattr(stage, "CHAOTIC_ON", CHAOTIC_DATA)
    if not config.checks_per_step(data.source, chaotic_on):
        return drive(stage, data, config, "lockstep", progress)
    if progress:
        progress(f"    {config.dtype}, per step from torch's weights:")
    checked = drive(stage, data, config, "per_step", progress)
    if progress:
        progress(f"    {config.dtype}, each framework on its own:")
    free = drive(stage, data, config, "independent", progress)
    checked.tinynn, checked.torch = free.tinynn, free.torch
    checked.end_to_end = free.end_to_end or {"ok": False}
    checked.end_to_end["worst_rel_diff"] = {k: free.worst.get(k, 0.0) for k in KINDS}
    if free.error and not checked.error:
        checked.error = f"independent run: {free.error}"
    return checked


def run_stages(stages: list[ModuleType], data: TutorialData, config: RunConfig,
               progress: Callable[[str], None] | None = None,
               data_for: Callable[[str], TutorialData] | None = None) -> list[StageResult]:
    """Run ``stages`` in turn on ``data``; a stage with its own ``DATASET`` (the Fashion-MNIST
    stage after the tutorial) gets ``data_for(DATASET)`` instead, when ``data_for`` is given."""
    results = []
    with torch_settings(config.dtype, config.device):
        warm_up_torch()
        for number, stage in enumerate(stages, start=1):
            own = getattr(stage, "DATASET", None)
            stage_data = data_for(own) if own and data_for is not None and own != data.source else data
            if progress:
                progress(f"[{number}/{len(stages)}] {stage.NAME}: {stage.TITLE} ({stage_data.source})")
            result = run_stage(stage, stage_data, config, progress)
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
    if result.kink_steps:
        lines.append(f"    {result.kink_steps} of {result.steps} steps kinked (a ReLU input on the other side of 0 "
                     f"in float32; at most {100 * PARITY_F32_KINK_STEP_FRACTION:g}% may be)")
    if result.failure_count > 3:
        lines.append(f"    ... {result.failure_count - 3} more failed checks")
    if result.end_to_end and not result.end_to_end.get("ok", False) and result.end_to_end.get("bound"):
        lines.append(f"    end to end: val accuracy {result.end_to_end['accuracy_gap']:.4f} apart "
                     f"(bound {result.end_to_end['bound']})")
    return "\n".join(lines)
