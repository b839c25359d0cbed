"""What the figures were measured on: CPU, GPU, thread counts, numpy's BLAS, versions, load."""

from __future__ import annotations

import ctypes
import os
import platform
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np

# Variables that change how fast NumPy's BLAS or torch run; their presence is recorded.
PERF_ENV_VARS = (
    "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
    "MKL_DEBUG_CPU_TYPE", "TINYNN_DATA",
)


# glibc's mallopt parameters.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
STEADY_MMAP_THRESHOLD = 32 << 20  # glibc's largest
STEADY_TRIM_THRESHOLD = 1 << 30  # mallopt takes a C int


def steady_malloc() -> dict[str, Any]:
    """Fix glibc malloc's two adaptive thresholds in this process, so that timings do not depend on
    what the process allocated before; returns what was done, for the results.

    glibc serves large blocks with mmap (fresh pages: a page fault per 4 KiB on first touch) and
    raises that threshold as such blocks are freed; it returns the heap's top to the OS past a
    trim threshold that moves with it. Where they stand depends on the whole allocation history:
    measured here, torch's wide convolution took about 12,000 page faults and twice its usual time
    per step in a process that had run NumPy code first, and none in a fresh one. With both fixed
    (blocks under 32 MiB from the heap, the heap never trimmed) each library reuses its memory from
    step to step: the comparison is of the two libraries' work, not of the allocator's state.
    Nothing happens where the C library is not glibc.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        done = (libc.mallopt(_M_MMAP_THRESHOLD, STEADY_MMAP_THRESHOLD) == 1
                and libc.mallopt(_M_TRIM_THRESHOLD, STEADY_TRIM_THRESHOLD) == 1)
    except (OSError, AttributeError):
        done = False
    return {"steady_malloc": done, "mmap_threshold": STEADY_MMAP_THRESHOLD if done else None,
            "trim_threshold": STEADY_TRIM_THRESHOLD if done else None}


def usable_cores() -> int:
    """Cores this process may run on (the affinity mask, which a container may narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    match = re.search(r"^model name\s*:\s*(.+)$", text, re.MULTILINE)
    return match.group(1).strip() if match else platform.machine()


def numpy_blas() -> dict[str, Any]:
    """numpy's BLAS (name, version, build configuration) and its thread count."""
    info: dict[str, Any] = {}
    try:
        config = np.show_config(mode="dicts")
        blas = config["Build Dependencies"]["blas"]
        info = {"name": blas.get("name"), "version": blas.get("version"),
                "configuration": blas.get("openblas configuration")}
    except Exception as error:
        info = {"error": repr(error)}
    try:
        import threadpoolctl

        pools = threadpoolctl.threadpool_info()
        info["threadpools"] = [{key: pool.get(key) for key in ("user_api", "internal_api", "num_threads", "version")}
                               for pool in pools]
        blas_pools = [pool for pool in pools if pool.get("user_api") == "blas"]
        if blas_pools:
            info["num_threads"] = blas_pools[0].get("num_threads")
            info["threads_source"] = "threadpoolctl"
    except ImportError:
        from tinynn._engine.blas import openblas_report

        found = openblas_report()
        if found:
            info["num_threads"] = found["num_threads"]
            info["threads_source"] = f"{found['library']} via ctypes (threadpoolctl not installed)"
        else:
            info["num_threads"] = None
            info["threads_source"] = "unknown (threadpoolctl not installed)"
    return info


def torch_info() -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {
        "version": torch.__version__,
        "num_threads": torch.get_num_threads(),
        "num_interop_threads": torch.get_num_interop_threads(),
        "mkldnn": torch.backends.mkldnn.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cuda_available": torch.cuda.is_available(),
    }
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        info["cuda"] = {
            "device_name": torch.cuda.get_device_name(0),
            "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
            "memory_gib": round(props.total_memory / 2**30, 1),
            "cuda_version": torch.version.cuda,
            "cudnn_version": torch.backends.cudnn.version(),
            "cudnn_benchmark": torch.backends.cudnn.benchmark,
            "device_count": torch.cuda.device_count(),
        }
    return info


def git_commit(root: Path) -> str | None:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def collect(root: Path) -> dict[str, Any]:
    """Everything above in one JSON-ready dict."""
    return {
        "cpu_model": cpu_model(),
        "usable_cores": usable_cores(),
        "os_cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "numpy_blas": numpy_blas(),
        "torch": torch_info(),
        "env": {name: os.environ.get(name) for name in PERF_ENV_VARS},
        "git_commit": git_commit(root),
        "load_average_start": load_average(),
    }


def default_machine_slug(info: dict[str, Any]) -> str:
    """A short name for the results folder: ``nvidia-h100`` on a GPU, else ``cpu-2core-epyc``."""
    cuda = info["torch"].get("cuda")
    if cuda:
        words = re.findall(r"[a-z0-9]+", cuda["device_name"].lower())
        words = words or ["gpu"]
        model = next((word for word in words if re.fullmatch(r"[a-z]+\d+[a-z0-9]*", word)), words[-1])
        return f"{words[0]}-{model}"
    words = re.findall(r"[a-z0-9]+", info["cpu_model"].lower())
    family = next((word for word in words if word in ("epyc", "xeon", "ryzen", "core", "graviton", "neoverse")),
                  words[1] if len(words) > 1 else "cpu")
    return f"cpu-{info['usable_cores']}core-{family}"
