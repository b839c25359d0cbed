"""Issue 3's figures: tinynn's convolution against torch CPU, in one process, on the same cores.

* W2, the tutorial CNN train step: Conv2d(1,16,3,2,1)-ReLU-Conv2d(16,16,3,2,1)-ReLU-
  Conv2d(16,10,3,2,1)-ReLU-AdaptiveAvgPool2d(1)-Flatten, cross-entropy, SGD(lr 0.1, momentum 0.9),
  batch 64, float32.
* W3, the wide layer: input (64, 16, 32, 32), Conv2d(16, 64, 3, padding=1), forward + backward.
* Peak memory of one MNIST-sized epoch (50,000 samples) of W2, each framework in its own
  subprocess: growth of the resident set above what the process held before its first step.

Timing: blocks of steps, tinynn and torch alternating (the order flips every round), and the
ratio tinynn/torch taken per round, then the median over rounds, so that a busy spell of a shared
machine falls on both. Both libraries keep worker threads that spin for a while after their last
parallel call (OpenBLAS's for about 0.1 s); a short sleep before each block (``settle_s``) lets
the other library's threads go idle, so each block measures one library, not the two fighting
over two cores. ``--settle 0`` measures them back to back instead. On a machine busy with other
work, torch's two OpenMP threads (which wait for each other at every parallel region) slow down
far more than tinynn, whose small products run on one thread (``tinynn._engine.blas``): compare the
"best blocks" figures, and note the load average, before reading much into a ratio.

Far and near cores: on the project's 2-vCPU virtual machines the hypervisor moves the two vCPUs
between cores that share a cache and cores that do not, from one minute to the next; on far
cores, data one core has just written costs the other a trip between caches, and both libraries'
steps slow down (tinynn's products on two BLAS threads most of all). tinynn's core probe
(``tinynn._engine.blas``) then puts its middle-sized products on one thread; each timing reports how
often the probe chose that, which tells which kind of cores the run had.

Allocator: everything is timed twice, first with glibc's malloc as it comes, then with its
adaptive thresholds fixed (``environment.steady_malloc``). As it comes, torch's steps here take
hundreds (W2) to twelve thousand (W3) page faults each, depending on what the process allocated
before, and up to twice their fault-free time; the second pair of figures compares the two
libraries' own work. Page faults per step are reported beside each timing.

Run: ``env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE .venv/bin/python -m benchmarks.conv_speed``
(those two variables slow NumPy's OpenBLAS on the project's machines; ``--quick`` for a smoke run).
``--textbook`` also times W2 and W3 with tinynn in textbook mode (``tinynn.textbook()``: the plain
NumPy of tinynn/nn/, no engine) against torch the same way, and measures its epoch memory.
The functions are importable for the general ``python -m benchmarks`` harness.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

Step = Callable[[], Any]
ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------ environment
def blas_info() -> dict[str, Any]:
    """NumPy's BLAS as built and as loaded (OpenBLAS's own report when it can be asked), plus torch's."""
    info: dict[str, Any] = {"numpy": np.__version__}
    try:
        config = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["numpy_blas"] = f"{config.get('name')} {config.get('version')}"
    except Exception:  # show_config's layout differs between NumPy versions
        info["numpy_blas"] = "unknown"
    from tinynn._engine.blas import openblas_report

    report = openblas_report()
    if report:
        info["openblas_config"] = report.get("config")
        info["openblas_core"] = report.get("core")
        info["openblas_threads"] = report["num_threads"]
    info["OPENBLAS_CORETYPE"] = os.environ.get("OPENBLAS_CORETYPE")
    info["OPENBLAS_L2_SIZE"] = os.environ.get("OPENBLAS_L2_SIZE")
    import torch

    info["torch"] = torch.__version__
    info["torch_threads"] = torch.get_num_threads()
    info["cpus"] = len(os.sched_getaffinity(0))
    return info


# ------------------------------------------------------------------------------------ workloads
def tutorial_cnn_tinynn(dtype: Any = np.float32) -> Any:
    import tinynn.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1, dtype=dtype), nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1, dtype=dtype), nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1, dtype=dtype), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


def tutorial_cnn_torch() -> Any:
    import torch.nn as nn

    return nn.Sequential(
        nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    )


def mnist_like_batch(batch: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.random((batch, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, batch)


def tinynn_train_step(model: Any, lr: float = 0.1, momentum: float = 0.9) -> Callable[[np.ndarray, np.ndarray], Any]:
    """One SGD step of ``model`` on a batch; the first layer's input needs no gradient (as in torch)."""
    import tinynn.nn as nn
    from tinynn.optim import SGD

    loss_fn, optimizer = nn.CrossEntropyLoss(), SGD(model.parameters(), lr=lr, momentum=momentum)

    def step(images: np.ndarray, labels: np.ndarray) -> Any:
        loss = loss_fn(model(images), labels)
        model.backward(loss_fn.backward(), needs_input_grad=False)
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return step


def torch_train_step(model: Any, lr: float = 0.1, momentum: float = 0.9) -> Callable[[Any, Any], Any]:
    import torch

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)

    def step(images: Any, labels: Any) -> Any:
        loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    return step


def tutorial_step_tinynn(batch: int = 64, seed: int = 0) -> Step:
    images, labels = mnist_like_batch(batch, seed)
    step = tinynn_train_step(tutorial_cnn_tinynn())
    return lambda: step(images, labels)


def tutorial_step_torch(batch: int = 64, seed: int = 0) -> Step:
    import torch

    images, labels = mnist_like_batch(batch, seed)
    images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
    step = torch_train_step(tutorial_cnn_torch())
    return lambda: step(images_t, labels_t)


def wide_conv_tinynn(batch: int = 64, seed: int = 0) -> Step:
    """Forward + backward of Conv2d(16, 64, 3, padding=1) on (64, 16, 32, 32); dY arrives channels-last,
    as the forward produced Y (and as an element-wise op after it would pass it back)."""
    import tinynn.nn as nn

    rng = np.random.default_rng(seed)
    images = rng.standard_normal((batch, 16, 32, 32), dtype=np.float32)
    conv = nn.Conv2d(16, 64, 3, padding=1)
    grad_output = np.empty_like(conv(images))  # empty_like keeps the output's channels-last layout
    grad_output[...] = rng.standard_normal(grad_output.shape, dtype=np.float32)

    def step() -> Any:
        conv(images)
        grad_input = conv.backward(grad_output)
        conv.zero_grad()
        return grad_input

    return step


def wide_conv_torch(batch: int = 64, seed: int = 0) -> Step:
    import torch

    rng = np.random.default_rng(seed)
    images = torch.from_numpy(rng.standard_normal((batch, 16, 32, 32), dtype=np.float32)).requires_grad_()
    conv = torch.nn.Conv2d(16, 64, 3, padding=1)
    grad_output = torch.from_numpy(rng.standard_normal((batch, 64, 32, 32), dtype=np.float32))

    def step() -> Any:
        conv(images).backward(grad_output)
        images.grad = None
        conv.zero_grad()
        return None

    return step


def textbook_step(make: Callable[[], Step]) -> Step:
    """``make()``'s step, built and run with tinynn in textbook mode."""
    import tinynn

    with tinynn.textbook():
        step = make()
    return tinynn.textbook()(step)


# ------------------------------------------------------------------------------------ timing
def compare(tinynn_step: Step, torch_step: Step, steps: int, rounds: int, settle_s: float = 0.25,
            warmup: int = 5) -> dict[str, Any]:
    """Seconds per step of each (median over rounds) and the median of per-round ratios tinynn/torch."""
    from benchmarks.timing import rewarm
    from tinynn._engine.blas import probe_answers

    for _ in range(warmup):
        tinynn_step()
        torch_step()
    answers_before = probe_answers()
    times: dict[str, list[float]] = {"tinynn": [], "torch": []}
    faults = {"tinynn": 0, "torch": 0}
    order = [("tinynn", tinynn_step), ("torch", torch_step)]
    for round_index in range(rounds):
        for name, step in order if round_index % 2 == 0 else order[::-1]:
            if settle_s:
                time.sleep(settle_s)
            rewarm(step)  # cores that slept come back slowly and with cold caches (see timing.REWARM_SECONDS)
            faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            for _ in range(steps):
                step()
            times[name].append((time.perf_counter() - start) / steps)
            faults[name] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    ratios = [a / b for a, b in zip(times["tinynn"], times["torch"])]
    return {
        "tinynn_s": statistics.median(times["tinynn"]), "torch_s": statistics.median(times["torch"]),
        "ratio": statistics.median(ratios), "ratio_min": min(ratios), "ratio_max": max(ratios),
        # The fastest block of each is the one least disturbed by other work on the machine.
        "tinynn_best_s": min(times["tinynn"]), "torch_best_s": min(times["torch"]),
        "ratio_of_best": min(times["tinynn"]) / min(times["torch"]),
        "steps_per_block": steps, "rounds": rounds, "settle_s": settle_s,
        # Page faults in a step are time spent in the kernel, and a sign of the allocator's state.
        "tinynn_faults_per_step": faults["tinynn"] / (steps * rounds),
        "torch_faults_per_step": faults["torch"] / (steps * rounds),
        # What tinynn's core probe (``tinynn._engine.blas``) chose for its middle-sized products meanwhile.
        "core_probe": {answer: count - answers_before[answer] for answer, count in probe_answers().items()},
    }


# ------------------------------------------------------------------------------------ memory
def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def epoch_memory_child(framework: str, samples: int, batch: int) -> dict[str, Any]:
    """In this process: one epoch of the tutorial CNN; resident-set growth during it, in MiB."""
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    rng = np.random.default_rng(0)
    images = rng.random((samples, 1, 28, 28), dtype=np.float32)
    labels = rng.integers(0, 10, samples)
    if framework in ("tinynn", "textbook"):
        if framework == "textbook":
            import tinynn

            tinynn.set_textbook(True)
        step = tinynn_train_step(tutorial_cnn_tinynn())
        batches = ((images[i:i + batch], labels[i:i + batch]) for i in range(0, samples, batch))
    else:
        step = torch_train_step(tutorial_cnn_torch())
        images_t, labels_t = torch.from_numpy(images), torch.from_numpy(labels)
        batches = ((images_t[i:i + batch], labels_t[i:i + batch]) for i in range(0, samples, batch))
    baseline = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak, to the current RSS
    start = time.perf_counter()
    for images_batch, labels_batch in batches:
        step(images_batch, labels_batch)
    seconds = time.perf_counter() - start
    peak = _status_kib("VmHWM")
    return {"framework": framework, "baseline_mib": baseline / 1024, "peak_mib": peak / 1024,
            "growth_mib": (peak - baseline) / 1024, "epoch_s": seconds}


def epoch_memory(framework: str, samples: int = 50_000, batch: int = 64) -> dict[str, Any]:
    """Run ``epoch_memory_child`` in a fresh interpreter (so neither library's memory is counted twice)."""
    command = [sys.executable, "-m", "benchmarks.conv_speed", "--memory-child", framework,
               "--samples", str(samples), "--batch", str(batch)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------ main
ALLOCATORS = ("default", "steady")


def run(quick: bool = False, settle_s: float = 0.25, memory: bool = True, textbook: bool = False) -> dict[str, Any]:
    """W2 and W3 timed twice: with glibc malloc as it comes, then with its thresholds fixed
    (``environment.steady_malloc``, which cannot be undone in a process, hence the order).
    ``textbook``: each also with tinynn in textbook mode (keys ``*_textbook``)."""
    import torch

    from benchmarks.environment import steady_malloc

    torch.manual_seed(0)
    results: dict[str, Any] = {"blas": blas_info(), "load_average_before": os.getloadavg()[0]}
    steps, wide_steps, rounds = (10, 2, 3) if quick else (20, 5, 31)
    for allocator in ALLOCATORS:
        if allocator == "steady":
            results["malloc"] = steady_malloc()
        results[allocator] = {
            "tutorial_step": compare(tutorial_step_tinynn(), tutorial_step_torch(), steps, rounds, settle_s),
            "wide_conv": compare(wide_conv_tinynn(), wide_conv_torch(), wide_steps, rounds, settle_s),
        }
        if textbook:
            results[allocator]["tutorial_step_textbook"] = compare(
                textbook_step(tutorial_step_tinynn), tutorial_step_torch(), steps, rounds, settle_s)
            results[allocator]["wide_conv_textbook"] = compare(
                textbook_step(wide_conv_tinynn), wide_conv_torch(), wide_steps, rounds, settle_s)
    results["load_average_after"] = os.getloadavg()[0]
    if memory:
        samples = 5_000 if quick else 50_000
        names = ("tinynn", "textbook", "torch") if textbook else ("tinynn", "torch")
        results["epoch_memory"] = {name: epoch_memory(name, samples) for name in names}
    return results


def ratio_text(timing: dict[str, Any]) -> str:
    """One timing's ratios and page faults as the reports print them (and the core probe's answers,
    where it was asked)."""
    text = (f"time ratio tinynn/torch {timing['ratio']:.2f} (rounds {timing['ratio_min']:.2f}-"
            f"{timing['ratio_max']:.2f}); ratio of the best blocks {timing['ratio_of_best']:.2f}; page faults per "
            f"step {timing['tinynn_faults_per_step']:.0f} vs {timing['torch_faults_per_step']:.0f}")
    if "core_probe" in timing:
        probe = timing["core_probe"]
        text += f"; core probe chose one BLAS thread {probe.get('one_thread', 0)} of {sum(probe.values())} times"
    return text


def allocator_heading(results: dict[str, Any], allocator: str) -> str:
    """The line that opens one allocator's timings in a report."""
    if allocator == "default":
        return "glibc malloc as it comes (adaptive thresholds):"
    if results["malloc"]["steady_malloc"]:
        return "glibc malloc thresholds fixed (environment.steady_malloc):"
    return "steady_malloc unavailable here: the allocator was left as it comes:"


def report(results: dict[str, Any]) -> str:
    blas = results["blas"]
    lines = [f"numpy {blas['numpy']} ({blas.get('numpy_blas')}; loaded: {blas.get('openblas_config', '?')}, "
             f"core {blas.get('openblas_core', '?')}, {blas.get('openblas_threads', '?')} threads), "
             f"torch {blas['torch']} ({blas['torch_threads']} threads), {blas['cpus']} CPUs; load average "
             f"{results['load_average_before']:.1f} before the timings, {results['load_average_after']:.1f} after"]
    for allocator in ALLOCATORS:
        lines.append(allocator_heading(results, allocator))
        step, wide = results[allocator]["tutorial_step"], results[allocator]["wide_conv"]
        lines.append(f"  W2 tutorial CNN train step: tinynn {1 / step['tinynn_s']:.0f} steps/s, torch "
                     f"{1 / step['torch_s']:.0f} steps/s, {ratio_text(step)}")
        lines.append(f"  W3 wide conv fwd+bwd: tinynn {wide['tinynn_s'] * 1e3:.1f} ms, torch "
                     f"{wide['torch_s'] * 1e3:.1f} ms, {ratio_text(wide)}")
        if "tutorial_step_textbook" in results[allocator]:
            step, wide = results[allocator]["tutorial_step_textbook"], results[allocator]["wide_conv_textbook"]
            lines.append(f"  W2 in textbook mode: tinynn {1 / step['tinynn_s']:.0f} steps/s, torch "
                         f"{1 / step['torch_s']:.0f} steps/s, {ratio_text(step)}")
            lines.append(f"  W3 in textbook mode: tinynn {wide['tinynn_s'] * 1e3:.1f} ms, torch "
                         f"{wide['torch_s'] * 1e3:.1f} ms, {ratio_text(wide)}")
    for name, memory in results.get("epoch_memory", {}).items():
        lines.append(f"epoch peak RSS growth {name}: {memory['growth_mib']:.1f} MiB "
                     f"(baseline {memory['baseline_mib']:.0f} MiB, epoch {memory['epoch_s']:.1f} s)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions and a short epoch")
    parser.add_argument("--settle", type=float, default=0.25, help="seconds of sleep before each timed block")
    parser.add_argument("--no-memory", action="store_true", help="skip the epoch memory subprocesses")
    parser.add_argument("--textbook", action="store_true", help="also time tinynn in textbook mode (no engine)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--memory-child", choices=["tinynn", "textbook", "torch"], help=argparse.SUPPRESS)
    parser.add_argument("--samples", type=int, default=50_000, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=64, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.memory_child:
        print(json.dumps(epoch_memory_child(args.memory_child, args.samples, args.batch)))
        return 0
    results = run(args.quick, args.settle, memory=not args.no_memory, textbook=args.textbook)
    print(report(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
