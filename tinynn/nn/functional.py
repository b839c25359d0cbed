"""tinynn.nn.functional (``F``): every op as a pure forward function beside its pure backward.

The forward functions take torch's arguments in torch's order and return an ndarray. Each
``<op>_backward`` takes the upstream gradient and what the forward needs, and returns the
gradients. The implementations live with their family (linear.py, activation.py, softmax.py, dropout.py, loss*.py,
conv.py, pooling.py, batchnorm.py, normalization.py, sparse.py, attention.py); this module only gathers
them under torch's import path.
"""

from tinynn.nn.activation import (
    elu,
    elu_backward,
    gelu,
    gelu_backward,
    hardtanh,
    hardtanh_backward,
    leaky_relu,
    leaky_relu_backward,
    relu,
    relu_backward,
    sigmoid,
    sigmoid_backward,
    silu,
    silu_backward,
    softplus,
    softplus_backward,
    tanh,
    tanh_backward,
)
from tinynn.nn.attention import (
    attention_dropout_noise,
    scaled_dot_product_attention,
    scaled_dot_product_attention_backward,
)
from tinynn.nn.batchnorm import batch_norm, batch_norm_backward
from tinynn.nn.conv import conv2d, conv2d_backward
from tinynn.nn.dropout import dropout, dropout2d, dropout2d_backward, dropout_backward, dropout_noise
from tinynn.nn.flatten import flatten
from tinynn.nn.linear import linear, linear_backward
from tinynn.nn.loss import cross_entropy, cross_entropy_backward, nll_loss, nll_loss_backward
from tinynn.nn.loss_likelihood import (
    binary_cross_entropy,
    binary_cross_entropy_backward,
    binary_cross_entropy_with_logits,
    binary_cross_entropy_with_logits_backward,
    kl_div,
    kl_div_backward,
)
from tinynn.nn.loss_regression import (
    huber_loss,
    huber_loss_backward,
    l1_loss,
    l1_loss_backward,
    mse_loss,
    mse_loss_backward,
    smooth_l1_loss,
    smooth_l1_loss_backward,
)
from tinynn.nn.normalization import group_norm, group_norm_backward, layer_norm, layer_norm_backward
from tinynn.nn.pooling import (
    adaptive_avg_pool2d,
    adaptive_avg_pool2d_backward,
    avg_pool2d,
    avg_pool2d_backward,
    max_pool2d,
    max_pool2d_backward,
)
from tinynn.nn.softmax import log_softmax, log_softmax_backward, softmax, softmax_backward
from tinynn.nn.sparse import embedding, embedding_backward, embedding_renorm_

__all__ = [
    "adaptive_avg_pool2d", "adaptive_avg_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "conv2d", "conv2d_backward", "cross_entropy", "cross_entropy_backward", "flatten", "linear",
    "linear_backward", "log_softmax", "log_softmax_backward", "max_pool2d", "max_pool2d_backward",
    "nll_loss", "nll_loss_backward", "relu", "relu_backward", "softmax", "softmax_backward",
]
__all__ += ["batch_norm", "batch_norm_backward", "group_norm", "group_norm_backward", "layer_norm",
            "layer_norm_backward"]
__all__ += ["binary_cross_entropy", "binary_cross_entropy_backward", "binary_cross_entropy_with_logits",
            "binary_cross_entropy_with_logits_backward", "huber_loss", "huber_loss_backward", "kl_div",
            "kl_div_backward", "l1_loss", "l1_loss_backward", "mse_loss", "mse_loss_backward", "smooth_l1_loss",
            "smooth_l1_loss_backward"]
__all__ += ["dropout", "dropout2d", "dropout2d_backward", "dropout_backward", "dropout_noise", "elu", "elu_backward",
            "gelu", "gelu_backward", "hardtanh", "hardtanh_backward", "leaky_relu", "leaky_relu_backward", "sigmoid",
            "sigmoid_backward", "silu", "silu_backward", "softplus", "softplus_backward", "tanh", "tanh_backward"]
__all__ += ["attention_dropout_noise", "embedding", "embedding_backward", "embedding_renorm_",
            "scaled_dot_product_attention", "scaled_dot_product_attention_backward"]
