"""The tutorial's pipelines end to end: an epoch with its DataLoader, and peak memory.

Each epoch is the tutorial's loop: ``DataLoader(TensorDataset(x, y), batch_size=64,
shuffle=True)``, forward, cross-entropy, backward, ``SGD.step()``, ``zero_grad()``. The epoch
time includes the DataLoader, as a user's does. Torch on a GPU moves each batch to the device
inside the loop, as the tutorial does.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.presets import Preset
from benchmarks.timing import TINYNN, TORCH_CPU, TORCH_CUDA, Framework, Runner, measure
from benchmarks.workloads import BATCH_SIZE, WORKLOADS, Trainer, mnist_or_synthetic

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


def memory_in_subprocesses(frameworks: list[Framework], steps: int, threads: int,
                   log: Callable[[str], None], textbook: bool = False) -> list[dict[str, Any]]:
    """Run ``benchmarks.memory`` in a fresh process per framework and workload; ``textbook``: with
    TINYNN_TEXTBOOK=1, so that tinynn runs its textbook code."""
    env = {**os.environ, "TINYNN_TEXTBOOK": "1"} if textbook else None
    names = [framework.name for framework in frameworks if framework.name in (TINYNN, TORCH_CPU, TORCH_CUDA)]
    results = []
    for workload in WORKLOADS:
        for name in names:
            command = [sys.executable, "-m", "benchmarks.memory", "--workload", workload, "--framework", name,
                       "--steps", str(steps), "--threads", str(threads)]
            completed = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
            if completed.returncode != 0:
                tail = completed.stderr.strip().splitlines()[-1:] or ["no output"]
                log(f"  memory {workload} {name}: failed: {tail[0]}")
                results.append({"workload": workload, "framework": name, "error": tail[0]})
                continue
            result = json.loads(completed.stdout.strip().splitlines()[-1])
            log(f"  memory {workload} {name}: peak RSS growth {result['rss_growth_mib']} MiB")
            results.append(result)
    return results
