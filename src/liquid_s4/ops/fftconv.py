"""Linear (non-circular) convolution of a sequence with SSM kernels through real FFTs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bidirectional_kernel(k_fwd: torch.Tensor, k_bwd: torch.Tensor) -> torch.Tensor:
    """One length-2L kernel for a circular convolution of size 2L that is causal in k_fwd
    and strictly anti-causal in k_bwd:  y_k = sum_{j<=k} k_fwd[k-j] u_j + sum_{j>k} k_bwd[j-k-1] u_j."""
    L = k_fwd.shape[-1]
    return F.pad(k_fwd, (0, L)) + F.pad(k_bwd.flip(-1), (L, 0))


def anticausal_kernel(k_bwd: torch.Tensor) -> torch.Tensor:
    """The length-2L kernel of `bidirectional_kernel` with no causal part."""
    L = k_bwd.shape[-1]
    return F.pad(k_bwd.flip(-1), (L, 0))


def fftconv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y[b, c, h, l] = sum_j k[c, h, l - j] u[b, h, j] (causal; or the 2L kernel of
    `bidirectional_kernel`). u (B, H, L), k (C, H, L) or (C, H, 2L). Returns (B, C, H, L)."""
    return fftconv_sum([u], [k])


def fftconv_sum(us, ks) -> torch.Tensor:
    """Several signals, each with its own kernel, summed in the frequency domain (one inverse FFT):
    y[b, c, h, l] = sum_s sum_j ks[s][c, h, l - j] us[s][b, h, j].

    us: sequence of (B, H, L); ks: sequence of (C, H, L) causal or (C, H, 2L) kernels (see
    `bidirectional_kernel`). The FFT size is 2L, so a causal kernel of length L gives a true
    linear convolution."""
    L = us[0].shape[-1]
    n = 2 * L
    y_f = None
    for u, k in zip(us, ks, strict=True):
        t = torch.fft.rfft(u, n=n)[:, None] * torch.fft.rfft(k, n=n)  # (B, C, H, n/2+1)
        y_f = t if y_f is None else y_f + t
    return torch.fft.irfft(y_f, n=n)[..., :L]
