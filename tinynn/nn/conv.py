"""STUB: being written."""
from tinynn.nn.module import Module


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    raise NotImplementedError


def conv2d_backward(grad_output, input, weight, stride=1, padding=0, dilation=1, groups=1):
    raise NotImplementedError


class Conv2d(Module):
    pass
