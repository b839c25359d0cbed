"""Dataset (anything indexable with a length) and TensorDataset (rows of same-length arrays)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Dataset:
    """A map from index to sample (``torch.utils.data.Dataset``).

    Subclasses implement ``__getitem__`` and, for the default samplers, ``__len__``.
    """

    def __getitem__(self, index: Any) -> Any:
        raise NotImplementedError("Subclasses of Dataset should implement __getitem__.")


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
