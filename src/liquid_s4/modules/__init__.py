from .base import SSMLayer
from .graphed import CUDAGraphStep
from .liquid_s4 import LiquidS4
from .lssl import LSSL
from .s4 import S4
from .s4d import S4D, s4d_init

__all__ = ["SSMLayer", "S4D", "S4", "LSSL", "LiquidS4", "CUDAGraphStep", "s4d_init"]
