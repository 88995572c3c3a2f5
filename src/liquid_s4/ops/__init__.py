"""The math: HiPPO matrices, discretization, convolution kernels, state updates, FFT convolution."""

from .discretize import (
    discretize_bilinear,
    discretize_dense,
    discretize_gbt,
    discretize_zoh,
    dplr_bilinear_B,
    dplr_bilinear_B_inverse,
)
from .fftconv import anticausal_kernel, bidirectional_kernel, fftconv, fftconv_sum, fftconv_sum_ref
from .hippo import MEASURES, low_rank_correction, nplr, transition
from .kernels import (
    cauchy_imag,
    cauchy_imag_ref,
    irfft_first,
    kernel_dplr,
    kernel_dplr_hat,
    krylov,
    krylov_ref,
    vandermonde,
    vandermonde_ref,
)
from .liquid import (
    anticorrelation,
    anticorrelations,
    correlation,
    correlation_ref,
    correlations,
    delayed,
    last_inputs,
    product_skip,
    product_skip_ref,
)
from .recurrence import DiagonalRecurrence, DPLRRecurrence
from .scan import chunk_diag_scan, naive_diag_scan
from .state import DiscreteSSM, power_apply, reverse_within, scan_dense, scan_diag

__all__ = [
    "MEASURES",
    "transition",
    "low_rank_correction",
    "nplr",
    "discretize_zoh",
    "discretize_bilinear",
    "discretize_gbt",
    "discretize_dense",
    "dplr_bilinear_B",
    "dplr_bilinear_B_inverse",
    "vandermonde",
    "vandermonde_ref",
    "cauchy_imag",
    "cauchy_imag_ref",
    "kernel_dplr",
    "kernel_dplr_hat",
    "irfft_first",
    "krylov",
    "krylov_ref",
    "correlation",
    "correlations",
    "correlation_ref",
    "anticorrelation",
    "anticorrelations",
    "delayed",
    "last_inputs",
    "product_skip",
    "product_skip_ref",
    "DiscreteSSM",
    "DiagonalRecurrence",
    "DPLRRecurrence",
    "chunk_diag_scan",
    "naive_diag_scan",
    "scan_diag",
    "scan_dense",
    "power_apply",
    "reverse_within",
    "fftconv",
    "fftconv_sum",
    "fftconv_sum_ref",
    "bidirectional_kernel",
    "anticausal_kernel",
]
