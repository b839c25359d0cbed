"""tinynn.utils.data: datasets, samplers and DataLoader, named as in ``torch.utils.data``."""

from tinynn.utils.data.dataloader import DataLoader, default_collate, get_worker_info
from tinynn.utils.data.dataset import (
    ChainDataset,
    ConcatDataset,
    Dataset,
    IterableDataset,
    Subset,
    TensorDataset,
    random_split,
)
from tinynn.utils.data.sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = [
    "BatchSampler", "ChainDataset", "ConcatDataset", "DataLoader", "Dataset", "IterableDataset", "RandomSampler",
    "Sampler", "SequentialSampler", "Subset", "TensorDataset", "default_collate", "get_worker_info", "random_split",
]
