"""tinynn.utils.data: Dataset, TensorDataset, samplers and DataLoader, named as in ``torch.utils.data``."""

from tinynn.utils.data.dataloader import DataLoader, default_collate
from tinynn.utils.data.dataset import Dataset, TensorDataset
from tinynn.utils.data.sampler import BatchSampler, RandomSampler, Sampler, SequentialSampler

__all__ = [
    "BatchSampler", "DataLoader", "Dataset", "RandomSampler", "Sampler", "SequentialSampler",
    "TensorDataset", "default_collate",
]
