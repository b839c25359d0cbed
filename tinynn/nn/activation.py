"""STUB: being written."""
from tinynn.nn.module import Module


def relu(input, inplace=False):
    raise NotImplementedError


def relu_backward(grad_output, output):
    raise NotImplementedError


def softmax(input, dim):
    raise NotImplementedError


def softmax_backward(grad_output, output, dim):
    raise NotImplementedError


def log_softmax(input, dim):
    raise NotImplementedError


def log_softmax_backward(grad_output, output, dim):
    raise NotImplementedError


class ReLU(Module):
    pass


class Softmax(Module):
    pass


class LogSoftmax(Module):
    pass
