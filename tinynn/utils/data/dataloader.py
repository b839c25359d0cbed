"""DataLoader: iterate a dataset in (shuffled) batches, collated into NumPy arrays as torch would.

The loop is torch's single-process one: the batch sampler yields a list of indices, the dataset
is asked for each sample, and ``collate_fn`` (``default_collate``) stacks them. One shortcut
keeps it fast: for a ``TensorDataset`` (or a ``Subset`` of one) with the default collate, a batch
is gathered with a single fancy index per array (``dataset[index_array]``), which gives exactly
what stacking the samples one by one would, without ``batch_size`` Python-level item calls.
"""

from __future__ import annotations

import collections.abc
import copy
import itertools
import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

from tinynn.utils.data.dataset import Dataset, IterableDataset, Subset, TensorDataset
from tinynn.utils.data.sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

# dtype strings of arrays that cannot be stacked into a numeric batch (bytes, str, object).
_STRING_OR_OBJECT_DTYPE = re.compile(r"[SaUO]")
_COLLATE_ERROR = "default_collate: batch must contain tensors, numpy arrays, numbers, dicts or lists; found {}"


def _stack(arrays: list[Any]) -> np.ndarray:
    shape = np.shape(arrays[0])
    for position, array in enumerate(arrays):
        if np.shape(array) != shape:
            raise RuntimeError(
                f"stack expects each tensor to be equal size, but got {list(shape)} at entry 0 and "
                f"{list(np.shape(array))} at entry {position}"
            )
    return np.stack(arrays)


def _ints_like_torch(values: Iterable[Any]) -> np.ndarray:
    """``torch.tensor(values)`` for Python ints/bools: bool stays bool, ints int64, a float makes float32."""
    array = np.array(values)
    if array.dtype.kind in "iu":
        return array.astype(np.int64, copy=False)
    if array.dtype.kind == "f":
        return array.astype(np.float32)  # torch's default dtype
    return array


def default_collate(batch: Any) -> Any:
    """Merge a list of samples into a batch, with torch's rules (arrays stay NumPy).

    * ndarrays -> stacked along a new first axis (all must share one shape)
    * NumPy scalars -> a 1-D array of their dtype; Python floats -> float64; Python ints -> int64
    * str / bytes -> left as the sequence they came in
    * dict -> dict of collated values per key; namedtuple -> namedtuple of collated fields
    * tuple or list samples -> transposed and collated field by field (tuples come back as a list)
    """
    if len(batch) == 0:
        raise IndexError("default_collate: got an empty batch")
    elem = batch[0]
    if isinstance(elem, np.ndarray):
        if _STRING_OR_OBJECT_DTYPE.search(elem.dtype.str) is not None:
            raise TypeError(_COLLATE_ERROR.format(elem.dtype))
        return _stack(batch)
    if isinstance(elem, (np.bool_, np.number, np.object_)):
        return np.asarray(batch)
    if isinstance(elem, float):
        return np.array(batch, dtype=np.float64)
    if isinstance(elem, int):
        return _ints_like_torch(batch)
    if isinstance(elem, (str, bytes)):
        return batch
    if isinstance(elem, collections.abc.Mapping):
        collated = {key: default_collate([sample[key] for sample in batch]) for key in elem}
        try:
            if isinstance(elem, collections.abc.MutableMapping):
                clone = copy.copy(elem)  # keeps the mapping's own type (OrderedDict, ...)
                clone.update(collated)
                return clone
            return type(elem)(collated)
        except TypeError:  # a mapping type that cannot be built from a dict
            return collated
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(samples) for samples in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(sample) != size for sample in batch):
            raise RuntimeError("each element in list of batch should be of equal size")
        fields = [default_collate(samples) for samples in zip(*batch)]
        if isinstance(elem, tuple):
            return fields  # torch returns a list here, for backwards compatibility
        try:
            if isinstance(elem, collections.abc.MutableSequence):
                clone = copy.copy(elem)
                for position, field in enumerate(fields):
                    clone[position] = field
                return clone
            return type(elem)(fields)
        except TypeError:
            return fields
    raise TypeError(_COLLATE_ERROR.format(type(elem)))


def default_convert(data: Any) -> Any:
    """What an unbatched loader (``batch_size=None``) yields: torch's ``default_convert``.

    torch turns NumPy arrays into tensors; here they already are the tensors, so the visible
    effect is torch's container rule: a tuple sample comes back as a list (namedtuples stay).
    """
    if isinstance(data, (np.ndarray, np.generic, str, bytes)):
        return data
    if isinstance(data, collections.abc.Mapping):
        return {key: default_convert(value) for key, value in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(value) for value in data))
    if isinstance(data, tuple):
        return [default_convert(value) for value in data]
    if isinstance(data, collections.abc.Sequence):
        return [default_convert(value) for value in data]
    return data


def get_worker_info() -> None:
    """``None``: tinynn loads in the main process, where torch gives None too (an IterableDataset's
    ``__iter__`` that splits its stream between workers then takes the whole stream)."""
    return None


class DataLoader:
    """Batches of a dataset (``torch.utils.data.DataLoader``, single process).

    Args (torch's, in torch's order):
        dataset: anything with ``__getitem__`` (and ``__len__`` for the default samplers), or an
            ``IterableDataset``, batched in its stream's order (no shuffle, sampler or batch_sampler).
        batch_size: samples per batch; ``None`` yields samples one at a time, unbatched.
        shuffle: a new random order each epoch (a ``RandomSampler`` using ``generator``).
        sampler: the index order: a Sampler or ANY iterable of indices (a list, an ndarray, a
            torch tensor such as ``torch.randperm(n)``); excludes ``shuffle``.
        batch_sampler: yields whole lists of indices; excludes batch_size, shuffle, sampler and
            drop_last.
        num_workers: must be 0: tinynn loads in the main process only.
        collate_fn: merges a list of samples into a batch (default ``default_collate``).
        pin_memory: accepted and ignored (there is no device to copy to).
        drop_last: drop the last batch when it is smaller than ``batch_size``.
        timeout, worker_init_fn, multiprocessing_context: accepted for torch compatibility;
            they only concern worker processes.
        generator: ``numpy.random.Generator`` or int seed for shuffling; ``None`` uses
            ``tinynn.default_generator()``.
    """

    def __init__(self, dataset: Dataset | Any, batch_size: int | None = 1, shuffle: bool | None = None,
                 sampler: Sampler | Iterable[Any] | None = None,
                 batch_sampler: Sampler | Iterable[Any] | None = None, num_workers: int = 0,
                 collate_fn: Callable[[list[Any]], Any] | None = None, pin_memory: bool = False,
                 drop_last: bool = False, timeout: float = 0, worker_init_fn: Callable[[int], None] | None = None,
                 multiprocessing_context: Any = None, generator: Any = None) -> None:
        if num_workers < 0:
            raise ValueError("num_workers option should be non-negative; use num_workers=0 to disable multiprocessing.")
        if num_workers > 0:
            raise NotImplementedError(
                f"tinynn's DataLoader loads batches in the main process only: use num_workers=0 (got {num_workers})"
            )
        if timeout < 0:
            raise ValueError("timeout option should be non-negative")
        if isinstance(dataset, IterableDataset):  # no indices: the stream's own order, batched as it comes
            # shuffle=False counts as unspecified, as in torch (False was its default).
            for name, value in (("shuffle", shuffle or None), ("sampler", sampler), ("batch_sampler", batch_sampler)):
                if value is not None:
                    raise ValueError(f"DataLoader with IterableDataset: expected unspecified {name} option, "
                                     f"but got {name}={value}")
            sampler = _InfiniteConstantSampler()
        shuffle = bool(shuffle)
        if sampler is not None and shuffle:
            raise ValueError("sampler option is mutually exclusive with shuffle")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise ValueError(
                    "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last"
                )
            batch_size, drop_last = None, False
        elif batch_size is None and drop_last:
            raise ValueError(
                "batch_size=None option disables auto-batching and is mutually exclusive with drop_last"
            )
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)

        self.dataset = dataset
        self.batch_size = batch_size
        self.drop_last = drop_last
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.num_workers = num_workers
        self.pin_memory = pin_memory
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.multiprocessing_context = multiprocessing_context
        self.generator = generator
        if collate_fn is None:
            collate_fn = default_collate if self._auto_collation else default_convert
        self.collate_fn = collate_fn

    @property
    def _auto_collation(self) -> bool:
        return self.batch_sampler is not None

    def __len__(self) -> int:
        if isinstance(self.dataset, IterableDataset):  # the stream's own length, if it has one
            length = len(self.dataset)
            if self.batch_size is None:
                return length
            return length // self.batch_size if self.drop_last else -(-length // self.batch_size)
        return len(self.batch_sampler if self._auto_collation else self.sampler)

    def _whole_batch_rows(self) -> tuple[TensorDataset, np.ndarray | None] | None:
        """Where one fancy index per array builds the same batch as collating the samples: the
        TensorDataset to index, and the map from this dataset's indices to its rows (a Subset's
        indices; None for the TensorDataset itself). None where samples must be collated."""
        if not (self._auto_collation and self.collate_fn is default_collate):
            return None
        dataset, rows = self.dataset, None
        if type(dataset) is Subset:
            dataset, rows = dataset.dataset, np.asarray(dataset.indices)
            if rows.ndim != 1 or (rows.dtype.kind not in "iu" and rows.size):
                return None
        if (isinstance(dataset, TensorDataset)
                and type(dataset).__getitem__ is TensorDataset.__getitem__  # no subclass transforms
                and all(array.dtype.kind in "biufc" for array in dataset.tensors)):
            return dataset, rows
        return None

    def __iter__(self) -> Iterator[Any]:
        if isinstance(self.dataset, IterableDataset):
            yield from self._stream_batches()
            return
        if not self._auto_collation:
            for index in self.sampler:
                yield self.collate_fn(self.dataset[index])
            return
        source = self._whole_batch_rows()
        if source is None:
            for indices in self.batch_sampler:
                yield self.collate_fn([self.dataset[index] for index in indices])
            return
        tensors, rows = source
        if isinstance(self.batch_sampler, BatchSampler):
            index_batches = self.batch_sampler.index_batches()
        else:
            index_batches = (np.asarray(indices) for indices in self.batch_sampler)
        for indices in index_batches:
            if indices.ndim == 1 and indices.dtype.kind in "iu" and len(indices) > 0:
                # A list, as default_collate makes of tuple samples.
                yield list(tensors[indices if rows is None else rows[indices]])
            else:  # not a plain batch of integer indices: take torch's road and its errors
                yield self.collate_fn([self.dataset[index] for index in indices])

    def _stream_batches(self) -> Iterator[Any]:
        """Batches of ``batch_size`` samples in the stream's order; a short last one unless ``drop_last``."""
        samples = iter(self.dataset)
        if not self._auto_collation:
            for sample in samples:
                yield self.collate_fn(sample)
            return
        while batch := list(itertools.islice(samples, self.batch_size)):
            if self.drop_last and len(batch) < self.batch_size:
                return
            yield self.collate_fn(batch)


class _InfiniteConstantSampler(Sampler):
    """An IterableDataset's sampler, as in torch: ``None`` forever (the stream needs no index)."""

    def __iter__(self) -> Iterator[None]:
        return itertools.repeat(None)
