"""The math: HiPPO matrices, discretization, convolution kernels, state updates, FFT convolution."""

from .discretize import discretize_bilinear, discretize_dense, discretize_gbt, discretize_zoh
from .fftconv import bidirectional_kernel, fftconv
from .hippo import MEASURES, low_rank_correction, nplr, transition
from .kernels import cauchy, cauchy_ref, kernel_dplr, krylov, krylov_ref, vandermonde, vandermonde_ref
from .state import DiscreteSSM, power_apply, reverse_within, scan_dense, scan_diag

__all__ = [
    "MEASURES", "transition", "low_rank_correction", "nplr",
    "discretize_zoh", "discretize_bilinear", "discretize_gbt", "discretize_dense",
    "vandermonde", "vandermonde_ref", "cauchy", "cauchy_ref", "kernel_dplr", "krylov", "krylov_ref",
    "DiscreteSSM", "scan_diag", "scan_dense", "power_apply", "reverse_within",
    "fftconv", "bidirectional_kernel",
]
