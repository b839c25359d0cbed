"""Where tinynn's time goes: cProfile summaries of a training step and of the wide conv layer.

Each summary gives the top functions by own time (where the CPU is) and tinynn's own functions
by cumulative time (which layer or stage costs what, with everything it calls). ``target`` names
the headline row the profile explains, so the report can point a missed target at its profile.
"""

from __future__ import annotations

import cProfile
import pstats
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.ops import HEADLINE_CONV, OP_CASES, forward_backward_runner
from benchmarks.timing import TINYNN, Framework
from benchmarks.workloads import BATCH_SIZE, Trainer, synthetic_mnist

ROOT = Path(__file__).resolve().parents[1]
TOP = 12
PIPELINE_TARGETS = {"logistic": "logistic pipeline", "cnn": "CNN pipeline"}
CONV_TARGET = "wide conv forward+backward"


def _function_name(key: tuple[str, int, str]) -> str:
    """``tinynn/nn/conv.py:160(conv2d_forward)``; a library file from its package; a built-in by name."""
    filename, line, function = key
    if filename == "~":  # a built-in: pstats keeps its name in the function slot
        return function
    parts = Path(filename).resolve().parts
    if "site-packages" in parts:
        shown = "/".join(parts[parts.index("site-packages") + 1:])
    else:
        try:
            shown = Path(filename).resolve().relative_to(ROOT).as_posix()
        except ValueError:
            shown = Path(filename).name
    return f"{shown}:{line}({function})"


def _profile(target: str, name: str, detail: str, run: Callable[[], Any]) -> dict[str, Any]:
    profiler = cProfile.Profile()
    profiler.enable()
    run()
    profiler.disable()
    table = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in table.values())

    def rows(keys: list[Any]) -> list[dict[str, Any]]:
        return [{"function": _function_name(key), "calls": table[key][1], "own_s": table[key][2],
                 "cumulative_s": table[key][3], "own_percent": 100 * table[key][2] / total,
                 "cumulative_percent": 100 * table[key][3] / total} for key in keys]

    by_own = sorted(table, key=lambda key: table[key][2], reverse=True)[:TOP]
    in_tinynn = [key for key in table if _function_name(key).startswith("tinynn/")]
    by_cumulative = sorted(in_tinynn, key=lambda key: table[key][3], reverse=True)[:TOP]
    return {"target": target, "name": name, "detail": detail, "total_s": total, "by_own_time": rows(by_own),
            "tinynn_by_cumulative_time": rows(by_cumulative)}


def profile_pipeline(workload: str, steps: int) -> dict[str, Any]:
    """``steps`` tinynn training steps of a workload, with the DataLoader."""
    trainer = Trainer(Framework(TINYNN, None), workload)
    images, labels = synthetic_mnist(steps * BATCH_SIZE)
    trainer.train(trainer.loader(images, labels), max_steps=5)  # warm-up, unprofiled
    batches = trainer.loader(images, labels)
    return _profile(PIPELINE_TARGETS[workload], workload, f"{steps} training steps with the DataLoader",
                    lambda: trainer.train(batches))


def profile_wide_conv(calls: int, batch: int | None = None) -> dict[str, Any]:
    """``calls`` forward+backward calls of the headline wide conv layer."""
    case = next(case for case in OP_CASES if case.name == HEADLINE_CONV)
    if batch is not None:
        case = case.with_batch(batch)
    runner = forward_backward_runner(case, Framework(TINYNN, None))
    runner.step()  # warm-up, unprofiled

    def run() -> None:
        for _ in range(calls):
            runner.step()

    return _profile(CONV_TARGET, case.name, f"{calls} forward+backward calls of {case.layer} on {case.shape_text}",
                    run)


def profile_all(steps: int, conv_calls: int, batch: int | None = None) -> list[dict[str, Any]]:
    return [*(profile_pipeline(workload, steps) for workload in PIPELINE_TARGETS),
            profile_wide_conv(conv_calls, batch)]
