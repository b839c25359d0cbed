"""tinynn.utils: as ``torch.utils``, only ``data`` for now."""

from tinynn.utils import data

__all__ = ["data"]
