"""tinynn.optim: optimizers, named as in ``torch.optim``."""

from tinynn.optim.optimizer import Optimizer
from tinynn.optim.sgd import SGD

__all__ = ["SGD", "Optimizer"]
