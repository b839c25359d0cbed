"""torch's global settings for a parity run: default dtype and device, threads, GPU determinism."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

# cuBLAS reads this when CUDA starts; deterministic algorithms need it (harmless without a GPU).
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


@contextmanager
def torch_settings(dtype: str, device: str) -> Iterator[None]:
    """torch's global defaults for a run, restored afterwards.

    ``set_default_dtype`` makes the tutorial's unchanged code build float64 tensors and models;
    ``set_default_device`` puts them on the GPU for ``--device cuda``. With a GPU, TF32 is off and
    only deterministic algorithms run, so a GPU run is reproducible and IEEE-exact per operation.
    """
    import torch

    threads = torch.get_num_threads()
    saved = (torch.get_default_dtype(), torch.get_default_device(),
             (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()),
             torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic)
    torch.set_default_dtype(torch.float64 if dtype == "float64" else torch.float32)
    # One CPU thread unless OMP_NUM_THREADS asks for more: the frameworks take turns, and torch's idle
    # OpenMP threads spin-wait, stealing the cores NumPy needs for tinynn's turn.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        # warn_only: AdaptiveAvgPool2d's CUDA backward has no deterministic version and would raise.
        # With output size 1 (stages 12, 13) each input gets exactly one atomic add, so the order of
        # additions cannot change any bit; the warning says nothing useful here and is silenced.
        torch.use_deterministic_algorithms(True, warn_only=True)
    if device != "cpu":
        torch.set_default_device(device)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="adaptive_avg_pool2d_backward_cuda does not have a deterministic")
            yield
    finally:
        torch.set_default_dtype(saved[0])
        torch.set_num_threads(threads)
        if device != "cpu":
            # None, not "cpu": a default device installs a mode that slows every later torch call.
            torch.set_default_device(None if saved[1].type == "cpu" else saved[1])
        torch.use_deterministic_algorithms(saved[2][0], warn_only=saved[2][1])
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic) = saved[3:]


def warm_up_torch() -> None:
    """One small conv + SGD-momentum step, so that torch's one-off start-up costs (lazy imports in
    its optimizers, first kernel dispatch) are not billed to the first stage's timing."""
    import torch

    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(2):
        loss = torch.nn.functional.cross_entropy(model(torch.rand(8, 1, 28, 28)), torch.arange(8))
        loss.backward()
        opt.step()
        opt.zero_grad()
