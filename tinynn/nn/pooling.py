"""STUB: being written."""
from tinynn.nn.module import Module


def avg_pool2d(*a, **k):
    raise NotImplementedError


def avg_pool2d_backward(*a, **k):
    raise NotImplementedError


def max_pool2d(*a, **k):
    raise NotImplementedError


def max_pool2d_backward(*a, **k):
    raise NotImplementedError


def adaptive_avg_pool2d(*a, **k):
    raise NotImplementedError


def adaptive_avg_pool2d_backward(*a, **k):
    raise NotImplementedError


class AvgPool2d(Module):
    pass


class MaxPool2d(Module):
    pass


class AdaptiveAvgPool2d(Module):
    pass
