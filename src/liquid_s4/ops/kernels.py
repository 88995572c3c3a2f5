"""Convolution kernels K_bar[l] = C_bar A_bar^l B_bar, l = 0..L-1, for the three SSM families.

Each fast op sits next to its `*_ref` reference, which materializes the full (H, N, L) tensor and
exists for the tests. The fast ops keep memory O(H N (L/T + T)) (Vandermonde, Krylov) or evaluate
the Cauchy sums in frequency chunks (DPLR), recomputing each chunk in an analytic backward pass.
"""

from __future__ import annotations

import math

import torch


def block_size(L: int) -> int:
    """Power of two near sqrt(L): splits l = m T + t so that both factors stay small."""
    return 1 << max(0, math.ceil(math.log2(max(L, 1)) / 2))


# --------------------------------------------------------------------------------------------
# Diagonal A (S4D): Vandermonde
# --------------------------------------------------------------------------------------------


def _exp_powers(a: torch.Tensor, b: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """exp(k (a + i b)) (a, b, k real, broadcast together) from real exp, cos and sin, which are
    vectorized (complex exp and polar are slower). Returns complex.

    Magnitudes below eps^2 of the dtype are raised to eps^2 (an error below eps^2 |w| per mode in the
    kernel, far under rounding): fast-decaying modes at long lags would otherwise underflow into
    subnormal floats, which slow down every product they enter on CPU (the blocked matrix products
    included)."""
    floor = 2 * math.log(torch.finfo(a.dtype).eps)
    r, bk = torch.exp((a * k).clamp_(min=floor)), b * k
    out = r.new_empty(*r.shape, 2)
    torch.mul(r, torch.cos(bk), out=out[..., 0])
    torch.mul(r, torch.sin(bk), out=out[..., 1])
    return torch.view_as_complex(out)


def _vandermonde_factors(log_dA: torch.Tensor, T: int, nb: int):
    """inner[h, t, n] = A^t and outer[h, m, n] = A^{m T} for A = exp(log_dA): (H, T, N), (H, nb, N)."""
    a, b = log_dA.real[..., None, :], log_dA.imag[..., None, :]
    t = torch.arange(T, device=a.device, dtype=a.dtype)[:, None]
    m = torch.arange(nb, device=a.device, dtype=a.dtype)[:, None] * T
    return _exp_powers(a, b, t), _exp_powers(a, b, m)


class _Vandermonde(torch.autograd.Function):
    """K[..., h, m T + t] = 2 Re sum_n w_n outer[m, n] inner[t, n] (A^l = outer inner) as one real
    product per channel (see `vandermonde`). Backward, for the real gradient G[l] of K[l], in PyTorch's
    convention for complex inputs (d/dRe + i d/dIm):

        grad_w = 2 conj(sum_l G_l A^l),     grad_q = 2 conj(sum_... w sum_l l G_l A^l)   (q = log_dA)

    With l = m T + t both inner sums come from one real product P = G @ [inner, t inner] per channel,
    then sum_l (m T + t) G_l A^l = sum_m outer[m] (m T P_0[m] + P_t[m])."""

    @staticmethod
    def forward(ctx, w, log_dA, L):
        T = block_size(L)
        nb = -(-L // T)
        inner, outer = _vandermonde_factors(log_dA, T, nb)  # (H, T, N), (H, nb, N)
        X = torch.view_as_real(w[..., None, :] * outer).flatten(-2)  # (..., H, nb, 2N): Re, Im interleaved
        sign = inner.real.new_tensor([2.0, -2.0])  # 2 Re(x z) = Re x (2 Re z) + Im x (-2 Im z)
        Y = (torch.view_as_real(inner) * sign).flatten(-2)  # (H, T, 2N)
        ctx.save_for_backward(w, inner, outer)
        ctx.L = L
        return (X @ Y.mT).flatten(-2)[..., :L]  # (..., H, L)

    @staticmethod
    def backward(ctx, G):
        w, inner, outer = ctx.saved_tensors
        L, (H, T, N), nb = ctx.L, inner.shape, outer.shape[-2]
        G = torch.nn.functional.pad(G, (0, nb * T - L)).unflatten(-1, (nb, T))  # (..., H, nb, T)
        t = torch.arange(T, device=G.device, dtype=G.dtype)[:, None]
        Z = torch.view_as_real(torch.cat([inner, inner * t], -1)).flatten(-2)  # (H, T, 4N)
        P = torch.view_as_complex((G @ Z).unflatten(-1, (2 * N, 2)))
        P0, Pt = P.split(N, -1)  # (..., H, nb, N): sum_t G A^t and sum_t t G A^t, per block m
        grad_w = grad_q = None
        if ctx.needs_input_grad[0]:
            grad_w = 2 * (outer * P0).sum(-2).conj()  # (..., H, N)
        if ctx.needs_input_grad[1]:
            m = torch.arange(nb, device=G.device, dtype=G.dtype)[:, None] * T
            S = (outer * torch.addcmul(Pt, P0, m)).sum(-2)  # sum_l l G_l A^l
            grad_q = 2 * (w * S).reshape(-1, H, N).sum(0).conj()
        return grad_w, grad_q, None


def vandermonde(w: torch.Tensor, log_dA: torch.Tensor, L: int) -> torch.Tensor:
    """K[..., h, l] = 2 Re sum_n w[..., h, n] exp(l log_dA[h, n]), blocked as real matrix products.

    With l = m T + t, A^l = A^{mT} A^t, so each block of T outputs is the product of
    (w A^{mT}) of shape (.., L/T, N) and A^t of shape (N, T): no (H, N, L) tensor is formed. Only the
    real part is needed, so the products are real, [Re, Im] (.., L/T, 2N) against (2N, T), half the
    work of a complex product; the powers come from real exp/cos/sin, and the backward pass is
    analytic (one real product per channel, `_Vandermonde`).
    w: (..., H, N) complex, log_dA: (H, N) complex. Returns (..., H, L) real.
    """
    return _Vandermonde.apply(w, log_dA, L)


def vandermonde_ref(w: torch.Tensor, log_dA: torch.Tensor, L: int) -> torch.Tensor:
    """Materializing reference for `vandermonde`."""
    l = torch.arange(L, device=w.device, dtype=log_dA.real.dtype)
    powers = torch.exp(log_dA[..., None] * l)  # (H, N, L)
    return 2 * torch.einsum("...hn,hnl->...hl", w, powers).real


# --------------------------------------------------------------------------------------------
# DPLR A (S4): Cauchy sums at the roots of unity with a Woodbury correction
# --------------------------------------------------------------------------------------------


# Elements of the (channels, N, frequencies) blocks of `cauchy_imag` evaluated at once, and the most
# frequencies per block: small enough that a block's intermediates stay in cache and below glibc's
# mmap threshold (no page faults per call), long enough to amortize the per-block overhead.
CAUCHY_IMAG_CHUNK_ELEMENTS = 1 << 19
CAUCHY_IMAG_FREQS = 8192
# On a GPU the blocks only bound the workspace (at most 4 x 4 bytes per element: 512 MiB in float32):
# each block is a few kernel launches, so fewer, larger blocks are faster.
CAUCHY_IMAG_CHUNK_ELEMENTS_GPU = 1 << 25


def _pole_terms(lr2, li, g, w, d):
    """w = t d and d = 1 / (lr^2 + t^2) with t[h, n, f] = g[h, f] - li[h, n], written into the
    (H, N, Fc) views w and d (t is formed in w's memory, so no other workspace is needed)."""
    t = torch.sub(g[:, None, :], li[..., None], out=w)
    torch.addcmul(lr2[..., None], t, t, out=d)
    d.reciprocal_()
    return w.mul_(d), d


def _chunking(device: torch.device) -> tuple[int, int | None]:
    """(elements per block, most frequencies per block or None) for `_blocks` on this device."""
    if device.type == "cpu":
        return CAUCHY_IMAG_CHUNK_ELEMENTS, CAUCHY_IMAG_FREQS
    return CAUCHY_IMAG_CHUNK_ELEMENTS_GPU, None


def _blocks(H: int, F: int, N: int, chunking: tuple[int, int | None]):
    """(h0, h1, f0, f1) blocks of the (H, N, F) grid with about `elements` entries each: long runs
    of frequencies (at most `max_freqs`), and as many channels as fit; chunking = (elements, max_freqs)."""
    elements, max_freqs = chunking
    Fc = min(F, max_freqs or F, max(1, elements // N))
    Hc = max(1, min(H, elements // (N * Fc)))
    return [(h, min(H, h + Hc), f, min(F, f + Fc)) for h in range(0, H, Hc) for f in range(0, F, Fc)]


class _CauchyImag(torch.autograd.Function):
    """out = W2 @ w + W1 @ d with t = g - li, d = 1 / (lr^2 + t^2), w = t d (see `cauchy_imag`).

    Only elementwise passes build w, d (and in backward w d, d^2); everything else is a matrix product,
    one (channels x frequencies) block at a time, recomputed in backward. With the upstream gradients
    D1 = W1^T G on d and D2 = W2^T G on w (never formed), and E = G [w; w d; d; d^2]^T:
        grad_W2 = E_w, grad_W1 = E_d
        d/dt  = -2 D1 w d + D2 (d - 2 w^2),  w^2 = d - lr^2 d^2   (from d (lr^2 + t^2) = 1)
        grad_lr = -2 lr sum_r (W1 E_d2 + W2 E_wd),
        grad_li = -sum_f d/dt = sum_r (2 W1 E_wd + W2 E_d - 2 lr^2 W2 E_d2)
        grad_g  = sum_n d/dt = sum_r G [-2 W1 (w d) - W2 d + 2 (lr^2 W2) d^2]
    """

    @staticmethod
    def forward(ctx, W1, W2, lr, li, g, chunking):
        ctx.save_for_backward(W1, W2, lr, li, g)
        ctx.chunking = chunking
        H, N = li.shape
        F = g.shape[-1]
        W = torch.cat([W2, W1], -1)  # (H, R, 2N) against [w; d]
        lr2 = lr * lr
        out = W.new_empty(H, W.shape[1], F)
        blocks = _blocks(H, F, N, chunking)
        buf = W.new_empty(blocks[0][1] - blocks[0][0], 2 * N, blocks[0][3] - blocks[0][2])
        for h0, h1, f0, f1 in blocks:
            work = buf[: h1 - h0, :, : f1 - f0]
            _pole_terms(lr2[h0:h1], li[h0:h1], g[h0:h1, f0:f1], work[:, :N], work[:, N:])
            out[h0:h1, :, f0:f1] = W[h0:h1] @ work
        return out

    @staticmethod
    def backward(ctx, G):
        W1, W2, lr, li, g = ctx.saved_tensors
        H, N = li.shape
        F = g.shape[-1]
        lr2 = lr * lr
        G = G.contiguous()
        E = W1.new_zeros(H, W1.shape[1], 4 * N)  # G [w; w d; d; d^2]^T, summed over frequency blocks
        V = torch.cat([-2 * W1, -W2, 2 * lr2[:, None] * W2], -1)  # (H, R, 3N) against [w d; d; d^2]
        grad_g = torch.empty_like(g)
        blocks = _blocks(H, F, N, ctx.chunking)
        buf = W1.new_empty(blocks[0][1] - blocks[0][0], 4 * N, blocks[0][3] - blocks[0][2])
        for h0, h1, f0, f1 in blocks:
            Q = buf[: h1 - h0, :, : f1 - f0]
            w, wd, d, d2 = Q.split(N, 1)
            _pole_terms(lr2[h0:h1], li[h0:h1], g[h0:h1, f0:f1], w, d)
            torch.mul(w, d, out=wd)
            torch.mul(d, d, out=d2)
            Gc = G[h0:h1, :, f0:f1]
            E[h0:h1].baddbmm_(Gc, Q.transpose(1, 2))
            grad_g[h0:h1, f0:f1] = (Gc * (V[h0:h1] @ Q[:, N:])).sum(1)
        E_w, E_wd, E_d, E_d2 = E.split(N, -1)
        grad_lr = -2 * lr * (W1 * E_d2 + W2 * E_wd).sum(1)
        grad_li = (2 * W1 * E_wd + W2 * E_d - 2 * lr2[:, None] * W2 * E_d2).sum(1)
        return E_d, E_w, grad_lr, grad_li, grad_g, None


def cauchy_imag(v: torch.Tensor, lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """out[m, h, f] = sum_n v[m, h, n] / (i g[h, f] - lam[h, n]) for real g, in real arithmetic.

    v: (M, H, N) complex, lam: (H, N) complex with nonzero real part, g: (H, F) real. The bilinear
    transform maps the roots of unity to the imaginary axis, so this is the S4 kernel's Cauchy sum.
    With lam = lr + i li, t = g - li, d = 1 / (lr^2 + t^2) and w = t d:  1 / (i g - lam) = -lr d - i w, so

        Re out = sum_n (v_i w - v_r lr d),   Im out = sum_n (-v_r w - v_i lr d),

    two real matrix products per frequency chunk against the elementwise terms w and d, with an
    analytic backward that recomputes them (see `_CauchyImag`). Returns (M, H, F) complex.
    """
    lr, li = lam.real, lam.imag
    vr, vi = v.real, v.imag
    W1 = torch.cat([-vr * lr, -vi * lr])  # (2M, H, N): coefficients of d, rows: real then imaginary part
    W2 = torch.cat([vi, -vr])  # coefficients of w
    H, N = lr.shape
    W1, W2 = (x.transpose(0, 1).contiguous() for x in (W1, W2))  # (H, 2M, N)
    out = _CauchyImag.apply(W1, W2, lr, li, g, _chunking(lam.device))  # (H, 2M, F)
    re, im = out.split(v.shape[0], 1)  # split, not slicing: its backward concatenates instead of zero-filling
    return torch.complex(re, im).transpose(0, 1)


def cauchy_imag_ref(v, lam, g):
    """Materializing reference for `cauchy_imag`."""
    z = torch.complex(torch.zeros_like(g), g)
    return torch.einsum("mhn,hnf->mhf", v, 1.0 / (z[:, None, :] - lam[..., None]))


def kernel_dplr(Lambda, P, B, C, dt, L: int) -> torch.Tensor:
    """Kernel of the bilinear discretization of A = Lambda - P P^*: irfft of `kernel_dplr_hat`.
    Returns K (Kb, Ch, H, L), real."""
    return torch.fft.irfft(kernel_dplr_hat(Lambda, P, B, C, dt, L), n=L)


def irfft_first(X: torch.Tensor, n: int) -> torch.Tensor:
    """irfft(X, n)[..., 0] without the inverse FFT: (Re X_0 + Re X_{n/2} [n even] + 2 sum Re X_k) / n."""
    w = torch.full((X.shape[-1],), 2.0, dtype=X.real.dtype, device=X.device)
    w[0] = 1.0
    if n % 2 == 0:
        w[-1] = 1.0
    return (X.real @ w) / n


def kernel_dplr_hat(Lambda, P, B, C, dt, L: int) -> torch.Tensor:
    """Generating function of the kernel of the bilinear discretization of A = Lambda - P P^*
    (conjugate pairs implied) at the L-th roots of unity z_k, k = 0..L/2 (an rfft half).

    Stored are the N/2 modes Lambda (H, N/2), P (r, H, N/2), B (Kb, H, N/2) and
    C~ (Ch, H, N/2) = C (I - A_bar^L); the other half of each vector is its conjugate.
    At z = exp(-i theta), theta = 2 pi k / L, the truncated generating function is

        K^(z) = sum_{l<L} C A_bar^l B_bar z^l = C~ (I - z A_bar)^{-1} B_bar
              = 2 C~ M(z)^{-1} B,      M(z) = (2/dt)(1 - z) - (1 + z)(Lambda - P P^*)
              = (2 / (1 + z)) C~ (i g - Lambda + P P^*)^{-1} B,   g = (2/dt) tan(theta / 2),

    because (1 - z) / (1 + z) = i tan(theta / 2): the bilinear transform maps the unit circle to the
    imaginary axis. With the Cauchy sums S_xy = sum_n x_n y_n / (i g - Lambda_n) (`cauchy_imag`, real
    arithmetic), Woodbury gives K^ = (2 / (1 + z)) [S_CB - S_CP (I + S_P*P)^{-1} S_P*B] for k < L/2.
    At the Nyquist bin z = -1 (L even) g is infinite and directly K^ = (dt/2) sum_n C~_n B_n.
    Returns K^ (Kb, Ch, H, L // 2 + 1), complex.
    """
    Ch, r, Kb = C.shape[0], P.shape[0], B.shape[0]
    H, N2 = Lambda.shape
    F = L // 2 + 1
    Fr = F - 1 if L % 2 == 0 else F  # bins with z != -1
    half = math.pi * torch.arange(Fr, device=Lambda.device, dtype=torch.float64) / L  # theta / 2, in float64:
    g = (2.0 / dt)[:, None] * torch.tan(half).to(
        dt.dtype
    )  # (H, Fr)       tan and 1 + z lose precision near pi
    two_over_b = (torch.polar(torch.ones_like(half), half) / torch.cos(half)).to(Lambda.dtype)  # 2 / (1 + z)
    left = torch.cat([C, P.conj()])  # (Ch + r, H, N/2)
    right = torch.cat([B, P])  # (Kb + r, H, N/2)
    v = left[:, None] * right[None]  # (Ch + r, Kb + r, H, N/2)
    v_full = torch.cat([v, v.conj()], -1).flatten(0, 1)
    lam = torch.cat([Lambda, Lambda.conj()], -1)
    S = cauchy_imag(v_full, lam, g).view(Ch + r, Kb + r, H, Fr)
    # split (not slicing) so that the backward pass concatenates instead of zero-filling full copies
    (S_CB, S_PB), (S_CP, S_PP) = ([t for t in part.split([Ch, r], 0)] for part in S.split([Kb, r], 1))
    if r == 1:
        K_hat = S_CB - (S_CP / (1 + S_PP)) * S_PB  # (Ch, Kb, H, Fr): one division, shared by all Kb inputs
    else:
        eye = torch.eye(r, dtype=S.dtype, device=S.device)
        X = torch.linalg.solve(eye + S_PP.permute(2, 3, 0, 1), S_PB.permute(2, 3, 0, 1))  # (H, Fr, r, Kb)
        K_hat = S_CB - torch.einsum("crhf,hfrk->ckhf", S_CP, X)
    K_hat = K_hat * two_over_b
    if Fr < F:  # Nyquist: (dt/2) sum over both conjugate halves = dt Re sum_n C~_n B_n
        nyq = dt[:, None] * v[:Ch, :Kb].real.sum(-1)[..., None]  # (Ch, Kb, H, 1)
        K_hat = torch.cat([K_hat, nyq.to(K_hat.dtype)], -1)
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
