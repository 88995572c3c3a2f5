"""liquid_s4: structured state-space sequence models (LSSL, S4, S4D and Liquid-S4) in pure PyTorch."""

from . import ops
from .allocator import tune_cpu_allocator
from .models import ModelConfig, SequenceModel
from .modules import LSSL, S4, S4D, CUDAGraphStep, LiquidS4, SSMLayer
from .optim import param_groups

__version__ = "0.1.0"

__all__ = [
    "S4D",
    "S4",
    "LSSL",
    "LiquidS4",
    "SSMLayer",
    "CUDAGraphStep",
    "SequenceModel",
    "ModelConfig",
    "param_groups",
    "tune_cpu_allocator",
    "ops",
    "__version__",
]
