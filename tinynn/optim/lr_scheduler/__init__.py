"""tinynn.optim.lr_scheduler: learning-rate schedules, as ``torch.optim.lr_scheduler`` (same names,
arguments, defaults, errors, warnings and ``state_dict`` keys; the same floats, bit for bit).

A torch scheduler's ``state_dict()`` loads into the tinynn scheduler of the same kind.
"""

from tinynn.optim.lr_scheduler._base import LRScheduler, _LRScheduler  # noqa: F401 - torch keeps the old name
from tinynn.optim.lr_scheduler._one_cycle import OneCycleLR
from tinynn.optim.lr_scheduler._plateau import ReduceLROnPlateau
from tinynn.optim.lr_scheduler._schedules import (
    CosineAnnealingLR,
    ExponentialLR,
    LambdaLR,
    LinearLR,
    MultiStepLR,
    StepLR,
)
from tinynn.optim.lr_scheduler._sequential import SequentialLR

__all__ = [
    "CosineAnnealingLR",
    "ExponentialLR",
    "LRScheduler",
    "LambdaLR",
    "LinearLR",
    "MultiStepLR",
    "OneCycleLR",
    "ReduceLROnPlateau",
    "SequentialLR",
    "StepLR",
]
