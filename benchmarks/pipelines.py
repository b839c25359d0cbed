"""The tutorial's pipelines end to end: an epoch with its DataLoader, peak memory, and a profile.

Each epoch is the tutorial's loop: ``DataLoader(TensorDataset(x, y), batch_size=64,
shuffle=True)``, forward, cross-entropy, backward, ``SGD.step()``, ``zero_grad()``. The epoch
time includes the DataLoader, as a user's does. Torch on a GPU moves each batch to the device
inside the loop, as the tutorial does.
"""

from __future__ import annotations

import cProfile
import json
import math
import pstats
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.presets import Preset
from benchmarks.timing import TINYNN, TORCH_CPU, TORCH_CUDA, Framework, Runner, measure
from benchmarks.workloads import BATCH_SIZE, WORKLOADS, Trainer, mnist_or_synthetic, synthetic_mnist

ROOT = Path(__file__).resolve().parents[1]


def _epoch_runner(trainer: Trainer, batches: Any) -> Runner:
    return Runner(trainer.framework, lambda: trainer.train(batches))


def run_pipelines(frameworks: list[Framework], preset: Preset,
                  log: Callable[[str], None]) -> tuple[list[dict[str, Any]], str]:
    """Time ``preset.pipeline_reps`` epochs per framework and workload, interleaved."""
    samples, reps = preset.pipeline_samples, preset.pipeline_reps
    images, labels, source = mnist_or_synthetic(samples)
    steps = math.ceil(samples / BATCH_SIZE)
    results = []
    for workload in WORKLOADS:
        runners = []
        for framework in frameworks:
            trainer = Trainer(framework, workload)
            batches = trainer.loader(images, labels)
            with framework.active():
                trainer.train(batches, max_steps=preset.pipeline_warmup_steps)
            runners.append(_epoch_runner(trainer, batches))
        log(f"  pipeline {workload}: {reps} epochs of {steps} steps per framework")
        stats = measure(runners, reps=reps, warmup=0, settle_seconds=preset.settle_seconds)
        per_framework = {}
        for name, stat in stats.items():
            per_framework[name] = {
                "epoch": stat.to_json(),
                "steps_per_s": steps / stat.median,
                "samples_per_s": samples / stat.median,
            }
        results.append({"workload": workload, "samples": samples, "steps": steps, "batch_size": BATCH_SIZE,
                        **WORKLOADS[workload], "results": per_framework})
    return results, source


def measure_memory(frameworks: list[Framework], steps: int, threads: int,
                   log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Run ``benchmarks.memory`` in a fresh process per framework and workload."""
    names = [framework.name for framework in frameworks if framework.name in (TINYNN, TORCH_CPU, TORCH_CUDA)]
    results = []
    for workload in WORKLOADS:
        for name in names:
            command = [sys.executable, "-m", "benchmarks.memory", "--workload", workload, "--framework", name,
                       "--steps", str(steps), "--threads", str(threads)]
            completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
            if completed.returncode != 0:
                tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
                log(f"  memory {workload} {name}: failed: {tail[0]}")
                results.append({"workload": workload, "framework": name, "error": tail[0]})
                continue
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            log(f"  memory {workload} {name}: peak RSS growth {result['rss_growth_mib']} MiB")
            results.append(result)
    return results


def _function_name(key: tuple[str, int, str]) -> str:
    filename, line, function = key
    if filename == "~":  # a built-in: pstats keeps its name in the function slot
        return function
    path = Path(filename)
    try:
        shown = path.resolve().relative_to(ROOT).as_posix()
    except ValueError:
        shown = path.name
    return f"{shown}:{line}({function})"


def profile_tinynn(workload: str, steps: int, top: int = 12) -> dict[str, Any]:
    """cProfile ``steps`` tinynn training steps (with the DataLoader) of a workload.

    Returns the top functions by own time (where the CPU is), and tinynn's own functions by
    cumulative time (which layer or stage costs what).
    """
    framework = Framework(TINYNN, None)
    trainer = Trainer(framework, workload)
    images, labels = synthetic_mnist(steps * BATCH_SIZE)
    trainer.train(trainer.loader(images, labels), max_steps=5)  # warm-up, unprofiled
    profiler = cProfile.Profile()
    batches = trainer.loader(images, labels)
    profiler.enable()
    trainer.train(batches)
    profiler.disable()
    table = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values())

    def rows(keys: list[Any]) -> list[dict[str, Any]]:
        return [{"function": _function_name(key), "calls": table[key][1], "own_s": table[key][2],
                 "cumulative_s": table[key][3], "own_percent": 100 * table[key][2] / total,
                 "cumulative_percent": 100 * table[key][3] / total} for key in keys]

    by_own = sorted(table, key=lambda key: table[key][2], reverse=True)[:top]
    in_tinynn = [key for key in table if "tinynn" in Path(key[0]).parts and key[0] != "~"]
    by_cumulative = sorted(in_tinynn, key=lambda key: table[key][3], reverse=True)[:top]
    return {"workload": workload, "steps": steps, "total_s": total, "by_own_time": rows(by_own),
            "tinynn_by_cumulative_time": rows(by_cumulative)}
