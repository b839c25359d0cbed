"""BatchNorm2d's speed: forward + backward in training mode, tinynn (engine and textbook) against torch CPU.

The workload: ``BatchNorm2d(16)`` on a (64, 16, 14, 14) float32 batch, the tutorial CNN's second
activation, with a random upstream gradient; one step is the module's forward, then its backward
(input gradient, and weight and bias gradients accumulated). And the tutorial CNN with
BatchNorm (parity stage 14's model: BatchNorm2d after each convolution, Dropout(0.2) before the
pooling), one SGD step with momentum on a batch of 64, float32. Target for both: tinynn's engine
within 1.5x of torch's time, torch on as many threads as tinynn may use
(``tinynn.get_num_threads()``, one per core; ``--torch-threads`` overrides).

Timing, allocator and thread handling are ``conv_speed``'s: blocks of steps, tinynn and torch
alternating, a settling sleep before each block, the median of the rounds' ratios tinynn/torch;
everything twice, with glibc's malloc as it comes and then with its thresholds fixed
(``environment.steady_malloc``). The textbook path (``tinynn.textbook()``) is timed beside the
engine, so the engine's gain can be read off the same run.

Run: ``.venv/bin/python -m benchmarks.norm_speed`` (``--quick`` for a smoke run, ``--json`` to keep
the figures). The functions are importable.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.conv_speed import (
    ALLOCATORS,
    allocator_heading,
    blas_info,
    compare,
    mnist_like_batch,
    ratio_text,
    tinynn_train_step,
    torch_train_step,
)

Step = Callable[[], Any]

SHAPE = (64, 16, 14, 14)
PATHS = ("engine", "textbook")
BLOCKS = {"quick": (20, 3), "full": (100, 15)}  # (steps per block, rounds)


def _arrays(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """float32 input and upstream gradient, the same for both frameworks."""
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape, dtype=np.float32)


def batch_norm_tinynn(shape: tuple[int, ...] = SHAPE, textbook: bool = False, seed: int = 0) -> tuple[Step, Any]:
    """One training step of tinynn's BatchNorm2d (forward, backward) on the engine or the textbook
    path; and the module."""
    import tinynn
    from tinynn.nn import BatchNorm2d

    x, grad_output = _arrays(shape, seed)
    module = BatchNorm2d(shape[1])

    def step() -> np.ndarray:
        with tinynn.textbook(textbook):
            module(x)
            return module.backward(grad_output)

    return step, module


def batch_norm_torch(shape: tuple[int, ...] = SHAPE, seed: int = 0) -> tuple[Step, Any]:
    """The same step in torch (autograd; the input requires grad); and the module."""
    import torch

    x, grad_output = _arrays(shape, seed)
    module = torch.nn.BatchNorm2d(shape[1])
    x_t = torch.from_numpy(x).requires_grad_()
    grad_t = torch.from_numpy(grad_output)

    def step() -> Any:
        x_t.grad = None  # torch's input gradient would accumulate; tinynn returns a fresh one
        module(x_t).backward(grad_t)
        return x_t.grad

    return step, module


def bn_cnn_tinynn(textbook: bool = False, batch: int = 64, seed: int = 0) -> tuple[Step, Any]:
    """One SGD step of parity stage 14's model in tinynn (float32), on the engine or the textbook
    path; and the model."""
    import tinynn
    from parity.stages.s14_batchnorm import LR, tinynn_model

    images, labels = mnist_like_batch(batch, seed)
    model = tinynn_model()
    step = tinynn_train_step(model, lr=LR)

    def run_step() -> Any:
        with tinynn.textbook(textbook):
            return step(images, labels)

    return run_step, model


def bn_cnn_torch(batch: int = 64, seed: int = 0) -> tuple[Step, Any]:
    """The same step in torch; and the model."""
    import torch

    from parity.stages.s14_batchnorm import LR, torch_model

    images, labels = mnist_like_batch(batch, seed)
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
    model = torch_model()
    step = torch_train_step(model, lr=LR)
    return lambda: step(images_t, labels_t), model


def run(quick: bool = False, settle_s: float = 0.25, shape: tuple[int, ...] = SHAPE,
        blocks: tuple[int, int] | None = None, torch_threads: int | None = None, cnn: bool = True) -> dict[str, Any]:
    """Both tinynn paths against torch, under each allocator (the steady one second:
    ``steady_malloc`` cannot be undone in a process). ``torch_threads``: torch's thread count for
    the run (default: tinynn's). ``shape`` and ``blocks`` replace the workload and its
    (steps per block, rounds), for tests; ``cnn`` False leaves out the CNN step."""
    import torch

    import tinynn

    threads_before = torch.get_num_threads()
    torch.set_num_threads(tinynn.get_num_threads() if torch_threads is None else torch_threads)
    try:
        return _run(quick, settle_s, shape, blocks or BLOCKS["quick" if quick else "full"], cnn)
    finally:
        torch.set_num_threads(threads_before)


def _run(quick: bool, settle_s: float, shape: tuple[int, ...], blocks: tuple[int, int],
         cnn: bool = True) -> dict[str, Any]:
    import torch

    from benchmarks.environment import cpu_model, steady_malloc

    steps, rounds = blocks
    results: dict[str, Any] = {"cpu": cpu_model(), "blas": blas_info(), "shape": list(shape),
                               "load_average_before": os.getloadavg()[0]}
    torch.manual_seed(0)
    for allocator in ALLOCATORS:
        if allocator == "steady":
            results["malloc"] = steady_malloc()
        results[allocator] = {}
        for path in PATHS:
            tinynn_step, _ = batch_norm_tinynn(shape, textbook=path == "textbook")
            torch_step, _ = batch_norm_torch(shape)
            results[allocator][path] = compare(tinynn_step, torch_step, steps, rounds, settle_s)
        for path in PATHS if cnn else ():
            tinynn_step, _ = bn_cnn_tinynn(textbook=path == "textbook")
            torch_step, _ = bn_cnn_torch()
            results[allocator][f"bn_cnn {path}"] = compare(tinynn_step, torch_step, max(steps // 10, 1), rounds,
                                                           settle_s)
    results["load_average_after"] = os.getloadavg()[0]
    return results


def report(results: dict[str, Any]) -> str:
    blas = results["blas"]
    lines = [f"BatchNorm2d({results['shape'][1]}) forward + backward, training, float32 input "
             f"{'x'.join(map(str, results['shape']))}",
             f"{results['cpu']}; numpy {blas['numpy']} ({blas.get('numpy_blas')}), torch {blas['torch']} "
             f"({blas['torch_threads']} threads), {blas['cpus']} CPUs; load average "
             f"{results['load_average_before']:.1f} before the timings, {results['load_average_after']:.1f} after"]
    for allocator in ALLOCATORS:
        lines.append(allocator_heading(results, allocator))
        for path, timing in results[allocator].items():
            path = path if path.startswith("bn_cnn") else f"BatchNorm2d {path}"
            lines.append(f"  {path}: tinynn {timing['tinynn_s'] * 1e3:.3f} ms, torch {timing['torch_s'] * 1e3:.3f} ms "
                         f"per step; {ratio_text(timing)}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few blocks of steps")
    parser.add_argument("--settle", type=float, default=0.25, help="seconds of sleep before each timed block")
    parser.add_argument("--torch-threads", type=int, help="torch's thread count (default: tinynn's)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    results = run(args.quick, args.settle, torch_threads=args.torch_threads)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
