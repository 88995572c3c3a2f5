"""Correlation signals of the liquid (input-dependent) state transition of Liquid-S4.

The linearized liquid time-constant SSM of Hasani et al. (2023) is, after discretization,

    x_k = (A_bar + diag(B_bar) u_k) x_{k-1} + B_bar u_k,    y_k = C x_k + D u_k.

Unrolled, a chain of p - 1 liquid transitions in consecutive steps that ends at step j injects
B_bar^p (elementwise power) times the correlation signal of degree p,

    v^(p)_j = u_j u_{j-1} ... u_{j-p+1}       (inputs before the sequence start are 0),

which then evolves under A_bar like any input. The liquid kernels keep these terms: PB the ones read
out at once (C B_bar^p v^(p)_k), KB all of them (sum_l C A_bar^l B_bar^p v^(p)_{k-l}).
The anti-causal half of a bidirectional layer runs the same recurrence backwards in time, so its
signal is the product of the *following* inputs, w^(p)_j = u_j u_{j+1} ... u_{j+p-1}.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

SQUASHES = (None, "tanh")


def delayed(u: torch.Tensor, i: int, history: torch.Tensor | None = None) -> torch.Tensor:
    """u_{k-i} for u (..., L), with `history` (..., n >= i) supplying the inputs before the start
    (oldest first; zeros if None). Negative i gives the following inputs u_{k+|i|}, zeros past the end.
    Without history this is one pad (a negative pad crops), whose backward is another pad."""
    L = u.shape[-1]
    if history is not None and i > 0:
        n = history.shape[-1]
        return torch.cat([history.to(u.dtype), u], -1)[..., n - i : n - i + L]
    return F.pad(u, (i, -i)) if abs(i) < L else torch.zeros_like(u)


def correlations(
    u: torch.Tensor, degree: int, history: torch.Tensor | None = None, squash: str | None = None
) -> list[torch.Tensor]:
    """[v^(2), ..., v^(degree)], v^(p)_k = u_k u_{k-1} ... u_{k-p+1}, each (B, H, L).

    u: (B, H, L). history: (B, H, degree - 1) inputs that preceded u, oldest first (zeros if None).
    squash: None or "tanh" (applied to each v^(p), keeping high degrees bounded)."""
    v, out = u, []
    for p in range(2, degree + 1):
        v = v * delayed(u, p - 1, history)
        out.append(v)
    return [torch.tanh(t) for t in out] if squash == "tanh" else out


def correlation(
    u: torch.Tensor, degree: int, history: torch.Tensor | None = None, squash: str | None = None
) -> torch.Tensor:
    """`correlations` stacked: (B, degree - 1, H, L)."""
    return torch.stack(correlations(u, degree, history, squash), 1)


def anticorrelations(u: torch.Tensor, degree: int, squash: str | None = None) -> list[torch.Tensor]:
    """[w^(2), ..., w^(degree)], w^(p)_k = u_k u_{k+1} ... u_{k+p-1} (inputs past the end are 0)."""
    w, out = u, []
    for p in range(2, degree + 1):
        w = w * delayed(u, -(p - 1))
        out.append(w)
    return [torch.tanh(t) for t in out] if squash == "tanh" else out


def anticorrelation(u: torch.Tensor, degree: int, squash: str | None = None) -> torch.Tensor:
    """`anticorrelations` stacked: (B, degree - 1, H, L)."""
    return torch.stack(anticorrelations(u, degree, squash), 1)


def last_inputs(
    u: torch.Tensor, n: int, history: torch.Tensor | None, lengths: torch.Tensor | None = None
) -> torch.Tensor:
    """The n most recent inputs (oldest first) after reading u (B, H, L) on top of `history` (B, H, n),
    each sequence up to its own length. Returns (B, H, n)."""
    past = u.new_zeros(*u.shape[:-1], n) if history is None else history.to(u.dtype)
    ext = torch.cat([past, u], -1)  # (B, H, n + L)
    if lengths is None:
        return ext[..., -n:] if n else ext[..., :0]
    idx = lengths.view(-1, 1, 1) + torch.arange(n, device=u.device)  # positions len .. len + n - 1
    return torch.gather(ext, -1, idx.expand(*u.shape[:-1], n))


class _ProductSkip(torch.autograd.Function):
    """y + c (u_k u_{k-1}) with an explicit backward (see `product_skip`)."""

    @staticmethod
    def forward(ctx, y, u, c, history):
        # v_k = u_k u_{k-1}, built in one pass (no shifted copy of u), contiguous like y even when u is
        # a transposed view (the layers' (B, L, H) inputs): strided operands make every later pass slower
        v = u.new_empty(u.shape)
        torch.mul(u[..., 1:], u[..., :-1], out=v[..., 1:])
        if history is None:
            v[..., 0] = 0
        else:
            torch.mul(u[..., 0], history[..., -1].to(u.dtype), out=v[..., 0])
        ctx.save_for_backward(u, c, v, history)
        return torch.addcmul(y, c[..., None], v[:, None])  # (B, C, H, L)

    @staticmethod
    def backward(ctx, g):
        u, c, v, history = ctx.saved_tensors
        gs = g.unbind(
            1
        )  # per output channel (B, H, L); the sums below run over them without a (B, C, H, L) product
        grad_c = None
        if ctx.needs_input_grad[2]:  # sum_{b, l} g v, as dot products along the contiguous L axis
            grad_c = torch.stack([torch.linalg.vecdot(gc, v).sum(0) for gc in gs])  # (C, H)
        grad_u = grad_h = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[3]:
            gv = gs[0] * c[0, :, None]  # (B, H, L): the gradient of v, sum_c g_c c_c
            for gc, cc in zip(gs[1:], c[1:]):
                gv.addcmul_(gc, cc[:, None])
            if ctx.needs_input_grad[1]:  # dv_k/du_k = u_{k-1}, dv_{k+1}/du_k = u_{k+1}
                grad_u = u.new_empty(
                    u.shape
                )  # contiguous, like the convolution's input gradient it is added to
                torch.mul(gv[..., 1:], u[..., :-1], out=grad_u[..., 1:])
                grad_u[..., 0] = 0 if history is None else gv[..., 0] * history[..., -1].to(u.dtype)
                grad_u[..., :-1].addcmul_(gv[..., 1:], u[..., 1:])
            if history is not None and ctx.needs_input_grad[3]:
                grad_h = torch.zeros_like(history)
                grad_h[..., -1] = gv[..., 0] * u[..., 0]
        return g, grad_u, grad_c, grad_h


def product_skip(
    y: torch.Tensor, u: torch.Tensor, c: torch.Tensor, history: torch.Tensor | None = None
) -> torch.Tensor:
    """y + c v^(2): the degree-2 PB term read out at once, y (B, C, H, L) + c (C, H) times
    v^(2)_k = u_k u_{k-1} of u (B, H, L) (history (B, H, n >= 1): the inputs before u, oldest first;
    zeros if None). Two passes forward and about five backward, against about three and eight for the
    same expression left to autograd (`product_skip_ref`)."""
    return _ProductSkip.apply(y, u, c, history)


def product_skip_ref(
    y: torch.Tensor, u: torch.Tensor, c: torch.Tensor, history: torch.Tensor | None = None
) -> torch.Tensor:
    """Reference for `product_skip`, differentiated by autograd."""
    return y + c[..., None] * (u * delayed(u, 1, history))[:, None]


def correlation_ref(
    u: torch.Tensor, degree: int, history: torch.Tensor | None = None, squash: str | None = None
) -> torch.Tensor:
    """Loop reference for `correlation`: one explicit product per (p, k)."""
    B, H, L = u.shape
    seq = (
        [history[..., i] for i in range(degree - 1)]
        if history is not None
        else [torch.zeros_like(u[..., 0])] * (degree - 1)
    )
    seq = seq + [u[..., k] for k in range(L)]
    out = torch.zeros(B, degree - 1, H, L, dtype=u.dtype, device=u.device)
    for p in range(2, degree + 1):
        for k in range(L):
            prod = torch.ones_like(u[..., 0])
            for i in range(p):
                prod = prod * seq[k + degree - 1 - i]
            out[:, p - 2, :, k] = torch.tanh(prod) if squash == "tanh" else prod
    return out
