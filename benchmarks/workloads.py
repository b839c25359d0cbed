"""The tutorial's two models and their training step, written once for tinynn and torch.

tinynn mirrors torch's names, so one builder serves both: ``build_model(nn, ...)`` receives
``tinynn.nn`` or ``torch.nn``. The models start from the same weights (torch's initialisation,
copied into tinynn with ``load_state_dict``), so both frameworks do the same arithmetic.
The one difference in the step is the backward: torch calls ``loss.backward()``; tinynn calls the
loss module's and then the model's hand-written ``backward``.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from benchmarks.timing import Framework

# The tutorial's hyper-parameters: logistic regression at lr 0.5, the CNN at lr 0.1 momentum 0.9.
WORKLOADS = {
    "logistic": {"lr": 0.5, "momentum": 0.0},
    "cnn": {"lr": 0.1, "momentum": 0.9},
}
MNIST_SAMPLES = 50_000  # the tutorial trains on the first 50,000 images and validates on the rest
BATCH_SIZE = 64


def build_model(nn: ModuleType, workload: str) -> Any:
    """``Linear(784, 10)`` or the tutorial's three-conv CNN, from ``tinynn.nn`` or ``torch.nn``."""
    if workload == "logistic":
        return nn.Linear(784, 10)
    if workload == "cnn":
        return nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 16, kernel_size=3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(16, 10, kernel_size=3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
    raise ValueError(f"unknown workload {workload!r}: expected one of {sorted(WORKLOADS)}")


def synthetic_mnist(samples: int, image_size: int = 28, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """MNIST-shaped data: ``samples`` flat float32 images in [0, 1) and int64 labels 0..9."""
    rng = np.random.default_rng(seed)
    images = rng.random((samples, image_size * image_size), dtype=np.float32)
    labels = rng.integers(0, 10, size=samples, dtype=np.int64)
    return images, labels


def _find_mnist(root: Path) -> Path | None:
    for folder in (root / "mnist", root / "MNIST" / "raw", root):
        if (folder / "train-images-idx3-ubyte.gz").is_file() and (folder / "train-labels-idx1-ubyte.gz").is_file():
            return folder
    return None


def mnist_or_synthetic(samples: int) -> tuple[np.ndarray, np.ndarray, str]:
    """The first ``samples`` MNIST training images if TINYNN_DATA points at them, else synthetic data."""
    root = os.environ.get("TINYNN_DATA")
    folder = _find_mnist(Path(root)) if root else None
    if folder is None or samples > 60_000:
        return (*synthetic_mnist(samples), "synthetic (uniform random float32, random labels)")
    with gzip.open(folder / "train-images-idx3-ubyte.gz") as file:
        pixels = np.frombuffer(file.read(), dtype=np.uint8, offset=16)
    with gzip.open(folder / "train-labels-idx1-ubyte.gz") as file:
        labels = np.frombuffer(file.read(), dtype=np.uint8, offset=8)
    images = (pixels.reshape(-1, 784)[:samples].astype(np.float32) / np.float32(255.0))
    return images, labels[:samples].astype(np.int64), f"MNIST training images from {folder}"


class Trainer:
    """One framework's model, loss and SGD optimizer for a workload, and its training step."""

    def __init__(self, framework: Framework, workload: str, image_size: int = 28, seed: int = 0) -> None:
        import torch

        import tinynn

        self.framework = framework
        self.workload = workload
        self.image_size = image_size
        hyper = WORKLOADS[workload]
        torch.manual_seed(seed)
        torch_model = build_model(torch.nn, workload)
        if framework.is_torch:
            self.model = torch_model.to(framework.device)
            self.optimizer = torch.optim.SGD(self.model.parameters(), lr=hyper["lr"], momentum=hyper["momentum"])
            self.loss_fn = torch.nn.functional.cross_entropy
        else:
            self.model = build_model(tinynn.nn, workload)
            self.model.load_state_dict(torch_model.state_dict())
            self.optimizer = tinynn.optim.SGD(self.model.parameters(), lr=hyper["lr"], momentum=hyper["momentum"])
            self.loss_fn = tinynn.nn.CrossEntropyLoss()

    def as_batch(self, images: np.ndarray) -> Any:
        """Flat images shaped for the model: (N, 784) for logistic, (N, 1, S, S) for the CNN."""
        if self.workload == "cnn":
            return images.reshape(-1, 1, self.image_size, self.image_size)
        return images

    def step(self, images: Any, labels: Any) -> None:
        """One training step on a batch (numpy arrays for tinynn, CPU tensors for torch)."""
        if self.framework.is_torch:
            images = self.as_batch(images).to(self.framework.device)
            labels = labels.to(self.framework.device)
            loss = self.loss_fn(self.model(images), labels)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad()
            return
        self.loss_fn(self.model(self.as_batch(images)), labels)
        grad_logits = self.loss_fn.backward()
        # The images need no gradient, so the first layer skips computing it (as torch does).
        self.model.backward(grad_logits, needs_input_grad=False)
        self.optimizer.step()
        self.optimizer.zero_grad()

    def tensors(self, images: np.ndarray, labels: np.ndarray) -> tuple[Any, Any]:
        """The arrays in this framework's form (torch tensors stay on the CPU, like a data set)."""
        if self.framework.is_torch:
            import torch

            return torch.from_numpy(images), torch.from_numpy(labels)
        return images, labels

    def loader(self, images: np.ndarray, labels: np.ndarray, batch_size: int = BATCH_SIZE,
               shuffle: bool = True) -> Iterable[tuple[Any, Any]]:
        """The tutorial's ``DataLoader(TensorDataset(x, y), batch_size, shuffle=True)``."""
        if self.framework.is_torch:
            from torch.utils.data import DataLoader, TensorDataset
        else:
            from tinynn.utils.data import DataLoader, TensorDataset
        return DataLoader(TensorDataset(*self.tensors(images, labels)), batch_size=batch_size, shuffle=shuffle)

    def train(self, batches: Iterable[tuple[Any, Any]], max_steps: int | None = None) -> int:
        """Train over ``batches`` (at most ``max_steps``); returns the number of steps taken."""
        steps = 0
        iterator: Iterator[tuple[Any, Any]] = iter(batches)
        for images, labels in iterator:
            self.step(images, labels)
            steps += 1
            if max_steps is not None and steps >= max_steps:
                break
        return steps
