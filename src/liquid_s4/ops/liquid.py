"""The liquid terms of Liquid-S4 (Hasani et al. 2023, "Liquid Structural State-Space Models").

Per channel, the linearized liquid time-constant SSM

    dx/dt = (A + B u(t)) x(t) + B u(t),   y = C x + D u

is discretized like the base layer (bilinear for S4, zoh or bilinear for S4D) to

    x_k = (A_bar + diag(B_bar) u_k) x_{k-1} + B_bar u_k,   y_k = C x_k + D u_k.

"diag(B_bar)" and the elementwise power B_bar^p are taken in the coordinates in which the layer stores
its state: the eigenbasis of the normal part Lambda of A = Lambda - P P^* for S4, the diagonal for S4D
(conjugate pairs included: the conjugate half holds conj(B_bar)^p). Unrolling the recurrence gives the
plain convolution K_bar * u plus terms in products of inputs. With the correlation signal of degree p

    v^(p)_k = u_k u_{k-1} ... u_{k-p+1}     (inputs before the sequence start are 0; with state
                                            passing, the inputs of the previous chunk)

a chain of p - 1 liquid transitions in consecutive steps injects B_bar^p v^(p), which then evolves
under A_bar. For a maximum degree P >= 2 the two liquid kernels keep:

    PB:  y_k = (K_bar * u)_k + D u_k + sum_{p=2..P} (C B_bar^p) v^(p)_k      (chains read out at once, l = 0)
    KB:  y_k = (K_bar * u)_k + D u_k + sum_{p=2..P} (K_bar_p * v^(p))_k,  K_bar_p[l] = C A_bar^l B_bar^p

Every retained term is an exact term of the unrolled recurrence. Both are causal: y_k depends on u_{<=k}
only. The coefficients are computed from the live parameters A, (P,) B, C, dt at every call, so they
train. For S4, K_bar_p comes from the same Cauchy/Woodbury kernel as K_bar, with the continuous vector
B_p = (1/dt)(I - dt/2 A) B_bar^p in place of B; the PB coefficient C B_bar^p = K_bar_p[0] also comes from
there, because S4 stores C~ = C (I - A_bar^L) rather than C.

Recurrent mode: the state holds the SSM state and the last P - 1 inputs (from which v^(p)_k is formed).
KB's per-degree states x^(p)_k = A_bar x^(p)_{k-1} + B_bar^p v^(p)_k share A_bar and C with x, so only
their sum s_k = x_k + sum_p x^(p)_k enters the output y_k = C s_k + D u_k; the layer keeps that sum
(exactly equivalent, P - 1 fewer state vectors). step() equals forward().

Squashing (liquid_squash="tanh") replaces v^(p) by tanh(v^(p)) in both modes, bounding high degrees.

Bidirectional layers add an anti-causal half that runs the same recurrence backwards in time: its
liquid terms use the products of the following inputs, w^(p)_j = u_j u_{j+1} ... u_{j+p-1}, read out
as C_b B_bar^p w^(p)_{k+1} (PB) or sum_{j>k} C_b A_bar^{j-k-1} B_bar^p w^(p)_j (KB).

Each piece has a whole-sequence form (used by the convolution) and a per-step form (used by the
recurrent step), side by side, with one reference for both:

    signals        correlations(u, P, history)         step_correlations(u_t, history, P)      correlation_ref
    input history  last_inputs(u, n, history)          push_history(history, u_t)
    PB read-out    pb_readout(y, u, coef, history)     pb_readout_step(y, v, coef)             pb_readout_ref
    KB             kb_convolution(u, k, kp, history)   (the state: DiscreteSSM.step with liquid_B)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .fftconv import anticausal_kernel, fftconv_sum

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


def step_correlations(
    u_t: torch.Tensor, history: torch.Tensor, degree: int, squash: str | None = None
) -> torch.Tensor:
    """The per-step form of `correlations`: v^(p)_t = u_t u_{t-1} ... u_{t-p+1} for p = 2..degree, from
    u_t (B, H) and the last degree - 1 inputs `history` (B, H, degree - 1), oldest first.
    Returns (B, degree - 1, H), squashed like `correlations`."""
    if degree == 2:
        v = torch.mul(u_t, history[..., 0]).unsqueeze_(1)
    else:
        out, prev = [], u_t
        for i in range(degree - 1):
            prev = prev * history[..., -1 - i]
            out.append(prev)
        v = torch.stack(out, 1)
    return torch.tanh(v) if squash == "tanh" else v


def push_history(history: torch.Tensor, u_t: torch.Tensor) -> torch.Tensor:
    """The per-step form of `last_inputs`: the last n inputs after u_t (B, H), from `history` (B, H, n)."""
    return torch.cat([history[..., 1:], u_t[..., None].to(history.dtype)], -1)


def pb_readout(
    y: torch.Tensor,
    u: torch.Tensor,
    coef: torch.Tensor,
    history: torch.Tensor | None = None,
    squash: str | None = None,
) -> torch.Tensor:
    """The PB terms added to the convolution output: y + sum_p coef[p - 2] v^(p).

    y (B, C, H, L); u (B, H, L); coef (P - 1, C, H) the read-outs C B_bar^p; history as in
    `correlations`. Without squashing no (B, P - 1, H, L) signal is built: degree 2 is one fused pass
    (`product_skip`), and higher degrees factor as u_k g_k with g_k = u_{k-1}(c_2 + u_{k-2}(c_3 + ...))
    (Horner), one more input-dependent skip. Reference: `pb_readout_ref`."""
    P = coef.shape[0] + 1
    if squash is None and P == 2:
        return product_skip(y, u, coef[0], history)
    if squash is None:
        c = coef[..., None]  # c[p - 2] = c_p, (P - 1, C, H, 1)
        g = delayed(u, P - 1, history)[:, None] * c[P - 2]
        for i in range(P - 2, 0, -1):
            g = delayed(u, i, history)[:, None] * (c[i - 1] + g)
        return torch.addcmul(y, g, u[:, None])
    for p, v_p in enumerate(correlations(u, P, history, squash)):
        y = y + coef[p, :, :, None] * v_p[:, None]
    return y


def pb_readout_step(
    y: torch.Tensor, v: torch.Tensor, coef: torch.Tensor, inplace: bool = False
) -> torch.Tensor:
    """The per-step form of `pb_readout`: y (B, C, H) + sum_p coef[p - 2] v[:, p - 2], with the signals
    v (B, P - 1, H) of `step_correlations` and coef (P - 1, C, H) (or the sequence of its P - 1 slices).
    One output channel may also come as y (B, H) with coef (P - 1, H). inplace: add into y (no autograd)."""
    per_channel = y.dim() == 3
    for p, c in enumerate(coef):
        v_p = v[:, p : p + 1] if per_channel else v[:, p]  # (B, 1, H) or (B, H)
        y = y.addcmul_(c, v_p) if inplace else torch.addcmul(y, c, v_p)
    return y


def pb_readout_reverse(y: torch.Tensor, w: list[torch.Tensor], coef: torch.Tensor) -> torch.Tensor:
    """The PB terms of the anti-causal half of a bidirectional layer: y + sum_p coef[p - 2] w^(p)_{k+1},
    with w = `anticorrelations(u, P)` and coef (P - 1, C, H) (C_b B_bar^p)."""
    for p, w_p in enumerate(w):
        y = y + coef[p, :, :, None] * delayed(w_p, -1)[:, None]
    return y


def pb_readout_ref(
    y: torch.Tensor,
    u: torch.Tensor,
    coef: torch.Tensor,
    history: torch.Tensor | None = None,
    squash: str | None = None,
) -> torch.Tensor:
    """Reference for `pb_readout` and `pb_readout_step`: every signal from `correlation_ref`."""
    v = correlation_ref(u, coef.shape[0] + 1, history, squash)  # (B, P - 1, H, L)
    return y + torch.einsum("pch,bphl->bchl", coef, v)


def kb_convolution(
    u: torch.Tensor,
    k: torch.Tensor,
    kp: torch.Tensor,
    history: torch.Tensor | None = None,
    squash: str | None = None,
    kp_reverse: torch.Tensor | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The KB layer's convolution: y = k * u + sum_p kp[p - 2] * v^(p), every signal with its own
    kernel, summed before one inverse FFT (`fftconv_sum`).

    u (B, H, L); k (C, H, L) causal, or (C, H, 2L) two-sided (see `bidirectional_kernel`); kp
    (P - 1, C, H, L) the kernels C A_bar^l B_bar^p; kp_reverse (P - 1, C, H, L): those of the anti-causal
    half of a bidirectional layer, applied to the following-input products w^(p) (k is then two-sided).
    Returns (y (B, C, H, L), [v^(2), ..., v^(P)]): the causal signals also drive the next state."""
    P = kp.shape[0] + 1
    v = correlations(u, P, history, squash)
    kf = kp if kp_reverse is None else F.pad(kp, (0, u.shape[-1]))
    signals, kernels = [u, *v], [k, *kf.unbind(0)]
    if kp_reverse is not None:
        signals += anticorrelations(u, P, squash)
        kernels += anticausal_kernel(kp_reverse).unbind(0)
    return fftconv_sum(signals, kernels), v


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
