"""Linear (non-circular) convolution of a sequence with SSM kernels through real FFTs."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bidirectional_kernel(k_fwd: torch.Tensor, k_bwd: torch.Tensor) -> torch.Tensor:
    """One length-2L kernel for a circular convolution of size 2L that is causal in k_fwd
    and strictly anti-causal in k_bwd:  y_k = sum_{j<=k} k_fwd[k-j] u_j + sum_{j>k} k_bwd[j-k-1] u_j."""
    L = k_fwd.shape[-1]
    return F.pad(k_fwd, (0, L)) + F.pad(k_bwd.flip(-1), (L, 0))


def fftconv(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """y[b, c, h, l] = sum_j k[c, h, l - j] u[b, h, j] (causal; or the 2L kernel of
    `bidirectional_kernel`). u (B, H, L), k (C, H, L) or (C, H, 2L). Returns (B, C, H, L)."""
    L = u.shape[-1]
    n = 2 * L
    u_f = torch.fft.rfft(u, n=n)  # (B, H, n/2+1)
    k_f = torch.fft.rfft(k, n=n)  # (C, H, n/2+1)
    return torch.fft.irfft(u_f[:, None] * k_f, n=n)[..., :L]
