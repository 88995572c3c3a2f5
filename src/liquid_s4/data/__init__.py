"""Dataset readers for the standard on-disk formats (nothing is downloaded)."""

from .common import DataError, data_root
from .mnist import load_mnist, read_idx

__all__ = ["DataError", "data_root", "load_mnist", "read_idx"]
