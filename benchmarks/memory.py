"""Peak memory of a training loop, measured in a fresh process per framework.

    python -m benchmarks.memory --workload cnn --framework tinynn --steps 100 --threads 2

prints one JSON line. A process of its own keeps one framework's allocations (and torch's
caching allocator) out of the other's figure. The figure is the growth of the peak resident set
(RSS) over the training loop, above what the process held once the data and the model existed.
On Linux the peak is reset just before the loop (``/proc/self/clear_refs``), so start-up
transients do not count. tinynn also gets a second figure from ``tracemalloc`` (NumPy reports
its buffers to it): the most NumPy memory held at once during a few traced steps. On a GPU the
figure that matters is torch's peak of allocated CUDA memory.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import resource
import sys
import tracemalloc
from pathlib import Path
from typing import Any

from benchmarks.timing import TINYNN, TORCH_CPU, TORCH_CUDA, Framework
from benchmarks.workloads import BATCH_SIZE, WORKLOADS, Trainer, synthetic_mnist

MIB = 2**20
FRAMEWORKS = {TINYNN: Framework(TINYNN, None), TORCH_CPU: Framework(TORCH_CPU, "cpu"),
              TORCH_CUDA: Framework(TORCH_CUDA, "cuda")}
TRACED_STEPS = 10


def _status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) if match else None


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _rss_now_mib() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_peak_mib() -> float:
    kib = _status_kib("VmHWM")
    return kib / 1024 if kib is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_memory(workload: str, framework_name: str, steps: int) -> dict[str, Any]:
    framework = FRAMEWORKS[framework_name]
    images, labels = synthetic_mnist(steps * BATCH_SIZE)
    trainer = Trainer(framework, workload)
    batches = trainer.loader(images, labels)
    cuda = framework.is_cuda
    if cuda:
        import torch

        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        gpu_before = torch.cuda.memory_allocated()
    gc.collect()
    before = _rss_now_mib()
    peak_was_reset = _reset_peak_rss()
    taken = trainer.train(batches)
    framework.sync()
    result: dict[str, Any] = {
        "workload": workload, "framework": framework_name, "steps": taken,
        "rss_before_mib": round(before, 1), "rss_peak_mib": round(_rss_peak_mib(), 1),
        "rss_growth_mib": round(_rss_peak_mib() - before, 1),
        "method": "VmHWM after /proc/self/clear_refs" if peak_was_reset else "ru_maxrss (peak not reset)",
    }
    if cuda:
        result["gpu_peak_growth_mib"] = round((torch.cuda.max_memory_allocated() - gpu_before) / MIB, 1)
    if framework_name == TINYNN:
        gc.collect()
        tracemalloc.start()
        trainer.train(trainer.loader(images, labels), max_steps=TRACED_STEPS)
        result["tracemalloc_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / MIB, 1)
        tracemalloc.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), required=True)
    parser.add_argument("--framework", choices=sorted(FRAMEWORKS), required=True)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    print(json.dumps(measure_memory(args.workload, args.framework, args.steps)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
