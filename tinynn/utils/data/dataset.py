"""Dataset (anything indexable with a length), TensorDataset (rows of same-length arrays),
IterableDataset (a stream), and the ways to combine them: ConcatDataset, ChainDataset, Subset and
random_split, as in ``torch.utils.data``."""

from __future__ import annotations

import bisect
import itertools
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from tinynn._random import default_generator
from tinynn.utils.data.sampler import _as_generator


class Dataset:
    """A map from index to sample (``torch.utils.data.Dataset``).

    Subclasses implement ``__getitem__`` and, for the default samplers, ``__len__``.
    """

    def __getitem__(self, index: Any) -> Any:
        raise NotImplementedError("Subclasses of Dataset should implement __getitem__.")

    def __add__(self, other: Dataset) -> ConcatDataset:
        return ConcatDataset([self, other])


class TensorDataset(Dataset):
    """Samples are rows: ``dataset[i] == (tensors[0][i], tensors[1][i], ...)``.

    Args:
        *tensors: arrays (or anything ``np.asarray`` accepts, such as torch CPU tensors) with the
            same first dimension. They are kept as they are: no copy, no dtype change.

    ``index`` may be an int, a slice or an integer index array; with an array the result is a
    whole batch gathered by one fancy index per array, which the DataLoader uses for speed.
    """

    def __init__(self, *tensors: Any) -> None:
        if not tensors:
            raise ValueError("TensorDataset needs at least one array")
        arrays = tuple(np.asarray(tensor) for tensor in tensors)
        for position, array in enumerate(arrays):
            if array.ndim == 0:
                raise ValueError(
                    f"TensorDataset: array {position} is 0-dimensional; every array needs a first "
                    "(sample) dimension"
                )
        lengths = [array.shape[0] for array in arrays]
        if any(length != lengths[0] for length in lengths):
            listed = ", ".join(str(length) for length in lengths[:-1]) + f" and {lengths[-1]}"
            raise ValueError(f"Size mismatch between tensors: lengths {listed}")
        self.tensors: tuple[np.ndarray, ...] = arrays

    def __getitem__(self, index: Any) -> tuple[Any, ...]:
        return tuple(array[index] for array in self.tensors)

    def __len__(self) -> int:
        return self.tensors[0].shape[0]


class IterableDataset(Dataset):
    """A stream of samples (``torch.utils.data.IterableDataset``): subclasses implement ``__iter__``,
    and ``__len__`` if the DataLoader's ``len()`` is wanted. The DataLoader batches the samples in
    the order the stream gives them; there are no indices, so no sampler and no shuffle."""

    def __iter__(self) -> Iterator[Any]:
        raise NotImplementedError("Subclasses of IterableDataset should implement __iter__.")

    def __add__(self, other: Dataset) -> ChainDataset:
        return ChainDataset([self, other])


class ChainDataset(IterableDataset):
    """Streams one after another."""

    def __init__(self, datasets: Iterable[Any]) -> None:
        self.datasets = datasets

    def __iter__(self) -> Iterator[Any]:
        for dataset in self.datasets:
            yield from _stream(dataset)

    def __len__(self) -> int:
        return sum(len(_stream(dataset)) for dataset in self.datasets)


def _stream(dataset: Any) -> IterableDataset:
    if not isinstance(dataset, IterableDataset):
        raise AssertionError("ChainDataset only supports IterableDataset")
    return dataset


class ConcatDataset(Dataset):
    """Datasets one after another: index ``i`` is in the first dataset whose cumulative size passes it."""

    def __init__(self, datasets: Iterable[Any]) -> None:
        self.datasets = list(datasets)
        if not self.datasets:
            raise AssertionError("datasets should not be an empty iterable")
        if any(isinstance(dataset, IterableDataset) for dataset in self.datasets):
            raise AssertionError("ConcatDataset does not support IterableDataset")
        self.cumulative_sizes = list(itertools.accumulate(len(dataset) for dataset in self.datasets))

    def __len__(self) -> int:
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx: int) -> Any:
        if idx < 0:
            if -idx > len(self):
                raise ValueError("absolute value of index should not exceed dataset length")
            idx = len(self) + idx
        which = bisect.bisect_right(self.cumulative_sizes, idx)  # past the end: IndexError, as in torch
        return self.datasets[which][idx - (self.cumulative_sizes[which - 1] if which else 0)]


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order: ``subset[i] == dataset[indices[i]]``."""

    def __init__(self, dataset: Any, indices: Sequence[int]) -> None:
        self.dataset = dataset
        self.indices = indices

    def __getitem__(self, idx: Any) -> Any:
        if isinstance(idx, list):
            return self.dataset[[self.indices[i] for i in idx]]
        return self.dataset[self.indices[idx]]

    def __len__(self) -> int:
        return len(self.indices)


def random_split(dataset: Any, lengths: Sequence[int | float],
                 generator: np.random.Generator | int | None = None) -> list[Subset]:
    """Split ``dataset`` into non-overlapping random Subsets of the given lengths.

    Fractions that sum to 1 become ``floor(fraction * len(dataset))`` each, the remainder then
    handed out one by one from the first split on (torch's rule). ``generator``: a NumPy
    Generator or an int seed; ``None`` draws from tinynn's global one (``tinynn.manual_seed``).
    torch draws its permutation from its own generator, so the same seed picks other samples.
    """
    size = len(dataset)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for i, fraction in enumerate(lengths):
            if fraction < 0 or fraction > 1:
                raise ValueError(f"Fraction at index {i} is not between 0 and 1")
        counts = [math.floor(size * fraction) for fraction in lengths]
        for i in range(size - sum(counts)):
            counts[i % len(counts)] += 1
        for i, count in enumerate(counts):
            if count == 0:
                warnings.warn(f"Length of split at index {i} is 0. This might result in an empty dataset.",
                              stacklevel=2)
        lengths = counts
    if sum(lengths) != size:
        raise ValueError("Sum of input lengths does not equal the length of the input dataset!")
    # torch does not check these; a negative length would silently make overlapping subsets.
    for i, length in enumerate(lengths):
        if not isinstance(length, (int, np.integer)) or length < 0:
            raise ValueError(f"random_split: length at index {i} must be a non-negative int, got {length!r}")
    generator = _as_generator(generator) or default_generator()
    order = generator.permutation(size).tolist()
    ends = list(itertools.accumulate(lengths))
    return [Subset(dataset, order[end - length:end]) for end, length in zip(ends, lengths, strict=True)]
