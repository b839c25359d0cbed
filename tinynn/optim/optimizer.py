"""STUB: being written."""


class Optimizer:
    pass
