from .base import SSMLayer
from .lssl import LSSL
from .s4 import S4
from .s4d import S4D, s4d_init

__all__ = ["SSMLayer", "S4D", "S4", "LSSL", "s4d_init"]
