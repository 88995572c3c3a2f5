"""liquid_s4: structured state-space sequence models (LSSL, S4, S4D and Liquid-S4) in pure PyTorch."""

from . import ops
from .allocator import tune_cpu_allocator
from .models import ModelConfig, SequenceModel
from .modules import LSSL, S4, S4D, CUDAGraphStep, LiquidS4, SSMLayer
from .optim import param_groups

__version__ = "0.1.0"

# the streaming runtimes, imported on first use (the compiled path imports numba)
_DEPLOY = ("FastStream", "OnnxStream", "export_onnx")


def __getattr__(name: str):
    if name in _DEPLOY:
        from . import deploy

        return getattr(deploy, name)
    raise AttributeError(f"module 'liquid_s4' has no attribute {name!r}")


__all__ = [
    "S4D",
    "S4",
    "LSSL",
    "LiquidS4",
    "SSMLayer",
    "CUDAGraphStep",
    "SequenceModel",
    "FastStream",
    "OnnxStream",
    "export_onnx",
    "ModelConfig",
    "param_groups",
    "tune_cpu_allocator",
    "ops",
    "__version__",
]
