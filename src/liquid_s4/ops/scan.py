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
SCAN_FORMS = ("affine", "zoh", "bilinear", "ode", "split")


def phi(w: torch.Tensor) -> torch.Tensor:
    """(e^w - 1) / w, 1 at w = 0 (complex w)."""
    small = w.abs() < 1e-3
    ws = torch.where(small, torch.ones_like(w), w)
    return torch.where(small, 1 + w * (1 / 2 + w * (1 / 6 + w / 24)), torch.expm1(ws) / ws)


def liquid_coefficients(form: str, a, b, bt, d, s, u) -> tuple[torch.Tensor, torch.Tensor]:
    """The coefficients (f_k, g_k) of one step x_k = f_k x_{k-1} + g_k of the liquid recurrence of a
    diagonal SSM, for a mode with parameters a, b (complex) and a step with input u_k, squashed input
    s_k (u_k itself, or tanh(u_k)) and step size d_k > 0 (shapes broadcast):

        affine    f = a + bt s,                g = b u       (a = A_bar, b = B_bar, bt already discrete)
        zoh       f = A_bar + B_bar s,         g = B_bar u   A_bar = e^{d a}, B_bar = (e^{d a} - 1)/a b
        bilinear  f = A_bar + B_bar s,         g = B_bar u   A_bar = (1 + d a/2)/(1 - d a/2),
                                                             B_bar = d b / (1 - d a/2)
        ode       f = e^{d z},                 g = (e^{d z} - 1)/z b u,    z = a + bt s
        split     f = e^{d a} (1 + d bt s),    g = (e^{d a} - 1)/a b u

    "zoh" and "bilinear" (and "affine" with bt = b) are the paper's discrete liquid recurrence
    x_k = (A_bar + B_bar s_k) x_{k-1} + B_bar u_k (discretized per step, for per-step step sizes).
    "ode" is the exact solution over the step of the continuous liquid system dx/dt = (a + bt s) x + b u
    with the input held (zero-order hold): |f| = e^{d Re z} < 1 whenever Re(a + bt s) < 0 (see
    `stable_liquid_b`). "split" splits that exponential, e^{d (a + bt s)} ~ e^{d a} (1 + d bt s) (equal
    to first order in d), which keeps f affine in s (as cheap as the discrete recurrence) and bounded:
    |f| <= e^{d Re a} (1 + d |bt| |s|) < 1 whenever |bt| < -Re a and |s| <= 1 (see `bounded_liquid_b`)."""
    if form == "affine":
        return a + bt * s, b * u
    if form == "split":
        w = d * a
        dA = torch.exp(w)
        return dA * (1 + d * bt * s), d * phi(w) * b * u
    if form in ("zoh", "bilinear"):
        if form == "zoh":
            w = d * a
            dA, dB = torch.exp(w), d * phi(w) * b
        else:
            den = 1 - d * a / 2
            dA, dB = (1 + d * a / 2) / den, d * b / den
        return dA + dB * s, dB * u
    if form == "ode":
        w = d * (a + bt * s)
        return torch.exp(w), d * phi(w) * b * u
    raise ValueError(f"unknown liquid scan form {form!r}; expected one of {SCAN_FORMS}")


def stable_liquid_b(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bt = rho tanh(Re b / rho) + i Im b with rho = -Re a: the input vector of the "ode" form's
    transition, whose real part is bounded by |Re bt| < -Re a. With |s| < 1 (s = tanh u) this gives
    Re(a + bt s) < 0 for every input, so |f| = e^{d Re z} < 1 at every step: no input can make the
    state grow (in floating point tanh and the bound can round to equality for inputs beyond about
    19 or |Re b| beyond about 19 rho, giving |f| <= 1: still no growth). Close to b where
    |Re b| << -Re a. Needs Re a < 0 (the layers' A)."""
    rho = -a.real
    return torch.complex(rho * torch.tanh(b.real / rho), b.imag)


def bounded_liquid_b(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """bt = b rho tanh(|b| / rho) / |b| with rho = -Re a: b's direction with a magnitude below -Re a, the
    transition vector of the "split" form. With |s| <= 1 (s = tanh u) its transition has |f| <=
    e^{d Re a} (1 + d |bt|) < e^{d (Re a + |bt|)} <= 1 for every input and step size (strict even where
    tanh rounds to 1): the state cannot grow. Close to b where |b| << -Re a."""
    rho = -a.real
    r = torch.sqrt(b.real.square() + b.imag.square() + torch.finfo(rho.dtype).tiny)
    return b * (rho * torch.tanh(r / rho) / r)


def naive_liquid_scan(
    form: str, u, d, a, b, bt, C, x0=None, ends=None, squash: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference liquid scan, one step at a time (autograd):

        x_k = f_k x_{k-1} + g_k  (`liquid_coefficients`),   y_k[c] = 2 Re(sum_n C[c, :, n] x_k[n])

    u, d (B, H, L) real (d the step sizes; any value for "affine"); a, b, bt (H, N) complex; C
    (Ch, H, N); x0 (B, H, N) or None (zeros); ends (B,) or None: the returned state is the one after
    ends[b] inputs (default L); squash: s = tanh(u) instead of u ("ode" and "split" always squash).
    Returns (y (B, Ch, H, L), x_end (B, H, N))."""
    B, H, L = u.shape
    x = torch.zeros(B, H, a.shape[-1], dtype=a.dtype, device=u.device) if x0 is None else x0
    ends = torch.full((B,), L, device=u.device) if ends is None else ends
    x_end = torch.where((ends == 0).view(B, 1, 1), x, torch.zeros_like(x))
    s = torch.tanh(u) if squash or form in ("ode", "split") else u
    ys = []
    for k in range(L):
        f, g = liquid_coefficients(form, a, b, bt, d[..., k, None], s[..., k, None], u[..., k, None])
        x = f * x + g
        ys.append(2 * torch.einsum("chn,bhn->bch", C, x).real)
        x_end = torch.where((ends == k + 1).view(B, 1, 1), x, x_end)
    return torch.stack(ys, -1), x_end


class _ChunkLiquidScan(torch.autograd.Function):
    """`chunk_liquid_scan`: blocks of M steps, forward from the first and backward from the last,
    recomputing each block's states from the state saved at its start; the gradients of a block's
    coefficients reach their parameters through autograd on the block's `liquid_coefficients`."""

    @staticmethod
    def forward(ctx, form, squash, M, u, d, a, b, bt, C, x0, ends):
        B, H, L = u.shape
        x = x0
        x_end = torch.where((ends == 0).view(B, 1, 1), x0, torch.zeros_like(x0))
        starts, ys = [], []
        for s0 in range(0, L, M):
            f, g = _block_coefficients(form, squash, u, d, a, b, bt, s0, M)
            starts.append(x)
            xs = _scan_forward(f, g, x, _chunk_size(f.shape[-1]))  # (B, H, N, m)
            ys.append(2 * torch.einsum("chn,bhnm->bchm", C, xs).real)
            x_end = _take_ends(xs, ends, s0, x_end)
            x = xs[..., -1]
        ctx.save_for_backward(u, d, a, b, bt, C, ends, *starts)
        ctx.form, ctx.squash, ctx.M = form, squash, M
        return torch.cat(ys, -1), x_end

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_x_end):
        u, d, a, b, bt, C, ends, *starts = ctx.saved_tensors
        form, squash, M = ctx.form, ctx.squash, ctx.M
        B, H, L = u.shape
        grad_u, grad_d = torch.zeros_like(u), torch.zeros_like(d)
        params = [a, b, bt]
        grads = [torch.zeros_like(t) for t in params]
        grad_C = torch.zeros_like(C)
        grad_y = (
            torch.zeros(B, C.shape[0], H, L, dtype=u.dtype, device=u.device) if grad_y is None else grad_y
        )
        lam_next = None  # dL/dx at the end of the block, through the following blocks
        f_after = None  # the first factor of the following block
        for i in range(len(starts) - 1, -1, -1):
            s0 = i * M
            m = min(M, L - s0)
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_() for t in (u, d, *params)]
                f, g = _block_coefficients(form, squash, *leaves[:2], *leaves[2:], s0, M)
            xs = _scan_forward(f.detach(), g.detach(), starts[i], _chunk_size(m))
            gy = grad_y[..., s0 : s0 + m].to(a.dtype)
            gx = 2 * torch.einsum("chn,bchm->bhnm", C.conj(), gy)  # dL/dx_k from the read-out
            if grad_x_end is not None:  # the state returned after ends[b] inputs
                k = ends - 1 - s0
                inside = (k >= 0) & (k < m)
                if bool(inside.any()):
                    sel = inside.nonzero()[:, 0]
                    gx[sel, :, :, k[sel]] += grad_x_end[sel].to(gx.dtype)
            if lam_next is not None:
                gx[..., -1] += f_after.conj() * lam_next
            lam = _adjoint_scan(f.detach(), gx, _chunk_size(m))
            x_prev = torch.cat([starts[i][..., None], xs[..., :-1]], -1)
            out = torch.autograd.grad(
                (f, g), leaves, (lam * x_prev.conj(), lam), allow_unused=True, materialize_grads=True
            )
            grad_u += out[0]
            grad_d += out[1]
            for acc, gr in zip(grads, out[2:], strict=True):
                acc += gr
            grad_C += 2 * torch.einsum("bchm,bhnm->chn", gy, xs.conj())
            lam_next, f_after = lam[..., 0], f[..., 0].detach()
        grad_x0 = f_after.conj() * lam_next
        if grad_x_end is not None:
            grad_x0 = grad_x0 + torch.where(
                (ends == 0).view(B, 1, 1), grad_x_end, torch.zeros_like(grad_x_end)
            )
        return None, None, None, grad_u, grad_d, *grads, grad_C, grad_x0, None


def _block_coefficients(form, squash, u, d, a, b, bt, s0, M):
    """f, g (B, H, N, m) for the inputs s0 .. s0 + m - 1."""
    ub, db = u[..., s0 : s0 + M, None], d[..., s0 : s0 + M, None]  # (B, H, m, 1)
    s = torch.tanh(ub) if squash or form in ("ode", "split") else ub
    f, g = liquid_coefficients(form, a[:, None], b[:, None], bt[:, None], db, s, ub)
    f, g = torch.broadcast_tensors(f, g)
    return f.transpose(-1, -2), g.transpose(-1, -2)


def _take_ends(xs, ends, s0, x_end):
    """x_end[b] = xs[b, ..., ends[b] - 1 - s0] for the sequences whose end falls in this block."""
    k = ends - 1 - s0
    inside = (k >= 0) & (k < xs.shape[-1])
    idx = k.clamp(0, xs.shape[-1] - 1).view(-1, 1, 1, 1).expand(*xs.shape[:-1], 1)
    return torch.where(inside.view(-1, 1, 1), xs.gather(-1, idx)[..., 0], x_end)


def chunk_liquid_scan(
    form: str, u, d, a, b, bt, C, x0=None, ends=None, squash: bool = False, block: int = 1024
):
    """`naive_liquid_scan` (same arguments) in blocks of `block` steps with `chunk_diag_scan`'s method
    inside each, in PyTorch (any device): the (B, H, N, L) states are never held at once, only one
    block's and the state at each block start. Gradients reach u, d, a, b, bt, C and x0."""
    B, H, L = u.shape
    x0 = torch.zeros(B, H, a.shape[-1], dtype=a.dtype, device=u.device) if x0 is None else x0
    ends = torch.full((B,), L, device=u.device, dtype=torch.long) if ends is None else ends
    return _ChunkLiquidScan.apply(form, bool(squash), int(block), u, d, a, b, bt, C, x0, ends)


def _check_scan_arguments(u, d, a, b, bt, C, x0, ends) -> None:
    """A ValueError unless the shapes fit together (the fused kernels do not check their indices)."""
    if u.dim() != 3 or u.is_complex():
        raise ValueError(f"liquid_scan: u must be real (B, H, L), got {u.dtype} {tuple(u.shape)}")
    B, H, L = u.shape
    N = a.shape[-1] if a.dim() == 2 else -1
    want = {
        "d": (d, (B, H, L)),
        "a": (a, (H, N)),
        "b": (b, (H, N)),
        "bt": (bt, (H, N)),
        "x0": (x0, (B, H, N)),
        "ends": (ends, (B,)),
    }
    for name, (t, shape) in want.items():
        if t is not None and tuple(t.shape) != shape:
            raise ValueError(f"liquid_scan: {name} must have shape {shape}, got {tuple(t.shape)}")
    if C.dim() != 3 or C.shape[0] < 1 or tuple(C.shape[1:]) != (H, N):
        raise ValueError(f"liquid_scan: C must have shape (Ch >= 1, {H}, {N}), got {tuple(C.shape)}")
    if ends is not None and L and (bool((ends < 0).any()) or bool((ends > L).any())):
        raise ValueError(f"liquid_scan: ends must lie in [0, {L}], got {ends.tolist()}")


def liquid_scan(
    form: str,
    u: torch.Tensor,
    d: torch.Tensor,
    a: torch.Tensor,
    b: torch.Tensor,
    bt: torch.Tensor,
    C: torch.Tensor,
    x0: torch.Tensor | None = None,
    ends: torch.Tensor | None = None,
    squash: bool = False,
    impl: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The liquid recurrence of a diagonal SSM, every term (see `naive_liquid_scan` for the arguments
    and `liquid_coefficients` for the forms). impl: "fused" (the numba kernels of
    `liquid_s4.ops.fused_scan`: one pass per channel, CPU only), "chunk" (`chunk_liquid_scan`, PyTorch,
    any device) or "naive"; None picks "fused" for CPU tensors when numba is installed (the `fast`
    extra), else "chunk"."""
    from . import fused_scan

    if form not in SCAN_FORMS:
        raise ValueError(f"unknown liquid scan form {form!r}; expected one of {SCAN_FORMS}")
    _check_scan_arguments(u, d, a, b, bt, C, x0, ends)
    if impl is None:
        impl = "fused" if u.device.type == "cpu" and fused_scan.available() else "chunk"
    B, H, L = u.shape
    if impl == "naive":
        return naive_liquid_scan(form, u, d, a, b, bt, C, x0, ends, squash)
    x0 = torch.zeros(B, H, a.shape[-1], dtype=a.dtype, device=u.device) if x0 is None else x0
    ends = torch.full((B,), L, device=u.device, dtype=torch.long) if ends is None else ends.long()
    if impl == "fused":
        return fused_scan.fused_liquid_scan(
            form, u, d, a, b, bt, C, x0, ends, squash or form in ("ode", "split")
        )
    if impl == "chunk":
        return chunk_liquid_scan(form, u, d, a, b, bt, C, x0, ends, squash)
    raise ValueError(f"unknown impl {impl!r}; expected 'fused', 'chunk', 'naive' or None")
