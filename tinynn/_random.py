"""The one random generator behind parameter init (``tinynn.manual_seed`` seeds it).

torch's global generator draws different numbers, so tinynn never tries to reproduce torch's
initial weights: the parity harness copies them by ``state_dict`` name instead.
"""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Re-seed the generator used by ``tinynn.nn.init`` and return it (like ``torch.manual_seed``)."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    """The generator that parameter init draws from."""
    return _generator
