"""tinynn.optim: optimizers, named as in ``torch.optim``."""

from tinynn.optim import lr_scheduler
from tinynn.optim.adagrad import Adagrad
from tinynn.optim.adam import Adam
from tinynn.optim.adamw import AdamW
from tinynn.optim.optimizer import Optimizer
from tinynn.optim.rmsprop import RMSprop
from tinynn.optim.sgd import SGD

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "lr_scheduler"]
