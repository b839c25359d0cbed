"""tinynn: a deep-learning framework in NumPy whose every backward pass is written by hand.

Read it beside PyTorch: ``tinynn.nn``, ``tinynn.nn.functional``, ``tinynn.optim`` and
``tinynn.utils.data`` mirror torch's names, arguments, defaults and shapes. There is no
autograd: each module's ``backward(grad_output)`` returns the gradient for its input and adds
into its parameters' ``.grad``.

Every op's textbook code is in its family's file under ``tinynn/nn/``; a private engine
(``tinynn/_engine/``) runs the same maths faster unless ``tinynn.textbook()`` says otherwise.
"""

from tinynn import nn, optim, testing, utils
from tinynn._dtype import float32, float64, int64
from tinynn._grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from tinynn._random import default_generator, get_rng_state, manual_seed, set_rng_state
from tinynn._textbook import is_textbook, set_textbook, textbook
from tinynn._threads import get_num_threads, set_num_threads
from tinynn.serialization import load, save

__version__ = "0.1.0"

__all__ = [
    "default_generator", "enable_grad", "float32", "float64", "get_num_threads", "get_rng_state", "int64",
    "is_grad_enabled", "is_textbook", "load", "manual_seed", "nn", "no_grad", "optim", "save", "set_grad_enabled",
    "set_num_threads", "set_rng_state", "set_textbook", "testing", "textbook", "utils",
]
