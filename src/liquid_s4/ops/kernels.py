"""Convolution kernels K_bar[l] = C_bar A_bar^l B_bar, l = 0..L-1, for the three SSM families.

Each fast op sits next to its `*_ref` reference, which materializes the full (H, N, L) tensor and
exists for the tests. The fast ops keep memory O(H N (L/T + T)) (Vandermonde, Krylov) or evaluate
the Cauchy sums in frequency chunks (DPLR), recomputing each chunk in an analytic backward pass.
"""

from __future__ import annotations

import math

import torch

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
    T = block_size(L)
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


def _reciprocal(lam, a, b):
    """r[h, n, f] = 1 / (a[h, f] - b[f] lam[h, n])."""
    return torch.addcmul(a[:, None, :], lam[..., None], b, value=-1).reciprocal_()


class _Cauchy(torch.autograd.Function):
    """Chunked Cauchy sums with an analytic backward that recomputes each chunk's reciprocals.

    With r = 1 / (a - b lam) and PyTorch's convention grad_x = grad_out * conj(d out / d x):
        grad_v   = sum_f g conj(r)
        grad_lam = sum_m conj(v) sum_f g conj(b r^2)
        grad_a   = -sum_m g conj(sum_n v r^2)
    each a matrix product per chunk, so no (H, N, F) tensor is ever stored.
    """

    @staticmethod
    def forward(ctx, v, lam, a, b, chunk):
        ctx.save_for_backward(v, lam, a, b)
        ctx.chunk = chunk
        vt = v.transpose(0, 1)  # (H, M, N)
        outs = [vt @ _reciprocal(lam, a[:, s : s + chunk], b[s : s + chunk]) for s in range(0, a.shape[-1], chunk)]
        return torch.cat(outs, -1).transpose(0, 1)  # (M, H, F)

    @staticmethod
    def backward(ctx, g):
        v, lam, a, b = ctx.saved_tensors
        chunk = ctx.chunk
        need_v, need_lam, need_a = ctx.needs_input_grad[:3]
        vt, gt = v.transpose(0, 1), g.transpose(0, 1)  # (H, M, N), (H, M, F)
        grad_v = torch.zeros_like(vt) if need_v else None
        grad_lam = torch.zeros_like(lam) if need_lam else None
        grad_a = []
        for s in range(0, a.shape[-1], chunk):
            r = _reciprocal(lam, a[:, s : s + chunk], b[s : s + chunk])  # (H, N, Fc)
            g_c = gt[..., s : s + chunk]
            # products are formed as (r @ small^H)^H so that no conjugate copy of r is made
            if need_v:
                grad_v += (r @ g_c.mH).mH
            if need_lam or need_a:
                r2 = r * r
            if need_lam:
                grad_lam += (vt.conj() * (r2 @ (g_c * b[s : s + chunk].conj()).mH).mH).sum(1)
            if need_a:
                grad_a.append(-(g_c * (vt @ r2).conj()).sum(1))
        return (
            grad_v.transpose(0, 1) if need_v else None,
            grad_lam,
            torch.cat(grad_a, -1) if need_a else None,
            None,
            None,
        )


def cauchy(v: torch.Tensor, lam: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """out[m, h, f] = sum_n v[m, h, n] / (a[h, f] - b[f] lam[h, n]), in chunks of frequencies.

    v: (M, H, N), lam: (H, N), a: (H, F), b: (F,) (a constant: no gradient), all complex.
    Forward and backward hold one chunk's (H, N, F_chunk) workspace at a time.
    """
    if b.requires_grad:
        raise ValueError("cauchy: b is treated as a constant; detach it")
    H, N = lam.shape
    chunk = max(1, CAUCHY_CHUNK_ELEMENTS // (H * N))
    return _Cauchy.apply(v, lam, a, b, chunk)


def cauchy_ref(v, lam, a, b):
    """Materializing reference for `cauchy`."""
    return torch.einsum("mhn,hnf->mhf", v, 1.0 / (a[:, None, :] - b * lam[..., None]))


def kernel_dplr(Lambda, P, B, C, dt, L: int, cauchy_fn=cauchy) -> torch.Tensor:
    """Kernel of the bilinear discretization of A = Lambda - P P^*: irfft of `kernel_dplr_hat`.
    Returns K (Kb, Ch, H, L), real."""
    return torch.fft.irfft(kernel_dplr_hat(Lambda, P, B, C, dt, L, cauchy_fn), n=L)


def irfft_first(X: torch.Tensor, n: int) -> torch.Tensor:
    """irfft(X, n)[..., 0] without the inverse FFT: (Re X_0 + Re X_{n/2} [n even] + 2 sum Re X_k) / n."""
    w = torch.full((X.shape[-1],), 2.0, dtype=X.real.dtype, device=X.device)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return (X.real @ w) / n


def kernel_dplr_hat(Lambda, P, B, C, dt, L: int, cauchy_fn=cauchy) -> torch.Tensor:
    """Generating function of the kernel of the bilinear discretization of A = Lambda - P P^*
    (conjugate pairs implied) at the L-th roots of unity z_k, k = 0..L/2 (an rfft half).

    Stored are the N/2 modes Lambda (H, N/2), P (r, H, N/2), B (Kb, H, N/2) and
    C~ (Ch, H, N/2) = C (I - A_bar^L); the other half of each vector is its conjugate.
    At z = exp(-2 pi i k / L) the truncated generating function is

        K^(z) = sum_{l<L} C A_bar^l B_bar z^l = C~ (I - z A_bar)^{-1} B_bar
              = 2 C~ M(z)^{-1} B,      M(z) = (2/dt)(1 - z) - (1 + z)(Lambda - P P^*)

    and with the Cauchy sums k_xy(z) = sum_n x_n y_n / ((2/dt)(1 - z) - (1 + z) Lambda_n),
    Woodbury gives K^ = 2 [k_CB - (1+z) k_CP (I + (1+z) k_P*P)^{-1} k_P*B].
    This form has no 1/(1+z) factor, so it stays finite (values and gradients) at z = -1.
    Returns K^ (Kb, Ch, H, L // 2 + 1), complex.
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
    # split (not slicing) so that the backward pass concatenates instead of zero-filling full copies
    (k_CB, k_PB), (k_CP, k_PP) = ([t for t in half.split([Ch, r], 0)] for half in kk.split([Kb, r], 1))
    if r == 1:
        q = b * k_CP / (1 + b * k_PP)  # (Ch, 1, H, F): one division, shared by all Kb input vectors
        K_hat = 2 * (k_CB - q * k_PB)  # (Ch, Kb, H, F)
    else:
        eye = torch.eye(r, dtype=kk.dtype, device=kk.device)
        M = eye + b[:, None, None] * k_PP.permute(2, 3, 0, 1)  # (H, F, r, r)
        X = torch.linalg.solve(M, k_PB.permute(2, 3, 0, 1))  # (H, F, r, Kb)
        K_hat = 2 * (k_CB - b * torch.einsum("crhf,hfrk->ckhf", k_CP, X))
    return K_hat.transpose(0, 1)


# --------------------------------------------------------------------------------------------
# Dense A (LSSL, and the exact dense form of S4): blocked Krylov
# --------------------------------------------------------------------------------------------


def krylov(dA: torch.Tensor, b: torch.Tensor, c: torch.Tensor, L: int) -> torch.Tensor:
    """K[..., c, h, l] = c[c, h] . dA[h]^l b[..., h], blocked and built by repeated squaring.

    The right Krylov block R = [b, A b, ..., A^{T-1} b] and the left rows c A^{mT} are each formed
    in log2 steps of doubling; the kernel is their product: memory O(H N (L/T + T)).
    dA: (H, M, M), b: (..., H, M), c: (Ch, H, M). Returns (..., Ch, H, L) (complex if inputs are).
    """
    T = block_size(L)
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
