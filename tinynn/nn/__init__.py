"""tinynn.nn: layers with hand-written backward passes, named as in ``torch.nn``."""

from tinynn.nn import functional, init, utils
from tinynn.nn.activation import LogSoftmax, ReLU, Softmax
from tinynn.nn.container import Lambda, Sequential
from tinynn.nn.conv import Conv2d
from tinynn.nn.flatten import Flatten
from tinynn.nn.linear import Identity, Linear
from tinynn.nn.loss import CrossEntropyLoss, NLLLoss
from tinynn.nn.module import Module
from tinynn.nn.parameter import Parameter
from tinynn.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Flatten", "Identity", "Lambda",
    "Linear", "LogSoftmax", "MaxPool2d", "Module", "NLLLoss", "Parameter", "ReLU", "Sequential",
    "Softmax", "functional", "init", "utils",
]
