"""What the runner gives each version of a stage: the data, the epoch count and the shuffle order."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass
class TutorialData:
    """The tutorial's arrays: x (n, 784) float in [0, 1], y (n,) int64; ``source`` names where they came from.

    The character-level stages' text ("docs") is windows of character ids instead: x (n, seq_len)
    int64 and y the same windows one character on, with ``vocab`` the characters by id.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_valid: np.ndarray
    y_valid: np.ndarray
    source: str  # "mnist", "fashion-mnist", "synthetic" or "docs"
    vocab: str = ""  # text only: vocab[i] is the character of id i


class ReplayedShuffle:
    """torch's shuffle order, epoch after epoch, as a sampler for tinynn's DataLoader.

    Each ``iter()`` runs a torch DataLoader over ``range(n)`` built exactly like the stage's
    ``DataLoader(train_ds, batch_size=bs, shuffle=True, generator=...)``, with a generator seeded
    the same way. A torch DataLoader draws a base seed from its generator before the sampler's
    permutation, every epoch; replaying the whole loader (not just ``randperm``) keeps that in step.
    """

    def __init__(self, n: int, seed: int) -> None:
        import torch

        generator = torch.Generator(device=torch.get_default_device())
        generator.manual_seed(seed)
        self._loader = torch.utils.data.DataLoader(range(n), batch_size=max(n, 1), shuffle=True,
                                                   generator=generator)
        self._n = n

    def __iter__(self) -> Iterator[int]:
        for indices in self._loader:
            yield from indices.tolist()

    def __len__(self) -> int:
        return self._n


class StageContext:
    """Handed to ``torch_version(ctx)`` and ``tinynn_version(ctx)`` of every stage."""

    def __init__(self, data: TutorialData, epochs: int, seed: int = 0) -> None:
        self._data = data
        self.epochs = epochs
        self.seed = seed

    def data(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """``x_train, y_train, x_valid, y_valid`` as NumPy arrays (the tutorial's pickle gives the same)."""
        d = self._data
        return d.x_train, d.y_train, d.x_valid, d.y_valid

    @property
    def vocab(self) -> str:
        """The text stages' characters by id ("" for the image datasets)."""
        return self._data.vocab

    def shuffle_generator(self):
        """The seeded generator torch's ``DataLoader(..., shuffle=True, generator=...)`` draws from."""
        import torch

        generator = torch.Generator(device=torch.get_default_device())
        generator.manual_seed(self.seed)
        return generator

    def shuffle_sampler(self, n: int) -> ReplayedShuffle:
        """The same order for tinynn's ``DataLoader(..., sampler=...)``."""
        return ReplayedShuffle(n, self.seed)
