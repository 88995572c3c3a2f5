"""Fast single-step recurrences for inference, beside their reference `DiscreteSSM.step`.

Both forms keep the state as N/2 complex modes (the stored half of conjugate pairs) and do O(N)
work per channel and step in a handful of elementwise passes: at batch 1 a step costs a few
tensor-op launches, at large batch a few passes over the state. They are built once (under
no_grad) from the discrete system and are not differentiable; `DiscreteSSM.step` is the
differentiable reference they are tested against (tests/ops/test_recurrence.py).

Two ways to step: `step` then `output` (elementwise passes; best at small batch), or `advance`, which
takes every dot product from the previous state in one batched matrix product and applies every
update in a second (about three passes over the state whatever the rank of P or the number of extra
inputs; best for many streams at once, e.g. S4 at batch 64). `advance_from_batch` says from which
batch size layers use it.

Real views: for complex z, view_as_real(z) interleaves (Re, Im) into a (..., 2n) real vector. For
real w of the same layout, sum(w * view_as_real(z)) = Re(sum(conj(w_c) z)) with w_c the complex
vector w stands for; that is how 2 Re(C x) and P^* x = 2 Re(sum conj(P) x) are read out with one
real dot product per channel, and why the inputs are added in place on the real view.
"""

from __future__ import annotations

import torch

_REAL_DTYPE = {torch.complex64: torch.float32, torch.complex128: torch.float64}


def real_view(z: torch.Tensor) -> torch.Tensor:
    """(..., n) complex -> (..., 2n) real view (interleaved Re, Im). With a unit stride along n (every
    state and slice of a state) one reinterpreting view, cheaper than view_as_real(z).flatten(-2)
    (which counts at batch 1). Otherwise a real copy: only for reading
    (the setup vectors); every tensor written through this view has a unit stride."""
    if z.stride(-1) == 1:
        return z.view(_REAL_DTYPE[z.dtype])
    return torch.view_as_real(z).flatten(-2)


def _rdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """<a, b> = Re sum_n conj(a) b over the last axis of complex a, b: the dot product of their real views."""
    return (a.conj() * b).real.sum(-1)


def _gram(rows, cols) -> torch.Tensor:
    """(H, len(rows), len(cols), 1) real: <rows[i], cols[k]> for (H, n) complex vectors."""
    return torch.stack([torch.stack([_rdot(a, b) for b in cols], -1) for a in rows], 1)[..., None]


def _dot(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """sum(x * w, -1) for real x, w in one pass without the product (vecdot)."""
    return torch.linalg.vecdot(x, w)


class DiagonalRecurrence:
    """x_k = A_bar x_{k-1} + B_bar u_k (+ sum_p B_p v_k^(p)),  y_k = 2 Re(C x_k), all diagonal.

    dA, dB (H, n) complex; C (Ch, H, n); extra_B (S, H, n) or None: the vectors B_p of extra
    inputs (the liquid B_bar^p of a KB layer). Reference: `DiscreteSSM.step` / `.output`.
    """

    # the smallest batch for which layers step with `advance` instead of `step` + `output` (None: never).
    # Diagonal steps are three passes either way; `advance` reads y with a batched product instead of a
    # product-and-sum pass: equal at small batch, ahead from 16 (benchmarks/bench_model_step.py).
    advance_from_batch: int | None = 16

    def __init__(
        self, dA: torch.Tensor, dB: torch.Tensor, C: torch.Tensor, extra_B: torch.Tensor | None = None
    ):
        self.dA = dA.contiguous()
        self.dB = real_view(dB.contiguous())  # (H, 2n)
        W = real_view(2 * C.conj().contiguous())  # (Ch, H, 2n): <W, x> = 2 Re(C x)
        self.W = W[0] if W.shape[0] == 1 else W[:, None]  # (H, 2n) or (Ch, 1, H, 2n)
        self.extra_B = None if extra_B is None else real_view(extra_B.contiguous())  # (S, H, 2n)
        if type(self) is DiagonalRecurrence:
            wide = torch.complex128
            self._prepare_advance(
                dA.to(wide),
                [dB.to(wide), *([] if extra_B is None else extra_B.to(wide))],
                2 * C.conj().to(wide),
            )

    def _prepare_advance(self, alpha, ups, Wc, P=None):
        """Set up `advance` (in float64; stored in the state's precision). The step is
        x' = alpha x + sum_k c_k ups[k] with real coefficients c = [u, (<P, x>, <P, w>,) v], and
        y = <Wc, x'>. Every <a, x'> is <conj(alpha) a, x> plus a combination of the c_k, so all dot
        products are read from x (real views: <a, z> = Re sum conj(a) z). With P (r, H, n) (DPLR),
        ups = [gamma, beta_1..beta_r, delta_1..delta_r, extra inputs...]."""
        cdtype, rdtype = self.dA.dtype, self.dA.dtype.to_real()
        r = 0 if P is None else P.shape[0]
        dots = [*([] if P is None else [*P, *(alpha.conj() * P)]), *(alpha.conj() * Wc)]
        self._r = r
        self._alpha = alpha[:, None].to(cdtype)  # (H, 1, n)
        self._V = torch.stack([real_view(d) for d in dots], 1).to(rdtype)  # (H, R, 2n): read from x
        self._U = torch.stack([real_view(c) for c in ups], 1).to(rdtype)  # (H, K, 2n): added to alpha x
        self._My = _gram(Wc, ups).to(rdtype)  # (H, Ch, K, 1): y = <Wc, alpha x> + sum_k c_k <Wc, ups[k]>
        if (
            r
        ):  # <P_i, w> with w = alpha x + gamma u + sum_j beta_j <P_j, x>: ups[0] = gamma, ups[1:1+r] = beta
            self._Mp = _gram(P, ups[: 1 + r]).to(rdtype)  # (H, r, 1 + r, 1)

    def advance(
        self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None = None, out: torch.Tensor | None = None
    ):
        """`step` and `output` together, for batched streams: (next x, y = output(next x)).

        All dot products come from x in one batched matrix product and all updates go in as a second
        one, so a step makes about three passes over the state whatever the rank or the extra inputs.
        x (B, H, n) in any layout; the next state is a (B, H, n) view of an (H, B, n) buffer, the
        layout this reads and writes fastest (feed it back as it is). out: an (H, B, n) tensor (e.g. a
        slice of a larger state) to write the next state into instead."""
        B, H, n = x.shape
        xt = x.transpose(0, 1)  # (H, B, n)
        Z = torch.bmm(self._V, real_view(xt).transpose(1, 2))  # (H, R, B): every dot product with x
        r = self._r
        cols = [u.t()[:, None]]  # (H, 1, B); the small combinations run along B (contiguous)
        if r:
            px = Z[:, :r]
            pw = Z[:, r : 2 * r] + (self._Mp * torch.cat([cols[0], px], 1)[:, None]).sum(2)  # (H, r, B)
            cols += [px, pw]
        if v is not None:
            cols.append(v.permute(2, 1, 0))  # (H, S, B)
        coef = (
            cols[0].contiguous() if len(cols) == 1 else torch.cat(cols, 1)
        )  # (H, K, B); contiguous: the batched
        # products below take a slow path when the batch (H) axis has unit stride, as u.t() has
        y = Z[:, 2 * r :] + (self._My * coef[:, None]).sum(2)  # (H, Ch, B)
        if out is None:
            w = torch.mul(self._alpha, xt, out=x.new_empty(H, B, n))  # alpha x, written (H, B, n)
            real_view(w).baddbmm_(coef.transpose(1, 2), self._U)
        else:  # a strided destination: the batched product goes to a temporary (in place it would copy
            # twice), added in the same pass as alpha x
            upd = torch.bmm(coef.transpose(1, 2), self._U)  # (H, B, 2n) real
            w = torch.addcmul(upd.view(x.dtype), self._alpha, xt, out=out)
        return w.transpose(0, 1), y.permute(2, 1, 0).reshape(B, -1)

    def step(
        self, x: torch.Tensor, u: torch.Tensor, v: torch.Tensor | None = None, out: torch.Tensor | None = None
    ):
        """x (B, H, n) complex, u (B, H) real, v (B, S, H) real extra inputs -> next x (written to `out`
        if given)."""
        x = torch.mul(self.dA, x, out=out)  # (B, H, n)
        xr = real_view(x)
        xr.addcmul_(self.dB, u[..., None])
        if v is not None:
            for p in range(v.shape[1]):
                xr.addcmul_(self.extra_B[p], v[:, p, :, None])
        return x

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """y = 2 Re(C x): (B, Ch * H), channel-major."""
        y = _dot(real_view(x), self.W)  # (B, H) or (Ch, B, H)
        return y if y.dim() == 2 else y.transpose(0, 1).flatten(1)


class DPLRRecurrence(DiagonalRecurrence):
    """The bilinear step of A = Lambda - P P^* without forming A_bar (the S4 recurrence in O(N)):

        x_k = A_1 (A_0 x_{k-1} + dt B u_k),   A_0 = I + dt/2 A,   A_1 = (I - dt/2 A)^{-1}

    With D = 1 - dt/2 Lambda, Woodbury gives A_1 z = D^{-1} z - D^{-1} P S^{-1} P^* D^{-1} z with
    S = (2/dt) I + P^* D^{-1} P (r x r, real for conjugate-symmetric vectors), so a step is

        w   = alpha x + sum_i beta_i (P_i^* x) + gamma u      alpha = (1 + dt/2 Lambda)/D,
        x_k = w + sum_i delta_i (P_i^* w)                       beta_i = -(dt/2) P_i / D, gamma = dt B / D,
                                                                delta_i = -sum_j (P_j / D) (S^{-1})_ji

    Lambda, B (H, n); P (r, H, n); C (Ch, H, n) (the true C in this basis); dt (H,). Extra
    inputs (extra_B: discrete vectors, e.g. B_bar^p) are added after the step, as in
    `DiagonalRecurrence`. Reference: the dense `DiscreteSSM` of `S4.discrete`.
    """

    # `step` makes ~8 passes over the state (three dot products, four updates); `advance` three: the
    # batched products pay off from about batch 32 (benchmarks/bench_model_step.py).
    advance_from_batch = 32

    def __init__(self, Lambda, P, B, C, dt, extra_B=None):
        cdtype = Lambda.dtype
        Lambda, P, B = (t.to(torch.complex128) for t in (Lambda, P, B))  # the setup in float64, once
        dt = dt.to(torch.float64)[:, None]  # (H, 1)
        Dinv = 1.0 / (1.0 - dt / 2 * Lambda)
        PD = P * Dinv  # (r, H, n)
        S = 2 * torch.einsum("ihn,jhn->hij", P.conj(), PD).real  # (H, r, r): P_i^* D^{-1} P_j
        S = S + torch.diag_embed((2.0 / dt).expand(-1, P.shape[0]))
        delta = -torch.einsum("jhn,hji->ihn", PD, torch.linalg.inv(S).to(PD.dtype))  # (r, H, n)
        # alpha and gamma take the places of A_bar and B_bar of the diagonal step
        alpha, gamma, beta = (1.0 + dt / 2 * Lambda) * Dinv, dt * B * Dinv, -dt * PD
        super().__init__(alpha.to(cdtype), gamma.to(cdtype), C, extra_B)
        # lists of r (H, 2n) real vectors (not one tensor: iterating a tensor costs a view per row and step)
        self.P = list(real_view(P.to(cdtype).contiguous()))  # <P_i, x> = Re(P_i^* x_half) = (P_i^* x) / 2
        self.beta = list(real_view(beta.to(cdtype).contiguous()))  # times <P_i, x> = (P_i^* x)/2
        self.delta = list(real_view((2 * delta).to(cdtype).contiguous()))
        E = [] if extra_B is None else list(extra_B.to(torch.complex128))
        self._prepare_advance(alpha, [gamma, *beta, *(2 * delta), *E], 2 * C.to(torch.complex128).conj(), P)

    def step(self, x, u, v=None, out=None):
        xr = real_view(x)
        px = [_dot(xr, P).unsqueeze_(-1) for P in self.P]  # <P_i, x>: (B, H, 1) each
        w = torch.mul(self.dA, x, out=out)  # alpha x
        wr = real_view(w)
        wr.addcmul_(self.dB, u[..., None])  # + gamma u
        for beta, p in zip(self.beta, px):
            wr.addcmul_(beta, p)
        pw = [_dot(wr, P).unsqueeze_(-1) for P in self.P]
        for delta, p in zip(self.delta, pw):
            wr.addcmul_(delta, p)
        if v is not None:
            for p in range(v.shape[1]):
                wr.addcmul_(self.extra_B[p], v[:, p, :, None])
        return w
