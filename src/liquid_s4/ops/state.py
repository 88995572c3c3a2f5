"""Closed-form state updates, so convolution mode can hand a state to the next chunk.

After L inputs the state of x_k = A_bar x_{k-1} + B_bar u_k started at x_0 is

    x_L = A_bar^L x_0 + sum_{j<L} A_bar^j B_bar u_{L-1-j}

The sum is evaluated in blocks of T steps (the same split l = m T + t as the kernels), so the work
is a few matrix products instead of L sequential steps. Per-sequence lengths are handled by reversing
each sequence within its own length first (`reverse_within`).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from .kernels import block_size


def reverse_within(u: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
    """u_rev[b, ..., j] = u[b, ..., len_b - 1 - j] for j < len_b, else 0. u: (B, ..., L)."""
    if lengths is None:
        return u.flip(-1)
    L = u.shape[-1]
    j = torch.arange(L, device=u.device)
    idx = lengths[:, None] - 1 - j  # (B, L)
    valid = idx >= 0
    idx = idx.clamp(min=0).view(idx.shape[0], *([1] * (u.dim() - 2)), L).expand_as(u)
    return torch.gather(u, -1, idx) * valid.view(idx.shape[0], *([1] * (u.dim() - 2)), L)


def _blocks(u: torch.Tensor, T: int) -> torch.Tensor:
    L = u.shape[-1]
    nb = -(-L // T)
    u = torch.nn.functional.pad(u, (0, nb * T - L))
    return u.unflatten(-1, (nb, T))  # (..., nb, T)


def scan_diag(log_dA: torch.Tensor, u_rev: torch.Tensor) -> torch.Tensor:
    """s[b, h, n] = sum_j exp(j log_dA[h, n]) u_rev[b, h, j]. u_rev: (B, H, L) real -> (B, H, N) complex."""
    L = u_rev.shape[-1]
    T = block_size(L)
    ub = _blocks(u_rev, T).to(log_dA.dtype)  # (B, H, nb, T)
    t = torch.arange(T, device=u_rev.device, dtype=log_dA.real.dtype)
    m = torch.arange(ub.shape[-2], device=u_rev.device, dtype=log_dA.real.dtype) * T
    inner = torch.exp(log_dA[..., None, :] * t[:, None])  # (H, T, N)
    outer = torch.exp(log_dA[..., None, :] * m[:, None])  # (H, nb, N)
    return ((ub @ inner) * outer).sum(-2)  # (B, H, N)


def scan_dense(dA: torch.Tensor, dB: torch.Tensor, u_rev: torch.Tensor) -> torch.Tensor:
    """s[b, h] = sum_j dA[h]^j dB[h] u_rev[b, h, j]. dA (H, M, M), dB (H, M), u_rev (B, H, L) -> (B, H, M)."""
    L = u_rev.shape[-1]
    T = block_size(L)
    R, Ap = dB[..., None], dA  # (H, M, 1)
    while R.shape[-1] < T:
        R = torch.cat([R, Ap @ R], -1)
        Ap = Ap @ Ap
    ub = _blocks(u_rev, R.shape[-1]).to(dA.dtype)  # (B, H, nb, T)
    w = ub @ R.transpose(-1, -2)  # (B, H, nb, M): block sums sum_t A^t B u
    acc = w[..., -1, :]
    for i in range(w.shape[-2] - 2, -1, -1):  # Horner in A^T over the blocks
        acc = w[..., i, :] + (Ap @ acc[..., None])[..., 0]
    return acc


def power_apply(dA: torch.Tensor, x: torch.Tensor, n: torch.Tensor | int) -> torch.Tensor:
    """dA[h]^n_b x[b, h] for dense dA (H, M, M), x (B, H, M), n an int or a (B,) tensor."""
    if isinstance(n, int):
        return (torch.linalg.matrix_power(dA, n) @ x[..., None])[..., 0]
    n = n.to(torch.long)
    P = dA
    while bool((n > 0).any()):
        take = (n % 2 == 1).view(-1, 1, 1)
        x = torch.where(take, (P @ x[..., None])[..., 0], x)
        n = n // 2
        P = P @ P
    return x


class ChunkOperators(NamedTuple):
    """The state part of a chunk of L steps of a discrete system as real linear maps (`DiscreteSSM.
    chunk_operators`), in the real coordinates s of the stored state (the interleaved (Re, Im) pairs of
    a complex state, `torch.view_as_real`; the state itself if it is real), S of them:

        y[c, l] += sum_s G[h, c L + l, s] s0[b, h, s]                  (C A_bar^{l+1} x0, l < L)
        s_L      = Phi[h] s0[b, h] + sum_{i, k} Psi[h, :, i L + k] w_i[b, h, k]   (A_bar^L x0 + inputs)

    with w_0 = u (B, H, L) and w_i (i >= 1) the extra inputs of a KB layer (v_p, as `next_state`).
    Built once for a chunk length, they make state passing three batched products per chunk (laid
    out for `torch.bmm` over the channels h).
    """

    G: torch.Tensor  # (H, Ch * L, S)
    Phi: torch.Tensor  # (H, S, S)
    Psi: torch.Tensor  # (H, S, (1 + extra inputs) * L)


def real_coordinates(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N) state -> (B, H, S) real coordinates (interleaved (Re, Im) of a complex state)."""
    return torch.view_as_real(x).flatten(-2) if x.is_complex() else x


def from_real_coordinates(s: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Inverse of `real_coordinates` for a state shaped and typed like `like`."""
    return torch.view_as_complex(s.unflatten(-1, (-1, 2)).contiguous()) if like.is_complex() else s


def apply_chunk_operators(ops: ChunkOperators, y: torch.Tensor, x0: torch.Tensor, inputs) -> tuple:
    """(y + the initial state's output, the state after the chunk) for y (B, Ch, H, L), the stored state
    x0 (B, H, N) and inputs = [u, *extra] ((B, H, L) each), by the maps of `ChunkOperators`."""
    B, Ch, H, L = y.shape
    s0 = real_coordinates(x0).to(ops.G.dtype).permute(1, 2, 0)  # (H, S, B)
    y = y + torch.bmm(ops.G, s0).view(H, Ch, L, B).permute(3, 1, 0, 2)
    w = inputs[0] if len(inputs) == 1 else torch.cat(inputs, -1)  # (B, H, E L)
    s = torch.baddbmm(torch.bmm(ops.Phi, s0), ops.Psi, w.to(ops.Psi.dtype).permute(1, 2, 0))  # (H, S, B)
    return y, from_real_coordinates(s.permute(2, 0, 1), x0)


class DiscreteSSM:
    """A discretized SSM in the coordinates where a layer keeps its state.

    diagonal: dA (H, N) with log_dA its logarithm, dB (H, N);
    dense:    dA (H, M, M), dB (H, M).
    With conj=True the stored state x (.., N) is half of a conjugate-symmetric state [x, conj(x)]
    (M = 2N for dense systems) and the output is y = 2 Re(C x); otherwise y = C x (real).
    C: (Ch, H, N) for the stored half (conj) or (Ch, H, M).

    liquid_degree P (>= 2, or None): the system of a liquid layer (see `liquid_s4.ops.liquid`), which
    also carries the input vectors of the liquid terms, liquid_B = B_bar^p for p = 2..P ((P-1, H, .),
    laid out like dB), and their read-outs liquid_coef = C B_bar^p ((P-1, Ch, H)). Both are None
    for a plain system.
    """

    def __init__(
        self, dA, dB, C, *, diagonal: bool, conj: bool, log_dA=None, liquid_degree: int | None = None
    ):
        self.dA, self.dB, self.C = dA, dB, C
        self.diagonal, self.conj = diagonal, conj
        if diagonal and log_dA is None:
            log_dA = torch.log(dA)
        self.log_dA = log_dA
        self.N = C.shape[-1]
        self.liquid_B: torch.Tensor | None = None
        self.liquid_coef: torch.Tensor | None = None
        if liquid_degree is not None:
            self.liquid_B = self.powers_of_B(liquid_degree)
            self.liquid_coef = self.output(self.stored(self.liquid_B))

    def _full(self, v: torch.Tensor) -> torch.Tensor:
        return torch.cat([v, v.conj()], -1) if self.conj and not self.diagonal else v

    def _half(self, v: torch.Tensor) -> torch.Tensor:
        return v[..., : self.N]

    def output(self, x: torch.Tensor) -> torch.Tensor:
        """y[b, c, h] from the state x (B, H, N)."""
        y = (self.C * x[:, None]).sum(-1)  # (B, Ch, H); cheaper than einsum for one step's small tensors
        return 2 * y.real if self.conj else y

    def stored(self, v: torch.Tensor) -> torch.Tensor:
        """An input vector in the layout of the stored state (the first half for dense conj systems)."""
        return self._half(v) if self.conj and not self.diagonal else v

    def powers_of_B(self, degree: int) -> torch.Tensor:
        """B_bar^p (elementwise, in the state coordinates) for p = 2..degree: (degree - 1, H, .), laid out
        like dB."""
        return torch.stack([self.dB**p for p in range(2, degree + 1)])

    def step(self, x: torch.Tensor, u: torch.Tensor, extra=None) -> torch.Tensor:
        """x_k = A_bar x_{k-1} + B_bar u_k (+ sum_p B_p v_p with extra = (B_p (S, H, .), v (B, S, H))).
        x (B, H, N), u (B, H)."""
        if self.diagonal:
            x = self.dA * x + self.dB * u[..., None]
        else:
            rows = self.dA[:, : self.N]  # only the stored half of the new state is needed
            Ax = torch.bmm(self._full(x).transpose(0, 1), rows.mT).transpose(
                0, 1
            )  # (B, H, N): one (B x M)(M x N) product per channel
            x = torch.addcmul(Ax, self.stored(self.dB), u[..., None])
        if extra is not None:
            Bp, v = extra
            x = x + torch.einsum("shn,bsh->bhn", self.stored(Bp), v.to(Bp.dtype))
        return x

    def state_output(self, x0: torch.Tensor, L: int) -> torch.Tensor:
        """Contribution of the initial state to y_l: C A_bar^{l+1} x0, shape (B, Ch, H, L)."""
        from .kernels import krylov, vandermonde

        if self.diagonal:
            w = self.C * (self.dA * x0)[:, None]  # (B, Ch, H, N)
            y = vandermonde(w, self.log_dA, L)
            return y if self.conj else y / 2  # vandermonde returns 2 Re(.)
        b = (self.dA @ self._full(x0)[..., None])[..., 0]
        y = krylov(self.dA, b, self._full(self.C), L)
        return y.real if y.is_complex() else y

    def impulse_states(self, b: torch.Tensor, L: int) -> torch.Tensor:
        """The stored states A_bar^l b for l < L (an input vector b laid out like dB), (H, N, L)."""
        if self.diagonal:
            return torch.exp(torch.arange(L, device=b.device) * self.log_dA[..., None]) * b[..., None]
        from .kernels import krylov

        rows = torch.eye(self.dA.shape[-1], dtype=self.dA.dtype, device=self.dA.device)[: self.N]
        return krylov(self.dA, b, rows[:, None].expand(-1, self.dA.shape[0], -1), L).transpose(0, 1)

    def chunk_operators(self, L: int, extra_B: torch.Tensor | None = None) -> ChunkOperators:
        """The maps of `ChunkOperators` for chunks of L steps; extra_B (S, H, .): the vectors of extra
        inputs (a KB layer's liquid_B). Computed from `state_output`, `next_state` and
        `impulse_states` applied to the basis of the real coordinates."""
        N, H = self.N, self.C.shape[1]
        like = self.dA if self.diagonal else self.dA[..., 0]  # (H, N) or (H, M): the state's dtype
        S = 2 * N if like.is_complex() else N
        basis = torch.zeros(S, H, N, dtype=like.dtype, device=like.device)
        for i in range(S):
            basis[i, :, i // 2 if like.is_complex() else i] = (1j if i % 2 else 1) if like.is_complex() else 1
        if self.diagonal:  # directly from the powers dA^(l+1): the basis needs no pass over L
            powers = torch.exp(torch.arange(1, L + 1, device=like.device) * self.log_dA[..., None])
            w = (self.C[..., None] * powers).transpose(-1, -2)  # (Ch, H, L, N): C dA^(l+1)
            f = 2 if self.conj else 1  # y = 2 Re(C x) for a conjugate-symmetric state, else Re(C x)
            G = f * (torch.stack([w.real, -w.imag], -1).flatten(-2) if like.is_complex() else w.real)
            G = G.transpose(0, 1).flatten(1, 2)  # (H, Ch L, S)
            end = powers[..., -1] * basis  # (S, H, N): dA^L applied to the basis
        else:
            G = self.state_output(basis, L).permute(2, 1, 3, 0).flatten(1, 2)  # (H, Ch L, S)
            end = power_apply(self.dA, self._full(basis), L)
            end = self._half(end) if self.conj else end
        Phi = real_coordinates(end).permute(1, 2, 0)  # (H, S_out, S_in)
        vectors = [self.dB] + ([] if extra_B is None else list(extra_B))
        Psi = [
            real_coordinates(self.impulse_states(b, L).flip(-1).transpose(-1, -2)).transpose(-1, -2)
            for b in vectors
        ]  # column k: A_bar^(L-1-k) b, the input at step k seen at the end of the chunk
        real = basis.real.dtype
        return ChunkOperators(G.to(real).contiguous(), Phi.to(real).contiguous(), torch.cat(Psi, -1).to(real))

    def next_state(self, u: torch.Tensor, x0: torch.Tensor, lengths=None, extra=None) -> torch.Tensor:
        """State after the inputs u (B, H, L) (each sequence up to its length), started at x0.
        extra = (B_p (S, H, .), [v_p (B, H, L)] * S): further inputs sum_p B_p v_p, as in `step`."""
        L = u.shape[-1]
        n = L if lengths is None else lengths
        inputs = [(self.dB, u)] + ([] if extra is None else list(zip(extra[0], extra[1], strict=True)))
        if self.diagonal:
            steps = n if isinstance(n, int) else n.view(-1, 1, 1)
            x = torch.exp(steps * self.log_dA) * x0
            for b, s in inputs:
                x = x + b * scan_diag(self.log_dA, reverse_within(s, lengths))
            return x
        x = power_apply(self.dA, self._full(x0), n)
        for b, s in inputs:
            x = x + scan_dense(self.dA, b, reverse_within(s, lengths))
        return self._half(x) if self.conj else x
