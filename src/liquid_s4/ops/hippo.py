"""HiPPO transition matrices and their normal-plus-low-rank (NPLR) decomposition.

Convention: continuous-time state space x'(t) = A x(t) + B u(t), indices n, k = 0..N-1.
Everything here is computed in float64 (complex128) and returned as torch tensors.
"""

from __future__ import annotations

import math

import torch

MEASURES = ("legs", "legt", "lagt", "fout")


def _check_measure(measure: str) -> None:
    if measure not in MEASURES:
        raise ValueError(f"unknown HiPPO measure {measure!r}; expected one of {MEASURES}")


def transition(measure: str, N: int) -> tuple[torch.Tensor, torch.Tensor]:
    """HiPPO matrices (A, B) of shape (N, N) and (N,), float64.

    - LegS: A_nk = -sqrt(2n+1) sqrt(2k+1) (n > k), -(n+1) (n = k), 0 (n < k); B_n = sqrt(2n+1).
    - LegT: A_nk = -(1/2) R_n R_k (1 if n >= k else (-1)^(n-k)), R_n = sqrt(2n+1); B = R / 2.
    - LagT: A = I/2 - tril(1), B = 1.
    - FouT: A = pi (-diag(d, 1) + diag(d, -1)) - B B^T, B = [1, 0, sqrt2, 0, sqrt2, ...], with
      d = [0, 0, 1, 0, 2, 0, 3, ...] pairing (cos, sin) coordinates of each frequency.
    """
    _check_measure(measure)
    if N < 1:
        raise ValueError(f"N must be a positive integer, got {N}")
    n = torch.arange(N, dtype=torch.float64)
    R = torch.sqrt(2 * n + 1)
    row, col = n[:, None], n[None, :]
    if measure == "legs":
        A = torch.where(row > col, -R[:, None] * R[None, :], torch.zeros(()))
        A = A - torch.diag(n + 1)
        B = R.clone()
    elif measure == "legt":
        sign = torch.where(row >= col, torch.ones(()), (-1.0) ** (row - col))
        A = -0.5 * R[:, None] * sign * R[None, :]
        B = R / 2
    elif measure == "lagt":
        A = torch.eye(N, dtype=torch.float64) / 2 - torch.tril(torch.ones(N, N, dtype=torch.float64))
        B = torch.ones(N, dtype=torch.float64)
    else:  # fout
        freqs = torch.arange(N // 2, dtype=torch.float64)
        d = torch.stack([torch.zeros(N // 2, dtype=torch.float64), freqs], -1).reshape(-1)[1:]
        skew = torch.zeros(N, N, dtype=torch.float64)
        if N > 1:
            skew = math.pi * (-torch.diag(d[: N - 1], 1) + torch.diag(d[: N - 1], -1))
        B = torch.zeros(N, dtype=torch.float64)
        B[0::2] = math.sqrt(2)
        B[0] = 1.0
        A = skew - B[:, None] * B[None, :]
    return A, B


def low_rank_correction(measure: str, N: int) -> torch.Tensor:
    """P of shape (r, N) such that A + sum_i P_i P_i^T is normal (rank r = 1, or 2 for LegT)."""
    _check_measure(measure)
    n = torch.arange(N, dtype=torch.float64)
    if measure == "legs":
        return torch.sqrt(n + 0.5)[None]
    if measure == "legt":
        R = torch.sqrt(2 * n + 1) / math.sqrt(2)
        even = (n % 2 == 0).to(torch.float64)
        return torch.stack([R * even, R * (1 - even)])
    if measure == "lagt":
        return torch.full((1, N), math.sqrt(0.5), dtype=torch.float64)
    return transition("fout", N)[1][None]


def nplr(measure: str, N: int) -> tuple[torch.Tensor, ...]:
    """Normal plus low-rank form A = V (Lambda - P~ P~^*) V^*, computed in float64.

    AP = A + sum P P^T is normal: AP = c I + S with S skew-symmetric, c = mean(diag AP).
    The eigenvalues of S come in conjugate pairs; we keep the N/2 with negative imaginary part
    (their conjugates complete the spectrum). Returns, for the kept half:

        Lambda (N/2,) complex, P~ = V^* P (r, N/2), B~ = V^* B (N/2,), V (N, N/2)

    The full eigenbasis is [V, conj(V)], the full spectrum [Lambda, conj(Lambda)].
    """
    _check_measure(measure)
    if N < 2 or N % 2:
        raise ValueError(f"the NPLR form pairs conjugate modes, so N must be even and >= 2; got {N}")
    A, B = transition(measure, N)
    P = low_rank_correction(measure, N)
    AP = A + P.T @ P
    c = torch.diagonal(AP).mean()
    S = AP - c * torch.eye(N, dtype=torch.float64)
    if not torch.allclose(S, -S.T, atol=1e-8):
        raise RuntimeError(f"internal error: A + P P^T is not normal for measure {measure!r}")
    mu, V = torch.linalg.eigh(-1j * S.to(torch.complex128))  # S v = i mu v, mu ascending
    V, mu = V[:, : N // 2].clone(), mu[: N // 2].clone()
    if mu[-1].abs() < 1e-8:
        # A zero pair of S (FouT): its two real eigenvectors span a plane; pick v, conj(v) in it.
        if N // 2 > 1 and mu[-2].abs() < 1e-8:
            raise RuntimeError("internal error: more than one zero eigenvalue pair")
        ker = torch.linalg.svd(S)[2][-2:].T.to(torch.complex128)  # real null-space basis (N, 2)
        null = (ker[:, 0] + 1j * ker[:, 1]) / math.sqrt(2)
        V[:, -1] = null
        mu[-1] = 0.0
    Lambda = c + 1j * mu
    Pt = V.conj().T @ P.T.to(torch.complex128)  # (N/2, r)
    Bt = V.conj().T @ B.to(torch.complex128)
    return Lambda, Pt.T.contiguous(), Bt, V
