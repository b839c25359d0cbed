"""STUB: being written."""
from tinynn.optim.optimizer import Optimizer


class SGD(Optimizer):
    pass
