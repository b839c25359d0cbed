"""Timing: warm-up, calibrated repetitions, the frameworks interleaved, median and spread.

A *framework* is tinynn (NumPy on the CPU), torch on the CPU, or torch on a CUDA GPU with TF32
off or on. Each benchmark gives one *runner* per framework; ``measure`` warms every runner up,
then takes its repetitions round-robin (tinynn, torch CPU, ...; the order rotates each round),
so that a slow spell of a shared machine falls on every framework alike.

Both CPU libraries keep their worker threads spinning for a while after their last parallel call
(OpenBLAS's for 0.1-0.2 s here): timed right after tinynn, torch CPU shares the cores with NumPy's
idle-but-spinning threads, and a 20 µs op measured 10 ms. So before a CPU framework's repetition
follows the other CPU framework's, ``measure`` sleeps ``settle_seconds`` to let those threads park.

CUDA kernels run asynchronously: a GPU runner's ``sync`` is ``torch.cuda.synchronize``, called
before the clock starts and before it stops, so a time covers the GPU work and not only the
launches.
"""

from __future__ import annotations

import contextlib
import functools
import math
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

TINYNN = "tinynn"
TORCH_CPU = "torch_cpu"
TORCH_CUDA = "torch_cuda"
TORCH_CUDA_TF32 = "torch_cuda_tf32"

LABELS = {
    TINYNN: "tinynn (NumPy)",
    TORCH_CPU: "torch CPU",
    TORCH_CUDA: "torch CUDA (TF32 off)",
    TORCH_CUDA_TF32: "torch CUDA (TF32 on)",
}


def _no_sync() -> None:
    return None


@dataclass
class Framework:
    """Where a benchmark runs: ``device`` is None for tinynn, else a torch device string."""

    name: str
    device: str | None
    tf32: bool = False

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def is_torch(self) -> bool:
        return self.device is not None

    @property
    def is_cuda(self) -> bool:
        return self.device == "cuda"

    def sync(self) -> None:
        if self.is_cuda:
            import torch

            torch.cuda.synchronize()

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        """Set the TF32 switches for this framework while it runs (both of them: cuBLAS and cuDNN)."""
        if not self.is_cuda:
            yield
            return
        import torch

        before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def available_frameworks(use_cuda: bool = True) -> list[Framework]:
    """tinynn and torch CPU always; the two CUDA variants when torch sees a GPU."""
    frameworks = [Framework(TINYNN, None), Framework(TORCH_CPU, "cpu")]
    if use_cuda:
        import torch

        if torch.cuda.is_available():
            frameworks += [Framework(TORCH_CUDA, "cuda", tf32=False), Framework(TORCH_CUDA_TF32, "cuda", tf32=True)]
    return frameworks


@dataclass
class Runner:
    """One framework's version of a benchmark: ``step`` is timed, ``prepare`` (if any) runs untimed before it."""

    framework: Framework
    step: Callable[[], Any]
    prepare: Callable[[], Any] | None = None


@dataclass
class Stats:
    """Seconds per call over the repetitions: median, quartiles, extremes."""

    median: float
    q1: float
    q3: float
    min: float
    max: float
    reps: int
    calls_per_rep: int
    samples: list[float] = field(default_factory=list)

    @classmethod
    def from_samples(cls, samples: list[float], calls_per_rep: int) -> Stats:
        ordered = sorted(samples)
        if len(ordered) >= 2:
            q1, _, q3 = statistics.quantiles(ordered, n=4, method="inclusive")
        else:
            q1 = q3 = ordered[0]
        return cls(statistics.median(ordered), q1, q3, ordered[0], ordered[-1], len(ordered), calls_per_rep,
                   list(samples))

    def to_json(self) -> dict[str, Any]:
        return {
            "median_s": self.median, "q1_s": self.q1, "q3_s": self.q3, "min_s": self.min, "max_s": self.max,
            "reps": self.reps, "calls_per_rep": self.calls_per_rep, "samples_s": self.samples,
        }


_last_cpu_run = {"framework": "", "ended": 0.0}


# Untimed calls after a pause. Cores that slept come back slowly and with cold caches (other work
# on the host ran meanwhile): measured here, tinynn's wide convolution took up to twice its time in
# the first two calls after a 0.25 s sleep, torch's about 10% more; a call or two timed right after
# the pause would measure that, not the op.
REWARM_SECONDS = 0.05


def _settle(framework: Framework, settle_seconds: float) -> bool:
    """Sleep until the other CPU library's threads have stopped spinning (a GPU run needs no wait);
    True if it slept."""
    last = _last_cpu_run["framework"]
    if framework.is_cuda or not last or last == framework.name:
        return False
    remaining = settle_seconds - (time.perf_counter() - float(_last_cpu_run["ended"]))
    if remaining > 0:
        time.sleep(remaining)
    return remaining > 0


def rewarm(call: Callable[[], Any]) -> None:
    """Untimed calls for ``REWARM_SECONDS`` (at least one), after a pause."""
    end = time.perf_counter() + REWARM_SECONDS
    call()
    while time.perf_counter() < end:
        call()


def _call_once(runner: Runner) -> None:
    if runner.prepare is not None:
        runner.prepare()
    runner.step()


def _record_run(framework: Framework) -> None:
    if not framework.is_cuda:
        _last_cpu_run.update(framework=framework.name, ended=time.perf_counter())


def _time_calls(runner: Runner, calls: int) -> float:
    """Seconds per call over ``calls`` calls of ``runner.step``."""
    sync = runner.framework.sync if runner.framework.is_cuda else _no_sync
    if runner.prepare is None:
        sync()
        start = time.perf_counter()
        for _ in range(calls):
            runner.step()
        sync()
        return (time.perf_counter() - start) / calls
    total = 0.0
    for _ in range(calls):
        runner.prepare()
        sync()  # the prepared (queued) GPU work must not land inside the timed region
        start = time.perf_counter()
        runner.step()
        sync()
        total += time.perf_counter() - start
    return total / calls


def measure(runners: list[Runner], reps: int, warmup: int = 1, min_rep_seconds: float = 0.0,
            settle_seconds: float = 0.0, max_calls: int = 1000) -> dict[str, Stats]:
    """Time each runner ``reps`` times, interleaved; each repetition is at least ``min_rep_seconds`` long.

    Warm-up: ``warmup`` untimed calls per runner (first calls allocate, pick kernels, fill caches).
    Calibration: a short op is called several times per repetition, so that a repetition lasts
    at least ``min_rep_seconds`` and the clock's resolution does not matter.
    """
    calls: dict[str, int] = {}
    for runner in runners:
        calls[runner.framework.name] = 1
        with runner.framework.active():
            for _ in range(warmup):
                _call_once(runner)
            if min_rep_seconds > 0:
                if _settle(runner.framework, settle_seconds):
                    rewarm(functools.partial(_call_once, runner))
                once = _time_calls(runner, 1)
                calls[runner.framework.name] = max(1, min(max_calls, math.ceil(min_rep_seconds / max(once, 1e-9))))
            _record_run(runner.framework)
    samples: dict[str, list[float]] = {runner.framework.name: [] for runner in runners}
    for rep in range(reps):
        shift = rep % len(runners)
        for runner in runners[shift:] + runners[:shift]:
            name = runner.framework.name
            with runner.framework.active():
                if _settle(runner.framework, settle_seconds):
                    rewarm(functools.partial(_call_once, runner))
                samples[name].append(_time_calls(runner, calls[name]))
                _record_run(runner.framework)
    return {name: Stats.from_samples(values, calls[name]) for name, values in samples.items()}
