"""Scans of diagonal linear recurrences with time-varying coefficients,

    x_k = f_k x_{k-1} + g_k        (k = 1..L, elementwise, real or complex; x_0 given)

the form of an input-dependent (liquid, selective) state transition once discretized: for the
liquid SSM, f_k = A_bar + B_bar u_k and g_k = B_bar u_k per channel and mode.

    naive_diag_scan(f, g, x0)            the reference: one step at a time
    chunk_diag_scan(f, g, x0, chunk)     the same in about 2 sqrt(L) vectorized passes

`chunk_diag_scan` splits the sequence into chunks of T steps. It first scans every chunk at once from
a zero state (T passes over all chunks together), keeping each chunk's cumulative factor; then it
carries the state across chunk boundaries (L/T passes over one state per chunk); then each step adds
its chunk's carried-in state times its cumulative factor (one pass). No quotient of cumulative
factors is ever formed, so decaying modes cannot underflow into a division. The backward pass is
explicit: the adjoint of a linear recurrence is the same recurrence run backwards,

    lambda_k = conj(f_{k+1}) lambda_{k+1} + dL/dx_k,    dL/dg_k = lambda_k,
    dL/df_k = lambda_k conj(x_{k-1}),                   dL/dx_0 = conj(f_1) lambda_1

(PyTorch's convention for complex gradients), computed by the same chunked scan on the reversed
sequence.
"""

from __future__ import annotations

import math

import torch


def naive_diag_scan(f: torch.Tensor, g: torch.Tensor, x0: torch.Tensor | None = None) -> torch.Tensor:
    """x (..., L) with x_k = f_k x_{k-1} + g_k, from f, g (..., L) and x0 (...) (zeros if None),
    one step at a time. Differentiable by autograd; the reference for `chunk_diag_scan`."""
    x = torch.zeros_like(g[..., 0]) if x0 is None else x0
    out = []
    for k in range(g.shape[-1]):
        x = f[..., k] * x + g[..., k]
        out.append(x)
    return torch.stack(out, -1)


def _chunk_size(L: int) -> int:
    """About sqrt(L): balances the passes within chunks (T) and across them (L / T)."""
    return max(1, 2 ** round(math.log2(max(1.0, math.sqrt(L)))))


def _scan_forward(f: torch.Tensor, g: torch.Tensor, x0: torch.Tensor | None, T: int) -> torch.Tensor:
    """The chunked scan without autograd: f, g (..., L) -> x (..., L)."""
    L = g.shape[-1]
    n = -(-L // T)  # chunks
    pad = n * T - L
    if pad:  # padded steps (f = 1, g = 0) come after the sequence: they change nothing before it
        f = torch.cat([f, f.new_ones(*f.shape[:-1], pad)], -1)
        g = torch.cat([g, g.new_zeros(*g.shape[:-1], pad)], -1)
    # time within a chunk leads: (T, ..., n), so that each of the T passes reads and writes contiguous rows
    fc = f.reshape(*f.shape[:-1], n, T).movedim(-1, 0).contiguous()
    gc = g.reshape(*g.shape[:-1], n, T).movedim(-1, 0)
    x = torch.empty_like(fc)
    F = torch.empty_like(fc)  # cumulative factor of each chunk up to each step
    x[0], F[0] = gc[0], fc[0]
    for t in range(1, T):  # every chunk at once, from a zero state
        torch.addcmul(gc[t], fc[t], x[t - 1], out=x[t])
        torch.mul(fc[t], F[t - 1], out=F[t])
    carry = torch.zeros_like(x[0, ..., 0]) if x0 is None else x0.expand_as(x[0, ..., 0]).to(x.dtype)
    carried = torch.empty_like(x[0])  # (..., n): the state entering each chunk
    for c in range(n):  # across chunk boundaries
        carried[..., c] = carry
        carry = F[-1, ..., c] * carry + x[-1, ..., c]
    x.addcmul_(F, carried)
    x = x.movedim(0, -1)
    return x.reshape(*g.shape[:-1], n * T)[..., :L]


def _adjoint_scan(f: torch.Tensor, grad_x: torch.Tensor, T: int) -> torch.Tensor:
    """lambda_k = conj(f_{k+1}) lambda_{k+1} + grad_x_k (lambda after the last step: 0), the adjoint
    of x_k = f_k x_{k-1} + g_k: the same scan on the reversed sequence."""
    f_next = torch.cat([f[..., 1:], torch.zeros_like(f[..., :1])], -1).conj()
    return _scan_forward(f_next.flip(-1), grad_x.flip(-1), None, T).flip(-1)


class _ChunkDiagScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, f, g, x0, T):
        x = _scan_forward(f, g, x0, T)
        ctx.save_for_backward(f, x, x0)
        ctx.T, ctx.has_x0 = T, x0 is not None
        return x

    @staticmethod
    def backward(ctx, grad_x):
        f, x, x0 = ctx.saved_tensors
        lam = _adjoint_scan(f, grad_x, ctx.T)
        grad_f = grad_x0 = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
            first = torch.zeros_like(x[..., :1]) if x0 is None else x0[..., None].expand_as(x[..., :1])
            x_prev = torch.cat([first.to(x.dtype), x[..., :-1]], -1)
            if ctx.needs_input_grad[0]:
                grad_f = lam * x_prev.conj()
            if ctx.has_x0 and ctx.needs_input_grad[2]:
                grad_x0 = (f[..., 0].conj() * lam[..., 0]).reshape(x0.shape)
        return grad_f, lam, grad_x0, None


def chunk_diag_scan(
    f: torch.Tensor, g: torch.Tensor, x0: torch.Tensor | None = None, chunk: int | None = None
) -> torch.Tensor:
    """x (..., L) with x_k = f_k x_{k-1} + g_k, from f, g (..., L) (same shape and dtype, real or
    complex) and x0 (...) (zeros if None). chunk: steps per chunk (default about sqrt(L)).
    Gradients reach f, g and x0 through an explicit adjoint scan (see the module docstring)."""
    if f.shape != g.shape or f.dtype != g.dtype:
        raise ValueError(
            f"chunk_diag_scan: f and g must have the same shape and dtype, got {tuple(f.shape)} {f.dtype} "
            f"and {tuple(g.shape)} {g.dtype}"
        )
    if x0 is not None and tuple(x0.shape) != tuple(g.shape[:-1]):
        raise ValueError(f"chunk_diag_scan: x0 must have shape {tuple(g.shape[:-1])}, got {tuple(x0.shape)}")
    T = chunk or _chunk_size(g.shape[-1])
    if g.shape[-1] == 0:
        return g.clone()
    return _ChunkDiagScan.apply(f, g, x0, T)


# ---- the liquid recurrence of a diagonal SSM, read out ---------------------------------------------
def naive_liquid_scan(
    u: torch.Tensor, dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, x0: torch.Tensor | None = None
):
    """The reference for `liquid_scan`, one step at a time (autograd):

        x_k = (dA + dB u_k) x_{k-1} + dB u_k,   y_k[c] = 2 Re(sum_n C[c, :, n] x_k[n])

    u (B, H, L) real; dA, dB (H, N) complex (the stored half of conjugate pairs); C (Ch, H, N); x0
    (B, H, N) or None. Returns (y (B, Ch, H, L), x_L (B, H, N))."""
    x = torch.zeros(*u.shape[:2], dA.shape[-1], dtype=dA.dtype, device=u.device) if x0 is None else x0
    ys = []
    for k in range(u.shape[-1]):
        uk = u[..., k, None].to(dA.dtype)
        x = (dA + dB * uk) * x + dB * uk
        ys.append(2 * torch.einsum("chn,bhn->bch", C, x).real)
    return torch.stack(ys, -1), x


def _liquid_block(u, dA, dB):
    """f, g (B, H, N, M) of the liquid recurrence for a block of inputs u (B, H, M)."""
    ub = u[:, :, None, :].to(dA.dtype)
    g = dB[..., None] * ub
    return dA[..., None] + g, g


class _LiquidScan(torch.autograd.Function):
    """`liquid_scan` with an explicit backward: blocks of M steps, forward from the first and backward
    from the last, recomputing each block's states from the state saved at its start."""

    @staticmethod
    def forward(ctx, u, dA, dB, C, x0, M):
        B, H, L = u.shape
        x = torch.zeros(B, H, dA.shape[-1], dtype=dA.dtype, device=u.device) if x0 is None else x0
        starts, ys = [], []
        for s in range(0, L, M):
            f, g = _liquid_block(u[..., s : s + M], dA, dB)
            starts.append(x)
            xs = _scan_forward(f, g, x, _chunk_size(f.shape[-1]))  # (B, H, N, m)
            ys.append(2 * torch.einsum("chn,bhnm->bchm", C, xs).real)
            x = xs[..., -1]
        ctx.save_for_backward(u, dA, dB, C, *starts)
        ctx.M, ctx.has_x0 = M, x0 is not None
        return torch.cat(ys, -1), x

    @staticmethod
    def backward(ctx, grad_y, grad_xL):
        u, dA, dB, C, *starts = ctx.saved_tensors
        M = ctx.M
        grad_u = torch.zeros_like(u)
        grad_dA, grad_dB, grad_C = torch.zeros_like(dA), torch.zeros_like(dB), torch.zeros_like(C)
        lam_next = None if grad_xL is None else grad_xL.to(dA.dtype)  # dL/dx at the end of the block
        f_after = None  # the first factor of the following block
        for i in range(len(starts) - 1, -1, -1):
            s = i * M
            ub = u[..., s : s + M]
            f, g = _liquid_block(ub, dA, dB)
            xs = _scan_forward(f, g, starts[i], _chunk_size(f.shape[-1]))
            # dL/dx_k from the read-out: y = 2 Re(C x)
            gx = 2 * torch.einsum("chn,bchm->bhnm", C.conj(), grad_y[..., s : s + M].to(dA.dtype))
            if lam_next is not None:
                carry = lam_next if f_after is None else f_after.conj() * lam_next
                gx[..., -1] += carry
            lam = _adjoint_scan(f, gx, _chunk_size(f.shape[-1]))
            x_prev = torch.cat([starts[i][..., None], xs[..., :-1]], -1)
            grad_f = lam * x_prev.conj()
            grad_fg = grad_f + lam  # f and g both carry dB u
            grad_dA += grad_f.sum((0, 3))
            grad_dB += torch.einsum("bhnm,bhm->hn", grad_fg, ub.to(dA.dtype))
            grad_u[..., s : s + M] = torch.einsum("bhnm,hn->bhm", grad_fg, dB.conj()).real
            grad_C += 2 * torch.einsum("bchm,bhnm->chn", grad_y[..., s : s + M].to(dA.dtype), xs.conj())
            lam_next, f_after = lam[..., 0], f[..., 0]
        grad_x0 = (f_after.conj() * lam_next) if ctx.has_x0 else None
        return grad_u, grad_dA, grad_dB, grad_C, grad_x0, None


def liquid_scan(
    u: torch.Tensor,
    dA: torch.Tensor,
    dB: torch.Tensor,
    C: torch.Tensor,
    x0: torch.Tensor | None = None,
    block: int = 1024,
):
    """The liquid recurrence of a diagonal SSM, every term (see `naive_liquid_scan`), computed in
    blocks of `block` steps with `chunk_diag_scan`'s method inside each: the (B, H, N, L) states are
    never held at once, only one block's (B, H, N, block) and the state at each block start.
    Returns (y (B, Ch, H, L), x_L (B, H, N)); gradients reach u, dA, dB, C and x0."""
    return _LiquidScan.apply(u, dA, dB, C, x0, block)
