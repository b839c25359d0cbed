"""STUB: being written."""


def load_mnist(root=None, *, name="mnist", download=True, mirrors=None, dtype=None):
    raise NotImplementedError
