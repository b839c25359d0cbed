"""What a stage's training code hands the runner: Start, then a Step per batch and an Epoch per epoch.

Each version of a stage (torch and tinynn) is a generator that yields these events. The runner
resumes the two generators in turn, so both frameworks are at the same point of the tutorial
whenever their events are compared. The classes read both frameworks alike: anything with
``named_parameters()``, parameters with a ``.grad``, losses that ``np.asarray`` or ``.detach()`` take.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tinynn.testing.compare import to_numpy


def _copy(value: Any) -> np.ndarray:
    return np.array(to_numpy(value), copy=True)


class Start:
    """The model is built and training is about to begin.

    ``params`` maps torch's ``state_dict`` names to the live parameters (torch tensors, tinynn
    Parameters, or plain arrays in the from-scratch stages). The runner casts tinynn's to torch's
    dtype and copies torch's values into them, so both frameworks start from the same weights.
    """

    def __init__(self, params: dict[str, Any], optimizer: Any = None, model: Any = None) -> None:
        self.params = dict(params)
        self.optimizer = optimizer
        self.model = model

    @classmethod
    def of(cls, model: Any, optimizer: Any = None) -> Start:
        return cls(dict(model.named_parameters()), optimizer, model)


class Step:
    """One training step has run.

    ``loss`` and ``grads`` are copied at once (``zero_grad`` drops the gradients right after);
    ``params`` stay live, so the runner reads the weights after the update and, in float32
    per-step mode, can overwrite tinynn's with torch's before the next step. ``grads`` defaults to
    each parameter's ``.grad``, which is where torch's autograd and tinynn's backward leave them.
    """

    def __init__(self, loss: Any, params: dict[str, Any], grads: dict[str, Any] | None = None,
                 optimizer: Any = None, model: Any = None) -> None:
        self.loss = _copy(loss)
        self.params = dict(params)
        if grads is None:
            grads = {name: param.grad for name, param in self.params.items()}
        self.grads = {name: _copy(grad) for name, grad in grads.items() if grad is not None}
        self.optimizer = optimizer
        self.model = model
        # BatchNorm's running statistics after this step's forward (copied: the next one moves them)
        self.buffers = {name: _copy(buffer) for name, buffer in model.named_buffers()} if model is not None else {}

    @classmethod
    def of(cls, loss: Any, model: Any, optimizer: Any = None) -> Step:
        return cls(loss, dict(model.named_parameters()), optimizer=optimizer, model=model)


class Epoch:
    """An epoch has ended and the model was evaluated on the validation set."""

    def __init__(self, val_loss: Any, val_accuracy: Any) -> None:
        self.val_loss = float(to_numpy(val_loss))
        self.val_accuracy = float(to_numpy(val_accuracy))


# From stage 9 on, a step is taken inside the tutorial's ``loss_batch``, a plain function that
# cannot yield. It records the step here and ``fit`` yields it right after the call. The runner
# never resumes the other framework between the two, so a single slot is enough.
_recorded: list[Step] = []


def record_step(loss: Any, model: Any, optimizer: Any = None) -> None:
    """Keep this step (loss, gradients, updated weights) for ``recorded_step`` to hand over."""
    _recorded[:] = [Step.of(loss, model, optimizer)]


def recorded_step() -> Step:
    """The step that ``record_step`` kept, once."""
    if not _recorded:
        raise RuntimeError("recorded_step(): no training step was recorded since the last one was taken")
    return _recorded.pop()
