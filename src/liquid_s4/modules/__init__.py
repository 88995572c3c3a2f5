"""The layers: `SSMLayer` (layer.py) built from an SSM kernel module (kernel.py and the S4D, S4 and
LSSL kernels beside their layers), the convolution with state passing (conv.py) and the output
block (block.py); the inference caches (cache.py, snapshot.py) and CUDA-graph stepping (graphed.py)."""

from .block import OutputBlock
from .conv import SSMConvolution
from .graphed import CUDAGraphStep
from .kernel import SSMKernel
from .layer import SSMLayer, upgrade_state_dict
from .liquid_s4 import LiquidS4
from .lssl import LSSL, DenseKernel
from .s4 import S4, DPLRKernel
from .s4d import S4D, DiagonalKernel, s4d_init

__all__ = [
    "SSMLayer",
    "S4D",
    "S4",
    "LSSL",
    "LiquidS4",
    "CUDAGraphStep",
    "s4d_init",
    "SSMKernel",
    "DiagonalKernel",
    "DPLRKernel",
    "DenseKernel",
    "SSMConvolution",
    "OutputBlock",
    "upgrade_state_dict",
]
