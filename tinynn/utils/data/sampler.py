"""Samplers: the order in which a DataLoader visits indices, and how it groups them into batches.

As in torch, iterating a sampler yields Python ints and a BatchSampler yields lists of them.
For speed, the built-in samplers also hand out a whole epoch's order as ONE int64 array
(``epoch_indices``), and ``BatchSampler.index_batches`` slices batches out of it, so the
DataLoader never builds Python lists for a TensorDataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sized
from typing import Any

import numpy as np

from tinynn._random import default_generator


class Sampler:
    """Base class: an iterable over dataset indices (``torch.utils.data.Sampler``)."""

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError


class SequentialSampler(Sampler):
    """Indices ``0, 1, ..., len(data_source) - 1``, in order, every epoch."""

    def __init__(self, data_source: Sized) -> None:
        self.data_source = data_source

    def epoch_indices(self) -> np.ndarray:
        return np.arange(len(self.data_source), dtype=np.int64)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.data_source)))

    def __len__(self) -> int:
        return len(self.data_source)


def _as_generator(generator: Any) -> np.random.Generator | None:
    if generator is None or isinstance(generator, np.random.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, bool):
        return np.random.default_rng(int(generator))
    raise TypeError(
        f"generator should be a numpy.random.Generator, an int seed or None, but got {type(generator).__name__}"
    )


class RandomSampler(Sampler):
    """A fresh random order every epoch (``torch.utils.data.RandomSampler``).

    Args:
        data_source: the dataset (only its length is used).
        replacement: draw ``num_samples`` indices with replacement instead of permuting.
        num_samples: how many indices per epoch (default ``len(data_source)``); without
            replacement, more than ``len(data_source)`` chains several permutations.
        generator: a ``numpy.random.Generator`` or an int seed. ``None`` draws from
            ``tinynn.default_generator()`` at the start of each epoch, so ``tinynn.manual_seed``
            makes shuffling reproducible. (torch's generator cannot be reproduced in NumPy: to
            follow torch's exact order, pass its indices to the DataLoader as ``sampler``.)
    """

    def __init__(self, data_source: Sized, replacement: bool = False, num_samples: int | None = None,
                 generator: Any = None) -> None:
        if not isinstance(replacement, bool):
            raise TypeError(f"replacement should be a boolean value, but got replacement={replacement}")
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        self.generator = _as_generator(generator)
        if not isinstance(self.num_samples, int) or isinstance(self.num_samples, bool) or self.num_samples <= 0:
            raise ValueError(f"num_samples should be a positive integer value, but got num_samples={self.num_samples}")

    @property
    def num_samples(self) -> int:
        # Read at each use, as torch does, since a dataset's size may change.
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def epoch_indices(self) -> np.ndarray:
        """One epoch's order as an int64 array, drawn now from the generator."""
        generator = self.generator if self.generator is not None else default_generator()
        size, num_samples = len(self.data_source), self.num_samples
        if self.replacement:
            return generator.integers(0, size, size=num_samples, dtype=np.int64)
        if num_samples == size:
            return generator.permutation(size)
        full_passes, remainder = divmod(num_samples, size)
        orders = [generator.permutation(size) for _ in range(full_passes)]
        orders.append(generator.permutation(size)[:remainder])
        return np.concatenate(orders)

    def __iter__(self) -> Iterator[int]:
        return iter(self.epoch_indices().tolist())

    def __len__(self) -> int:
        return self.num_samples


def epoch_index_array(sampler: Any) -> np.ndarray | None:
    """One epoch of ``sampler`` as a 1-D integer array, or None when it cannot be had at once.

    Works for the built-in samplers and for fixed orders: a list, tuple, range, ndarray or torch
    tensor of indices. Any other iterable (a custom sampler, a generator) is left to iteration.
    """
    if isinstance(sampler, (SequentialSampler, RandomSampler)):
        return sampler.epoch_indices()
    if isinstance(sampler, (list, tuple, range, np.ndarray)) or hasattr(sampler, "__array__"):
        try:
            order = np.asarray(sampler)
        except (TypeError, ValueError):  # ragged or not numeric: leave it to plain iteration
            return None
        if order.ndim == 1 and order.dtype.kind in "iu":
            return order
    return None


class BatchSampler(Sampler):
    """Group the indices of ``sampler`` (any iterable) into lists of ``batch_size``.

    The last batch is shorter when the count does not divide evenly, unless ``drop_last``.
    """

    def __init__(self, sampler: Sampler | Iterable[Any], batch_size: int, drop_last: bool) -> None:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer value, but got batch_size={batch_size}")
        if not isinstance(drop_last, bool):
            raise ValueError(f"drop_last should be a boolean value, but got drop_last={drop_last}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def index_batches(self) -> Iterator[np.ndarray]:
        """This epoch's batches as integer arrays: slices of one order array when there is one."""
        order = epoch_index_array(self.sampler)
        if order is None:
            for batch in self._iterate():
                yield np.asarray(batch)
        else:
            yield from self._slices(order)

    def _slices(self, order: np.ndarray) -> Iterator[np.ndarray]:
        stop = len(order) - len(order) % self.batch_size if self.drop_last else len(order)
        for start in range(0, stop, self.batch_size):
            yield order[start:start + self.batch_size]

    def _iterate(self) -> Iterator[list[Any]]:
        batch: list[Any] = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __iter__(self) -> Iterator[list[Any]]:
        order = epoch_index_array(self.sampler)
        if order is None:
            yield from self._iterate()
        else:
            for batch in self._slices(order):
                yield batch.tolist()

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size
