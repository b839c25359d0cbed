"""tinynn.nn: layers with hand-written backward passes, named as in ``torch.nn``."""

from tinynn.nn import functional, init, utils
from tinynn.nn.activation import ELU, GELU, Hardtanh, LeakyReLU, ReLU, Sigmoid, SiLU, Softplus, Tanh
from tinynn.nn.batchnorm import BatchNorm1d, BatchNorm2d
from tinynn.nn.container import Lambda, Sequential
from tinynn.nn.conv import Conv2d
from tinynn.nn.dropout import Dropout, Dropout2d
from tinynn.nn.flatten import Flatten
from tinynn.nn.linear import Identity, Linear
from tinynn.nn.loss import CrossEntropyLoss, NLLLoss
from tinynn.nn.loss_likelihood import BCELoss, BCEWithLogitsLoss, KLDivLoss
from tinynn.nn.loss_regression import HuberLoss, L1Loss, MSELoss, SmoothL1Loss
from tinynn.nn.module import Module
from tinynn.nn.multihead_attention import MultiheadAttention
from tinynn.nn.normalization import GroupNorm, LayerNorm
from tinynn.nn.parameter import Parameter
from tinynn.nn.pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from tinynn.nn.rnn import GRU, LSTM, RNN
from tinynn.nn.rnn_cells import GRUCell, LSTMCell, RNNCell
from tinynn.nn.softmax import LogSoftmax, Softmax
from tinynn.nn.sparse import Embedding
from tinynn.nn.transformer import TransformerEncoder, TransformerEncoderLayer

__all__ = [
    "AdaptiveAvgPool2d", "AvgPool2d", "Conv2d", "CrossEntropyLoss", "Flatten", "Identity", "Lambda",
    "Linear", "LogSoftmax", "MaxPool2d", "Module", "NLLLoss", "Parameter", "ReLU", "Sequential",
    "Softmax", "functional", "init", "utils",
]
__all__ += ["BatchNorm1d", "BatchNorm2d", "GroupNorm", "LayerNorm"]
__all__ += ["BCELoss", "BCEWithLogitsLoss", "HuberLoss", "KLDivLoss", "L1Loss", "MSELoss", "SmoothL1Loss"]
__all__ += ["ELU", "GELU", "Dropout", "Dropout2d", "Hardtanh", "LeakyReLU", "SiLU", "Sigmoid", "Softplus", "Tanh"]
__all__ += ["GRU", "LSTM", "RNN", "Embedding", "GRUCell", "LSTMCell", "MultiheadAttention", "RNNCell"]
__all__ += ["TransformerEncoder", "TransformerEncoderLayer"]
