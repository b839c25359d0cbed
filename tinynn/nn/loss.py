"""STUB: being written."""
from tinynn.nn.module import Module


def nll_loss(input, target, weight=None, ignore_index=-100, reduction="mean"):
    raise NotImplementedError


def nll_loss_backward(grad_output, input, target, weight=None, ignore_index=-100, reduction="mean"):
    raise NotImplementedError


def cross_entropy(input, target, weight=None, ignore_index=-100, reduction="mean", label_smoothing=0.0):
    raise NotImplementedError


def cross_entropy_backward(grad_output, input, target, weight=None, ignore_index=-100, reduction="mean",
                           label_smoothing=0.0):
    raise NotImplementedError


class NLLLoss(Module):
    pass


class CrossEntropyLoss(Module):
    pass
