"""The liquid scan fused into one pass per channel on the CPU (numba): `fused_liquid_scan`.

The definitions are those of `liquid_s4.ops.scan` (see `liquid_coefficients` there): per channel h and
mode n, x_k = f_k x_{k-1} + g_k and y_k = 2 Re(sum_n C[c, h, n] x_k[n]), with the coefficients (f_k,
g_k) of one of four forms, computed at each step from the step's input u_k, its squashed value s_k
and its step size d_k:

    affine    f = a + bt s,                  g = b u                    (a, bt, b given per (h, n))
    zoh       f = e^w + d phi(w) b s,        g = d phi(w) b u           w = d a
    bilinear  f = (1 + w/2) / (1 - w/2) + d b s / (1 - w/2),  g = d b u / (1 - w/2)
    ode       f = e^{d z},                   g = d phi(d z) b u         z = a + bt s
    split     f = e^w (1 + d bt s),          g = d phi(w) b u

with phi(w) = (e^w - 1) / w. Each channel of each sequence is one loop over time with its N/2 modes in
registers: the states are never stored. The forward keeps the state at the start of every block of M
steps; the backward recomputes one block's states from there and runs the adjoint recurrence

    lambda_k = conj(f_{k+1}) lambda_{k+1} + dL/dx_k,   dL/df_k = lambda_k conj(x_{k-1}),  dL/dg_k = lambda_k

backwards through it, accumulating the gradients of the coefficients' parameters by the chain rule
(PyTorch's convention for complex gradients: the gradient of a real loss with respect to z is
dL/dRe z + i dL/dIm z, and for a holomorphic map w = F(z) it is conj(F'(z)) times the gradient of w).

numba is an optional dependency (the `fast` extra); `available()` says whether it can be used. Every
kernel here is tested against the step-by-step reference `naive_liquid_scan` and against the PyTorch
implementation `chunk_liquid_scan`.
"""

from __future__ import annotations

import math
import threading

import numpy as np
import torch

try:  # optional: the PyTorch implementation is used without it
    import numba
except ImportError:  # pragma: no cover - exercised where numba is not installed
    numba = None

AFFINE, ZOH, BILINEAR, ODE, SPLIT = 0, 1, 2, 3, 4
MODES = {"affine": AFFINE, "zoh": ZOH, "bilinear": BILINEAR, "ode": ODE, "split": SPLIT}


def available() -> bool:
    """Whether numba is installed (the fused CPU kernels can run)."""
    return numba is not None


def _jit(**options):
    def wrap(fn):
        return numba.njit(cache=True, **options)(fn) if numba is not None else fn

    return wrap


# ---- scalar helpers (complex128) -----------------------------------------------------------------
@_jit(inline="always")
def _cexp(w, single):
    """e^w from one real exponential and one sine and cosine, evaluated in float32 if `single` (about 2.5x
    faster; the precision of a float32 layer), else in float64."""
    if single:
        x, y = np.float32(w.real), np.float32(w.imag)
        e = math.exp(x)
        return complex(np.float64(e * math.cos(y)), np.float64(e * math.sin(y)))
    e = math.exp(w.real)
    return complex(e * math.cos(w.imag), e * math.sin(w.imag))


@_jit(inline="always")
def _phi(w, E):
    """phi(w) = (e^w - 1) / w (1 at w = 0), given E = e^w: a series near 0, where the quotient cancels."""
    if w.real * w.real + w.imag * w.imag < 0.01:
        return 1.0 + w * (
            1.0 / 2
            + w
            * (1.0 / 6 + w * (1.0 / 24 + w * (1.0 / 120 + w * (1.0 / 720 + w * (1.0 / 5040 + w / 40320)))))
        )
    return (E - 1.0) / w


@_jit(inline="always")
def _psi(w, E, ph):
    """psi(w) = phi'(w) = (e^w - phi(w)) / w (1/2 at w = 0), given E = e^w and ph = phi(w)."""
    if w.real * w.real + w.imag * w.imag < 0.01:
        return 0.5 + w * (
            1.0 / 3
            + w
            * (1.0 / 8 + w * (1.0 / 30 + w * (1.0 / 144 + w * (1.0 / 840 + w * (1.0 / 5760 + w / 45360)))))
        )
    return (E - ph) / w


@_jit(inline="always")
def _coefficients(mode, a, b, bt, d, s, u, single):
    """(f, g, E) of one step and mode (see the module docstring); E = e^w for zoh and ode (else 0), which
    the backward keeps so as not to evaluate the exponential twice."""
    if mode == AFFINE:
        return a + bt * s, b * u, 0j
    if mode == SPLIT:
        w = d * a
        E = _cexp(w, single)
        return E * (1.0 + d * bt * s), d * _phi(w, E) * b * u, E
    if mode == ZOH:
        w = d * a
        E = _cexp(w, single)
        beta = d * _phi(w, E) * b
        return E + beta * s, beta * u, E
    if mode == BILINEAR:
        den = 1.0 - 0.5 * d * a
        beta = d * b / den
        return (1.0 + 0.5 * d * a) / den + beta * s, beta * u, 0j
    w = d * (a + bt * s)
    E = _cexp(w, single)
    return E, d * _phi(w, E) * b * u, E


# ---- kernels -------------------------------------------------------------------------------------
@_jit(parallel=True)
def _forward(mode, squash, single, u, d, a, b, bt, C, x0, ends, M, y, xL, starts):
    """y (B, Ch, H, L), xL (B, H, N) and starts (B, H, nblocks, N) from u (B, H, L), d (B, H, L) (zeros for
    affine), a, b, bt (H, N), C (Ch, H, N), x0 (B, H, N), ends (B,): the state after ends[b] inputs
    goes to xL."""
    Bs, H, L = u.shape
    Ch, N = C.shape[0], C.shape[2]
    for bh in numba.prange(Bs * H):
        bi, h = bh // H, bh % H
        x = np.empty(N, np.complex128)
        for n in range(N):
            x[n] = x0[bi, h, n]
        if ends[bi] == 0:
            for n in range(N):
                xL[bi, h, n] = x[n]
        for k in range(L):
            if k % M == 0:
                for n in range(N):
                    starts[bi, h, k // M, n] = x[n]
            uk = u[bi, h, k]
            sk = math.tanh(uk) if squash else uk
            dk = d[bi, h, k]
            for c in range(Ch):
                acc = 0.0
                if c == 0:
                    for n in range(N):
                        f, g, _ = _coefficients(mode, a[h, n], b[h, n], bt[h, n], dk, sk, uk, single)
                        x[n] = f * x[n] + g
                        acc += (C[c, h, n] * x[n]).real
                else:
                    for n in range(N):
                        acc += (C[c, h, n] * x[n]).real
                y[bi, c, h, k] = 2.0 * acc
            if k + 1 == ends[bi]:
                for n in range(N):
                    xL[bi, h, n] = x[n]


@_jit(parallel=True)
def _backward(
    mode, squash, single, u, d, a, b, bt, C, ends, M, starts, gy, gxL, gu, gd, ga, gb, gbt, gC, gx0
):
    """The gradients, per sequence b (summed over b by the caller): gu, gd (B, H, L); ga, gb, gbt
    (B, H, N); gC (B, Ch, H, N); gx0 (B, H, N). gy (B, Ch, H, L), gxL (B, H, N) the incoming gradients."""
    Bs, H, L = u.shape
    Ch, N = C.shape[0], C.shape[2]
    nblocks = starts.shape[2]
    for bh in numba.prange(Bs * H):
        bi, h = bh // H, bh % H
        lam = np.zeros(N, np.complex128)
        xs = np.empty((M + 1, N), np.complex128)
        Es = np.empty((M, N), np.complex128)  # e^w of each step of the block (zoh, ode)
        if ends[bi] == 0:
            for n in range(N):
                lam[n] = gxL[bi, h, n]
        for blk in range(nblocks - 1, -1, -1):
            s0 = blk * M
            m = min(M, L - s0)
            for n in range(N):
                xs[0, n] = starts[bi, h, blk, n]
            for j in range(m):
                k = s0 + j
                uk = u[bi, h, k]
                sk = math.tanh(uk) if squash else uk
                for n in range(N):
                    f, g, Es[j, n] = _coefficients(
                        mode, a[h, n], b[h, n], bt[h, n], d[bi, h, k], sk, uk, single
                    )
                    xs[j + 1, n] = f * xs[j, n] + g
            for j in range(m - 1, -1, -1):
                k = s0 + j
                uk = u[bi, h, k]
                sk = math.tanh(uk) if squash else uk
                dk = d[bi, h, k]
                if k + 1 == ends[bi]:
                    for n in range(N):
                        lam[n] += gxL[bi, h, n]
                gs = 0.0
                gus = 0.0
                gdk = 0.0
                for n in range(N):
                    lk = lam[n]
                    for c in range(Ch):
                        gyc = gy[bi, c, h, k]
                        lk += 2.0 * gyc * C[c, h, n].conjugate()
                        gC[bi, c, h, n] += 2.0 * gyc * xs[j + 1, n].conjugate()
                    an, bn = a[h, n], b[h, n]
                    gf = lk * xs[j, n].conjugate()  # dL/df_k; dL/dg_k = lk
                    if mode == AFFINE:
                        tn = bt[h, n]
                        f = an + tn * sk
                        ga[bi, h, n] += gf
                        gbt[bi, h, n] += gf * sk
                        gb[bi, h, n] += lk * uk
                        gs += (gf * tn.conjugate()).real
                        gus += (lk * bn.conjugate()).real
                    elif mode == SPLIT:
                        tn = bt[h, n]
                        w = dk * an
                        E = Es[j, n]
                        ph = _phi(w, E)
                        beta = dk * ph * bn
                        f = E * (1.0 + dk * tn * sk)
                        gg = lk * uk  # dL/dbeta
                        ga[bi, h, n] += (
                            gf * (dk * f).conjugate() + gg * (dk * dk * _psi(w, E, ph) * bn).conjugate()
                        )
                        gbt[bi, h, n] += gf * (E * dk).conjugate() * sk
                        gb[bi, h, n] += gg * (dk * ph).conjugate()
                        gdk += (gf * (an * f + E * tn * sk).conjugate() + gg * (bn * E).conjugate()).real
                        gs += (gf * (E * dk * tn).conjugate()).real
                        gus += (lk * beta.conjugate()).real
                    elif mode == ZOH:
                        w = dk * an
                        E = Es[j, n]
                        ph = _phi(w, E)
                        beta = dk * ph * bn
                        f = E + beta * sk
                        gbeta = gf * sk + lk * uk
                        ga[bi, h, n] += (
                            gf * (dk * E).conjugate() + gbeta * (dk * dk * _psi(w, E, ph) * bn).conjugate()
                        )
                        gb[bi, h, n] += gbeta * (dk * ph).conjugate()
                        gdk += (gf * (an * E).conjugate() + gbeta * (bn * E).conjugate()).real
                        gs += (gf * beta.conjugate()).real
                        gus += (lk * beta.conjugate()).real
                    elif mode == BILINEAR:
                        den = 1.0 - 0.5 * dk * an
                        den2 = den * den
                        beta = dk * bn / den
                        f = (1.0 + 0.5 * dk * an) / den + beta * sk
                        gbeta = gf * sk + lk * uk
                        ga[bi, h, n] += (
                            gf * (dk / den2).conjugate() + gbeta * (0.5 * dk * dk * bn / den2).conjugate()
                        )
                        gb[bi, h, n] += gbeta * (dk / den).conjugate()
                        gdk += (gf * (an / den2).conjugate() + gbeta * (bn / den2).conjugate()).real
                        gs += (gf * beta.conjugate()).real
                        gus += (lk * beta.conjugate()).real
                    else:  # ODE
                        z = an + bt[h, n] * sk
                        w = dk * z
                        E = Es[j, n]
                        ph = _phi(w, E)
                        f = E
                        gz = gf * (dk * E).conjugate() + lk * (bn * uk * dk * dk * _psi(w, E, ph)).conjugate()
                        ga[bi, h, n] += gz
                        gbt[bi, h, n] += gz * sk
                        gb[bi, h, n] += lk * (uk * dk * ph).conjugate()
                        gdk += (gf * (z * E).conjugate() + lk * (bn * uk * E).conjugate()).real
                        gs += (gz * bt[h, n].conjugate()).real
                        gus += (lk * (bn * dk * ph).conjugate()).real
                    lam[n] = f.conjugate() * lk
                gu[bi, h, k] = gus + (gs * (1.0 - sk * sk) if squash else gs)
                gd[bi, h, k] = gdk
        for n in range(N):
            gx0[bi, h, n] = lam[n]


@_jit(parallel=True, fastmath={"reassoc", "contract", "nsz"})
def _forward_affine(squash, u, ar, ai, br, bi, tr, ti, Cr, Ci, x0r, x0i, ends, M, y, xLr, xLi, sr, si):
    """The affine form in real arithmetic (real and imaginary parts in separate arrays of the inputs'
    precision), so that the loop over modes vectorizes. Arguments as `_forward`, split (t: bt)."""
    Bs, H, L = u.shape
    Ch, N = Cr.shape[0], Cr.shape[2]
    for bh in numba.prange(Bs * H):
        bb, h = bh // H, bh % H
        xr = x0r[bb, h].copy()
        xi = x0i[bb, h].copy()
        if ends[bb] == 0:
            xLr[bb, h] = xr
            xLi[bb, h] = xi
        for k in range(L):
            if k % M == 0:
                sr[bb, h, k // M] = xr
                si[bb, h, k // M] = xi
            uk = u[bb, h, k]
            sk = math.tanh(uk) if squash else uk
            acc = 0.0
            for n in range(N):
                fr = ar[h, n] + tr[h, n] * sk
                fi = ai[h, n] + ti[h, n] * sk
                nr = fr * xr[n] - fi * xi[n] + br[h, n] * uk
                ni = fr * xi[n] + fi * xr[n] + bi[h, n] * uk
                xr[n] = nr
                xi[n] = ni
                acc += Cr[0, h, n] * nr - Ci[0, h, n] * ni
            y[bb, 0, h, k] = 2.0 * acc
            for c in range(1, Ch):
                acc = 0.0
                for n in range(N):
                    acc += Cr[c, h, n] * xr[n] - Ci[c, h, n] * xi[n]
                y[bb, c, h, k] = 2.0 * acc
            if k + 1 == ends[bb]:
                xLr[bb, h] = xr
                xLi[bb, h] = xi


@_jit(parallel=True, fastmath={"reassoc", "contract", "nsz"})
def _backward_affine(squash, u, ar, ai, br, bi, tr, ti, Cr, Ci, ends, M, sr, si, gy, gxLr, gxLi, gu, g):
    """The gradients of the affine form in real arithmetic: gu (B, H, L); g (B, 8 + 2 Ch, H, N) float64
    holds, per sequence, the real and imaginary parts of the gradients of a, b, x0, bt and C."""
    Bs, H, L = u.shape
    Ch, N = Cr.shape[0], Cr.shape[2]
    nblocks = sr.shape[2]
    dt = u.dtype
    for bh in numba.prange(Bs * H):
        bb, h = bh // H, bh % H
        lr = np.zeros(N, dt)  # lambda: dL/dx_k, carried backwards
        li = np.zeros(N, dt)
        lkr = np.empty(N, dt)
        lki = np.empty(N, dt)
        xsr = np.empty((M + 1, N), dt)
        xsi = np.empty((M + 1, N), dt)
        gar = np.zeros(N)
        gai = np.zeros(N)
        gbr = np.zeros(N)
        gbi = np.zeros(N)
        gtr = np.zeros(N)
        gti = np.zeros(N)
        gCr = np.zeros((Ch, N))
        gCi = np.zeros((Ch, N))
        if ends[bb] == 0:
            lr[:] = gxLr[bb, h]
            li[:] = gxLi[bb, h]
        for blk in range(nblocks - 1, -1, -1):
            s0 = blk * M
            m = min(M, L - s0)
            xsr[0] = sr[bb, h, blk]
            xsi[0] = si[bb, h, blk]
            for j in range(m):
                uk = u[bb, h, s0 + j]
                sk = math.tanh(uk) if squash else uk
                for n in range(N):
                    fr = ar[h, n] + tr[h, n] * sk
                    fi = ai[h, n] + ti[h, n] * sk
                    xsr[j + 1, n] = fr * xsr[j, n] - fi * xsi[j, n] + br[h, n] * uk
                    xsi[j + 1, n] = fr * xsi[j, n] + fi * xsr[j, n] + bi[h, n] * uk
            for j in range(m - 1, -1, -1):
                k = s0 + j
                uk = u[bb, h, k]
                sk = math.tanh(uk) if squash else uk
                if k + 1 == ends[bb]:
                    for n in range(N):
                        lr[n] += gxLr[bb, h, n]
                        li[n] += gxLi[bb, h, n]
                for n in range(N):
                    lkr[n] = lr[n]
                    lki[n] = li[n]
                for c in range(Ch):  # dL/dx_k from the read-out y = 2 Re(C x), and dL/dC
                    gc = 2.0 * gy[bb, c, h, k]
                    for n in range(N):
                        lkr[n] += gc * Cr[c, h, n]
                        lki[n] -= gc * Ci[c, h, n]
                        gCr[c, n] += gc * xsr[j + 1, n]
                        gCi[c, n] -= gc * xsi[j + 1, n]
                gs = 0.0
                gus = 0.0
                for n in range(N):
                    pr = xsr[j, n]
                    pi = xsi[j, n]
                    gfr = lkr[n] * pr + lki[n] * pi  # dL/df_k = lambda_k conj(x_{k-1})
                    gfi = lki[n] * pr - lkr[n] * pi
                    gar[n] += gfr
                    gai[n] += gfi
                    gbr[n] += lkr[n] * uk
                    gbi[n] += lki[n] * uk
                    gtr[n] += gfr * sk
                    gti[n] += gfi * sk
                    gs += gfr * tr[h, n] + gfi * ti[h, n]
                    gus += lkr[n] * br[h, n] + lki[n] * bi[h, n]
                    fr = ar[h, n] + tr[h, n] * sk
                    fi = ai[h, n] + ti[h, n] * sk
                    lr[n] = fr * lkr[n] + fi * lki[n]  # conj(f_k) lambda_k
                    li[n] = fr * lki[n] - fi * lkr[n]
                gu[bb, h, k] = gus + (gs * (1.0 - sk * sk) if squash else gs)
        for n in range(N):
            g[bb, 0, h, n] = gar[n]
            g[bb, 1, h, n] = gai[n]
            g[bb, 2, h, n] = gbr[n]
            g[bb, 3, h, n] = gbi[n]
            g[bb, 4, h, n] = lr[n]
            g[bb, 5, h, n] = li[n]
            g[bb, 6, h, n] = gtr[n]
            g[bb, 7, h, n] = gti[n]
            for c in range(Ch):
                g[bb, 8 + 2 * c, h, n] = gCr[c, n]
                g[bb, 9 + 2 * c, h, n] = gCi[c, n]


# ---- the autograd function -----------------------------------------------------------------------
def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().contiguous().numpy()


# One kernel at a time: numba's fallback threading layer (workqueue, where no OpenMP or TBB runtime is
# found) aborts the process on concurrent launches from several Python threads; each kernel already
# uses every thread it is given.
_LOCK = threading.Lock()


def _threads() -> None:
    """numba's threads follow torch's setting (torch.set_num_threads), within numba's own maximum."""
    numba.set_num_threads(max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS)))


class _FusedLiquidScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mode, squash, M, u, d, a, b, bt, C, x0, ends):
        _threads()
        Bs, H, L = u.shape
        N, Ch = a.shape[-1], C.shape[0]
        cdt = torch.complex128
        y = np.empty((Bs, Ch, H, L), np.float64)
        xL = np.empty((Bs, H, N), np.complex128)
        starts = np.empty((Bs, H, max(1, -(-L // M)), N), np.complex128)
        arrays = [_np(t) for t in (u.double(), d.double(), a.to(cdt), b.to(cdt), bt.to(cdt), C.to(cdt))]
        single = u.dtype != torch.float64
        with _LOCK:
            _forward(mode, squash, single, *arrays, _np(x0.to(cdt)), _np(ends), M, y, xL, starts)
        ctx.save_for_backward(u, d, a, b, bt, C, ends)
        ctx.starts, ctx.mode, ctx.squash, ctx.M, ctx.single = starts, mode, squash, M, single
        ctx.dtypes = (x0.dtype, a.dtype, b.dtype, bt.dtype, C.dtype, d.dtype)
        return torch.from_numpy(y).to(u.dtype), torch.from_numpy(xL).to(x0.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_xL):
        _threads()
        u, d, a, b, bt, C, ends = ctx.saved_tensors
        Bs, H, L = u.shape
        N, Ch = a.shape[-1], C.shape[0]
        cdt = torch.complex128
        gy = _np(grad_y.double()) if grad_y is not None else np.zeros((Bs, Ch, H, L))
        gxL = _np(grad_xL.to(cdt)) if grad_xL is not None else np.zeros((Bs, H, N), np.complex128)
        gu, gd = np.zeros((Bs, H, L)), np.zeros((Bs, H, L))
        ga, gb, gbt = (np.zeros((Bs, H, N), np.complex128) for _ in range(3))
        gC = np.zeros((Bs, Ch, H, N), np.complex128)
        gx0 = np.empty((Bs, H, N), np.complex128)
        arrays = [_np(t) for t in (u.double(), d.double(), a.to(cdt), b.to(cdt), bt.to(cdt), C.to(cdt))]
        with _LOCK:
            _backward(
                ctx.mode,
                ctx.squash,
                ctx.single,
                *arrays,
                _np(ends),
                ctx.M,
                ctx.starts,
                gy,
                gxL,
                gu,
                gd,
                ga,
                gb,
                gbt,
                gC,
                gx0,
            )
        x0_dt, a_dt, b_dt, bt_dt, C_dt, d_dt = ctx.dtypes
        t = torch.from_numpy
        return (
            None,
            None,
            None,
            t(gu).to(u.dtype),
            t(gd).to(d_dt),
            t(ga).sum(0).to(a_dt),
            t(gb).sum(0).to(b_dt),
            t(gbt).sum(0).to(bt_dt),
            t(gC).sum(0).to(C_dt),
            t(gx0).to(x0_dt),
            None,
        )


def _split(t: torch.Tensor, dtype) -> tuple[np.ndarray, np.ndarray]:
    t = t.detach()
    return _np(t.real.to(dtype)), _np(t.imag.to(dtype))


class _FusedAffineScan(torch.autograd.Function):
    """The affine form (f = a + bt s, g = b u) in the inputs' precision (float32 or float64), real
    arithmetic."""

    @staticmethod
    def forward(ctx, squash, M, u, a, b, bt, C, x0, ends):
        _threads()
        Bs, H, L = u.shape
        N, Ch = a.shape[-1], C.shape[0]
        rdt = u.dtype
        y = torch.empty(Bs, Ch, H, L, dtype=rdt)
        xLr, xLi = (torch.empty(Bs, H, N, dtype=rdt) for _ in range(2))
        sr, si = (torch.empty(Bs, H, max(1, -(-L // M)), N, dtype=rdt) for _ in range(2))
        params = [x for t in (a, b, bt, C) for x in _split(t, rdt)]
        with _LOCK:
            _forward_affine(
                squash,
                _np(u),
                *params,
                *_split(x0, rdt),
                _np(ends),
                M,
                y.numpy(),
                xLr.numpy(),
                xLi.numpy(),
                sr.numpy(),
                si.numpy(),
            )
        ctx.save_for_backward(u, a, b, bt, C, ends, sr, si)
        ctx.squash, ctx.M, ctx.x0_dtype = squash, M, x0.dtype
        return y, torch.complex(xLr, xLi).to(x0.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_xL):
        _threads()
        u, a, b, bt, C, ends, sr, si = ctx.saved_tensors
        Bs, H, L = u.shape
        N, Ch = a.shape[-1], C.shape[0]
        rdt = u.dtype
        gy = _np(grad_y.to(rdt)) if grad_y is not None else np.zeros((Bs, Ch, H, L), _np(u).dtype)
        gxL = grad_xL if grad_xL is not None else torch.zeros(Bs, H, N, dtype=ctx.x0_dtype)
        gu = torch.empty_like(u)
        g = torch.empty(Bs, 8 + 2 * Ch, H, N, dtype=torch.float64)
        params = [x for t in (a, b, bt, C) for x in _split(t, rdt)]
        with _LOCK:
            _backward_affine(
                ctx.squash,
                _np(u),
                *params,
                _np(ends),
                ctx.M,
                sr.numpy(),
                si.numpy(),
                gy,
                *_split(gxL, rdt),
                gu.numpy(),
                g.numpy(),
            )
        g = torch.complex(g[:, 0::2], g[:, 1::2])  # (B, 4 + Ch, H, N): a, b, x0, bt, C
        gs = g.sum(0)
        return (
            None,
            None,
            gu,
            gs[0].to(a.dtype),
            gs[1].to(b.dtype),
            gs[3].to(bt.dtype),
            gs[4:].to(C.dtype),
            g[:, 2].to(ctx.x0_dtype),
            None,
        )


def fused_liquid_scan(mode: str, u, d, a, b, bt, C, x0, ends, squash: bool, block: int = 64):
    """The liquid scan on the CPU by the numba kernels (see the module docstring). u, d (B, H, L) real
    (d: the step sizes, ignored by "affine"); a, b, bt (H, N) complex ("affine": alpha, beta; bt only
    read by "ode"); C (Ch, H, N) complex; x0 (B, H, N) complex; ends (B,) int64, the number of inputs
    after which the returned state is taken. Returns (y (B, Ch, H, L), x (B, H, N)) in the inputs'
    dtypes; gradients reach u, d, a, b, bt, C and x0. Precision: "affine" runs in the inputs'
    precision (float32 or float64, gradient sums in float64); the other forms run in float64, with
    the per-step exponential in float32 when u is float32."""
    if numba is None:
        raise RuntimeError("fused_liquid_scan needs numba: pip install 'liquid-s4[fast]'")
    if mode == "affine":
        return _FusedAffineScan.apply(bool(squash), int(block), u, a, b, bt, C, x0, ends)
    return _FusedLiquidScan.apply(MODES[mode], bool(squash), int(block), u, d, a, b, bt, C, x0, ends)
