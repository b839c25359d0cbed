"""tinynn.nn.functional (``F``): every op as a pure forward function beside its pure backward.

The forward functions take torch's arguments in torch's order and return an ndarray. Each
``<op>_backward`` takes the upstream gradient and what the forward needs, and returns the
gradients. The implementations live with their family (linear.py, activation.py, loss.py,
conv.py, pooling.py); this module only gathers them under torch's import path.
"""

from tinynn.nn.activation import (
    log_softmax,
    log_softmax_backward,
    relu,
    relu_backward,
    softmax,
    softmax_backward,
)
from tinynn.nn.conv import conv2d, conv2d_backward
from tinynn.nn.flatten import flatten
from tinynn.nn.linear import linear, linear_backward
from tinynn.nn.loss import cross_entropy, cross_entropy_backward, nll_loss, nll_loss_backward
from tinynn.nn.pooling import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)

__all__ = [
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "conv2d", "conv2d_backward", "cross_entropy", "cross_entropy_backward", "flatten", "linear",
    "linear_backward", "log_softmax", "log_softmax_backward", "max_pool2d", "max_pool2d_backward",
    "nll_loss", "nll_loss_backward", "relu", "relu_backward", "softmax", "softmax_backward",
]
