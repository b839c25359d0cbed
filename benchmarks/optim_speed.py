"""Issue 15's speed item: one Adam step, tinynn against torch CPU (``foreach=False`` and ``True``).

* tutorial: the tutorial CNN's parameters, Conv2d(1,16,3,2,1), Conv2d(16,16,3,2,1) and
  Conv2d(16,10,3,2,1), weights and biases (6 arrays, 3,930 numbers).
* large: 10M parameters, four Linear(1000, 2500)-shaped weights and their biases (8 arrays,
  10,010,000 numbers).

Everything float32, ``Adam(lr=1e-3)`` with torch's defaults otherwise. The gradients are set once
(a step reads them and never writes them) and ``opt.step()`` alone is timed. torch runs its
single-tensor loop (``foreach=False``, what tinynn's Adam mirrors bit for bit) and its multi-tensor
one (``foreach=True``, torch's default on the CPU); each is compared with tinynn in its own
interleaved timing.

Timing, allocator and thread handling are ``conv_speed``'s: blocks of steps, tinynn and torch
alternating, a settling sleep before each block, the median of the rounds' ratios tinynn/torch;
everything twice, with glibc's malloc as it comes and then with its thresholds fixed
(``environment.steady_malloc``). ``--profile`` adds cProfile's view of one tinynn step of each
workload (tinynn's functions by cumulative time).

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python -m benchmarks.optim_speed``
(``--quick`` for a smoke run, ``--json`` to keep the figures). The functions are importable.

On a 2-core machine that other work keeps busy, torch's threaded ops wait for the second core at
every parallel region (several milliseconds here, for a ``sqrt`` of 2,304 floats that MKL splits
across its threads): ``--torch-threads 1`` takes that wait out of torch's side. Read the load
average before the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.conv_speed import ALLOCATORS, allocator_heading, blas_info, compare, ratio_text, tutorial_cnn_tinynn

Step = Callable[[], Any]
Shapes = Sequence[tuple[int, ...]]

LARGE_SHAPES: list[tuple[int, ...]] = [(2500, 1000), (2500,)] * 4
LR = 1e-3
FOREACH = (False, True)
# (steps per block, rounds) per workload: the large step takes a few hundred milliseconds.
BLOCKS = {"quick": {"tutorial": (50, 3), "large": (1, 3)}, "full": {"tutorial": (200, 21), "large": (2, 9)}}


def tutorial_shapes() -> list[tuple[int, ...]]:
    """The tutorial CNN's parameter shapes, from the model itself (``conv_speed.tutorial_cnn_tinynn``)."""
    return [tuple(param.shape) for param in tutorial_cnn_tinynn().parameters()]


def workloads() -> dict[str, list[tuple[int, ...]]]:
    return {"tutorial": tutorial_shapes(), "large": list(LARGE_SHAPES)}


def _arrays(shapes: Shapes, seed: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """float32 values and gradients for each shape, the same for every framework."""
    rng = np.random.default_rng(seed)
    values = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
    grads = [rng.standard_normal(shape, dtype=np.float32) for shape in shapes]
    return values, grads


def adam_tinynn(shapes: Shapes, seed: int = 0) -> tuple[Step, list[Any]]:
    """tinynn's ``Adam.step`` on parameters of ``shapes`` whose gradients are set; and the parameters."""
    from tinynn.nn import Parameter
    from tinynn.optim import Adam

    values, grads = _arrays(shapes, seed)
    params = [Parameter(value) for value in values]
    for param, grad in zip(params, grads):
        param.grad = grad
    optimizer = Adam(params, lr=LR)
    return optimizer.step, params


def adam_torch(shapes: Shapes, foreach: bool, seed: int = 0) -> tuple[Step, list[Any]]:
    """torch's ``Adam.step`` (``foreach`` as given) on the same values and gradients; and the parameters."""
    import torch

    values, grads = _arrays(shapes, seed)
    params = [torch.nn.Parameter(torch.from_numpy(value)) for value in values]
    for param, grad in zip(params, grads):
        param.grad = torch.from_numpy(grad)
    optimizer = torch.optim.Adam(params, lr=LR, foreach=foreach)
    return optimizer.step, params


def profile_step(step: Step, calls: int = 1) -> list[dict[str, Any]]:
    """cProfile of ``calls`` steps after an untimed one (the first creates the state, whose pages
    the next writes fault in): tinynn's functions by cumulative time (NumPy's ufuncs count in the
    function that calls them)."""
    from benchmarks.profiling import _profile

    step()
    return _profile("adam step", "adam", f"{calls} steps", lambda: [step() for _ in range(calls)])[
        "tinynn_by_cumulative_time"]


def run(quick: bool = False, settle_s: float = 0.25, shapes: dict[str, Shapes] | None = None,
        profile: bool = False, blocks: dict[str, tuple[int, int]] | None = None,
        torch_threads: int | None = None) -> dict[str, Any]:
    """Every workload against torch with ``foreach`` False and True, under each allocator (the
    steady one second: ``steady_malloc`` cannot be undone in a process). ``torch_threads``: torch's
    thread count for the run (default: torch's own). ``shapes`` and ``blocks`` replace the
    workloads and their (steps per block, rounds), for tests."""
    import torch

    threads_before = torch.get_num_threads()
    if torch_threads is not None:
        torch.set_num_threads(torch_threads)
    try:
        return _run(quick, settle_s, workloads() if shapes is None else shapes, profile, blocks)
    finally:
        torch.set_num_threads(threads_before)


def _run(quick: bool, settle_s: float, shapes: dict[str, Shapes], profile: bool,
         blocks: dict[str, tuple[int, int]] | None) -> dict[str, Any]:
    import torch

    from benchmarks.environment import cpu_model, steady_malloc

    blocks = blocks or BLOCKS["quick" if quick else "full"]
    results: dict[str, Any] = {"cpu": cpu_model(), "blas": blas_info(), "load_average_before": os.getloadavg()[0],
                               "numbers": {name: int(sum(np.prod(shape) for shape in workload))
                                           for name, workload in shapes.items()}}
    torch.manual_seed(0)
    for allocator in ALLOCATORS:
        if allocator == "steady":
            results["malloc"] = steady_malloc()
        results[allocator] = {}
        for name, workload in shapes.items():
            steps, rounds = blocks[name]
            for foreach in FOREACH:
                tinynn_step, _ = adam_tinynn(workload)
                torch_step, _ = adam_torch(workload, foreach)
                results[allocator][f"{name}_foreach_{foreach}"] = compare(
                    tinynn_step, torch_step, steps, rounds, settle_s, warmup=2 if name == "large" else 5)
    results["load_average_after"] = os.getloadavg()[0]
    if profile:
        results["profile"] = {name: profile_step(adam_tinynn(workload)[0], 3) for name, workload in shapes.items()}
    return results


def _line(name: str, foreach: bool, timing: dict[str, Any]) -> str:
    return (f"  {name}, torch foreach={foreach}: tinynn {timing['tinynn_s'] * 1e3:.3f} ms, torch "
            f"{timing['torch_s'] * 1e3:.3f} ms per step; {ratio_text(timing)}")


def report(results: dict[str, Any]) -> str:
    blas = results["blas"]
    numbers = ", ".join(f"{name} {count:,} numbers" for name, count in results["numbers"].items())
    lines = [f"One Adam step (lr {LR}, float32, gradients set; opt.step() timed): {numbers}",
             f"{results['cpu']}; numpy {blas['numpy']} ({blas.get('numpy_blas')}), torch {blas['torch']} "
             f"({blas['torch_threads']} threads), {blas['cpus']} CPUs; load average "
             f"{results['load_average_before']:.1f} before the timings, {results['load_average_after']:.1f} after"]
    for allocator in ALLOCATORS:
        lines.append(allocator_heading(results, allocator))
        for key, timing in results[allocator].items():
            name, foreach = key.rsplit("_foreach_", 1)
            lines.append(_line(name, foreach == "True", timing))
    for name, rows in results.get("profile", {}).items():
        lines.append(f"cProfile of tinynn's {name} step, its functions by cumulative time:")
        lines += [f"  {row['cumulative_percent']:5.1f}%  {row['cumulative_s'] * 1e3:8.1f} ms  {row['calls']:6d} calls  "
                  f"{row['function']}" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few blocks of steps")
    parser.add_argument("--settle", type=float, default=0.25, help="seconds of sleep before each timed block")
    parser.add_argument("--profile", action="store_true", help="also profile one tinynn step of each workload")
    parser.add_argument("--torch-threads", type=int, help="torch's thread count (default: torch's own)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args.quick, args.settle, profile=args.profile, torch_threads=args.torch_threads)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
