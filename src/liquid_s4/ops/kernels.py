"""Convolution kernels K_bar[l] = C_bar A_bar^l B_bar, l = 0..L-1, for the three SSM families.

Each fast op sits next to its `*_ref` reference, which materializes the full (H, N, L) tensor and
exists for the tests. The fast ops keep memory O(H N (L/T + T)) (Vandermonde, Krylov) or evaluate
the Cauchy sums in frequency chunks (DPLR), recomputing each chunk in the backward pass.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

# Elements of the (H, N, F_chunk) Cauchy workspace evaluated at once.
CAUCHY_CHUNK_ELEMENTS = 1 << 22


def block_size(L: int) -> int:
    """Power of two near sqrt(L): splits l = m T + t so that both factors stay small."""
    return 1 << max(0, math.ceil(math.log2(max(L, 1)) / 2))


# --------------------------------------------------------------------------------------------
# Diagonal A (S4D): Vandermonde
# --------------------------------------------------------------------------------------------


def vandermonde(w: torch.Tensor, log_dA: torch.Tensor, L: int) -> torch.Tensor:
    """K[..., h, l] = 2 Re sum_n w[..., h, n] exp(l log_dA[h, n]), blocked as a complex GEMM.

    With l = m T + t, A^l = A^{mT} A^t, so each block of T outputs is the product of
    (w A^{mT}) of shape (.., L/T, N) and A^t of shape (N, T): no (H, N, L) tensor is formed.
    w: (..., H, N) complex, log_dA: (H, N) complex. Returns (..., H, L) real.
    """
    T = min(block_size(L), L)
    nb = -(-L // T)
    t = torch.arange(T, device=w.device, dtype=log_dA.real.dtype)
    m = torch.arange(nb, device=w.device, dtype=log_dA.real.dtype) * T
    inner = torch.exp(log_dA[..., None] * t)  # (H, N, T)
    outer = torch.exp(log_dA[..., None, :] * m[:, None])  # (H, nb, N)
    K = (w[..., None, :] * outer) @ inner  # (..., H, nb, T)
    return 2 * K.real.flatten(-2)[..., :L]


def vandermonde_ref(w: torch.Tensor, log_dA: torch.Tensor, L: int) -> torch.Tensor:
    """Materializing reference for `vandermonde`."""
    l = torch.arange(L, device=w.device, dtype=log_dA.real.dtype)
    powers = torch.exp(log_dA[..., None] * l)  # (H, N, L)
    return 2 * torch.einsum("...hn,hnl->...hl", w, powers).real


# --------------------------------------------------------------------------------------------
# DPLR A (S4): Cauchy sums at the roots of unity with a Woodbury correction
# --------------------------------------------------------------------------------------------


def _cauchy_chunk(v, lam, a, b):
    r = 1.0 / (a[:, None, :] - b * lam[..., None])  # (H, N, F)
    return (v.transpose(0, 1) @ r).transpose(0, 1)  # (M, H, F)


def cauchy(v: torch.Tensor, lam: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out[m, h, f] = sum_n v[m, h, n] / (a[h, f] - b[f] lam[h, n]), in chunks of frequencies.

    v: (M, H, N), lam: (H, N), a: (H, F), b: (F,), all complex. When gradients are needed each
    chunk is checkpointed, so the backward pass also holds only one chunk's workspace.
    """
    H, N = lam.shape
    F = a.shape[-1]
    chunk = max(1, CAUCHY_CHUNK_ELEMENTS // (H * N))
    if chunk >= F:
        return _cauchy_chunk(v, lam, a, b)
    grad = torch.is_grad_enabled() and any(x.requires_grad for x in (v, lam, a, b))
    outs = []
    for s in range(0, F, chunk):
        args = (v, lam, a[:, s : s + chunk], b[s : s + chunk])
        if grad:
            outs.append(checkpoint(_cauchy_chunk, *args, use_reentrant=False))
        else:
            outs.append(_cauchy_chunk(*args))
    return torch.cat(outs, -1)


def cauchy_ref(v, lam, a, b):
    """Materializing reference for `cauchy`."""
    return torch.einsum("mhn,hnf->mhf", v, 1.0 / (a[:, None, :] - b * lam[..., None]))


def kernel_dplr(Lambda, P, B, C, dt, L: int, cauchy_fn=cauchy) -> torch.Tensor:
    """Kernel of the bilinear discretization of A = Lambda - P P^* (conjugate pairs implied).

    Stored are the N/2 modes Lambda (H, N/2), P (r, H, N/2), B (Kb, H, N/2) and
    C~ (Ch, H, N/2) = C (I - A_bar^L); the other half of each vector is its conjugate.
    At z = exp(-2 pi i k / L) the truncated generating function is

        K^(z) = sum_{l<L} C A_bar^l B_bar z^l = C~ (I - z A_bar)^{-1} B_bar
              = 2 C~ M(z)^{-1} B,      M(z) = (2/dt)(1 - z) - (1 + z)(Lambda - P P^*)

    and with the Cauchy sums k_xy(z) = sum_n x_n y_n / ((2/dt)(1 - z) - (1 + z) Lambda_n),
    Woodbury gives K^ = 2 [k_CB - (1+z) k_CP (I + (1+z) k_P*P)^{-1} k_P*B].
    This form has no 1/(1+z) factor, so it stays finite (values and gradients) at z = -1.
    Returns K (Kb, Ch, H, L), real.
    """
    Ch, r, Kb = C.shape[0], P.shape[0], B.shape[0]
    H, N2 = Lambda.shape
    k = torch.arange(L // 2 + 1, device=Lambda.device, dtype=dt.dtype)
    z = torch.polar(torch.ones_like(k), -2 * math.pi * k / L)  # (F,)
    a = (2.0 / dt)[:, None] * (1 - z)  # (H, F)
    b = 1 + z
    left = torch.cat([C, P.conj()])  # (Ch + r, H, N/2)
    right = torch.cat([B, P])  # (Kb + r, H, N/2)
    v = left[:, None] * right[None]  # (Ch + r, Kb + r, H, N/2)
    v = torch.cat([v, v.conj()], -1).flatten(0, 1)
    lam = torch.cat([Lambda, Lambda.conj()], -1)
    kk = cauchy_fn(v, lam, a, b).view(Ch + r, Kb + r, H, -1)
    k_CB, k_CP, k_PB, k_PP = kk[:Ch, :Kb], kk[:Ch, Kb:], kk[Ch:, :Kb], kk[Ch:, Kb:]
    eye = torch.eye(r, dtype=kk.dtype, device=kk.device)
    M = eye + b[:, None, None] * k_PP.permute(2, 3, 0, 1)  # (H, F, r, r)
    X = torch.linalg.solve(M, k_PB.permute(2, 3, 0, 1))  # (H, F, r, Kb)
    K_hat = 2 * (k_CB - b * torch.einsum("crhf,hfrk->ckhf", k_CP, X))  # (Ch, Kb, H, F)
    return torch.fft.irfft(K_hat, n=L).transpose(0, 1)


# --------------------------------------------------------------------------------------------
# Dense A (LSSL, and the exact dense form of S4): blocked Krylov
# --------------------------------------------------------------------------------------------


def krylov(dA: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int) -> torch.Tensor:
    """K[..., c, h, l] = c[c, h] . dA[h]^l b[..., h], blocked and built by repeated squaring.

    The right Krylov block R = [b, A b, ..., A^{T-1} b] and the left rows c A^{mT} are each formed
    in log2 steps of doubling; the kernel is their product: memory O(H N (L/T + T)).
    dA: (H, M, M), b: (..., H, M), c: (Ch, H, M). Returns (..., Ch, H, L) (complex if inputs are).
    """
    T = min(block_size(L), 1 << max(0, math.ceil(math.log2(L))))
    nb = -(-L // T)
    R, Ap = b[..., None], dA  # (..., H, M, 1)
    while R.shape[-1] < T:
        R = torch.cat([R, Ap @ R], -1)
        Ap = Ap @ Ap
    # Ap is now dA^T
    Lm = c[..., None, :]  # (Ch, H, 1, M)
    while Lm.shape[-2] < nb:
        Lm = torch.cat([Lm, Lm @ Ap], -2)
        Ap = Ap @ Ap
    Lm = Lm[..., :nb, :]
    K = Lm @ R[..., None, :, :, :]  # (..., Ch, H, nb, T)
    return K.flatten(-2)[..., :L]


def krylov_ref(dA: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int) -> torch.Tensor:
    """Reference for `krylov`: explicit powers x_l = dA^l b, one matrix-vector product per step."""
    x, out = b, []
    for _ in range(L):
        out.append(torch.einsum("chm,...hm->...ch", c, x))
        x = (dA @ x[..., None])[..., 0]
    return torch.stack(out, -1)
