"""The errors ``tinynn.load`` raises: a file that is not what it should be, and a pickle that asks for code."""

from __future__ import annotations

import pickle


class SerializationError(ValueError):
    """A file that cannot be loaded: truncated, corrupt, or of a format tinynn does not read.
    The message names the file and what is wrong with it."""


class UnsafeCheckpointError(SerializationError, pickle.UnpicklingError):
    """A torch checkpoint whose pickle names a global outside the allow-list (``os.system``, a whole
    pickled ``torch.nn.Module``...). It is refused before anything it names is called."""
