"""The one random generator behind parameter init and dropout masks (``tinynn.manual_seed`` seeds it).

torch's global generator draws different numbers, so tinynn never tries to reproduce torch's
initial weights or masks: the parity harness copies the weights by ``state_dict`` name instead,
and hands tinynn torch's dropout masks (``tinynn.testing.replay_torch_dropout``).
"""

from __future__ import annotations

import numpy as np

_generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Re-seed the generator of ``tinynn.nn.init`` and dropout, and return it (like ``torch.manual_seed``)."""
    global _generator
    _generator = np.random.default_rng(seed)
    return _generator


def default_generator() -> np.random.Generator:
    """The generator that parameter init and dropout draw from (read it at each use: manual_seed replaces it)."""
    return _generator


def get_rng_state() -> dict:
    """The generator's state as a plain dict of str, int and dicts (JSON-able; ``tinynn.save`` keeps it).

    Like ``torch.get_rng_state``: pass it to ``set_rng_state`` later (in this process or another) and
    the generator draws the same numbers from there on, which is what a resumed run needs.
    """
    return _generator.bit_generator.state  # numpy builds a fresh dict on every read


def set_rng_state(state: dict) -> None:
    """Put the generator back in a state from ``get_rng_state``, in place (like ``torch.set_rng_state``):
    the generator object stays the same, so whoever holds ``default_generator()`` sees the new state."""
    _generator.bit_generator.state = state
