"""Discretization of x' = A x + B u with step size dt.

Diagonal systems (A given by its diagonal, any leading shape broadcasting against dt):
    zoh:      A_bar = exp(dt A),                    B_bar = (exp(dt A) - 1) / A * B
    bilinear: A_bar = (1 + dt/2 A) / (1 - dt/2 A),  B_bar = dt B / (1 - dt/2 A)
Dense systems (A of shape (..., N, N)), generalized bilinear transform with parameter alpha
(0 = forward Euler, 1/2 = bilinear, 1 = backward Euler):
    A_bar = (I - alpha dt A)^{-1} (I + (1 - alpha) dt A),  B_bar = dt (I - alpha dt A)^{-1} B
and zero-order hold via the matrix exponential of the augmented matrix [[A, B], [0, 0]].
"""

from __future__ import annotations

import torch

DISCRETIZATIONS = ("zoh", "bilinear")


def check_disc(disc: str, allowed: tuple[str, ...] = DISCRETIZATIONS) -> None:
    if disc not in allowed:
        raise ValueError(f"unknown discretization {disc!r}; expected one of {allowed}")


def discretize_zoh(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold for diagonal A. Shapes broadcast: A, B (..., N), dt (..., 1)."""
    dtA = dt * A
    dA = torch.exp(dtA)
    return dA, torch.expm1(dtA) / A * B


def discretize_bilinear(
    A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear (Tustin) transform for diagonal A. Shapes broadcast: A, B (..., N), dt (..., 1)."""
    inv = 1.0 / (1.0 - dt / 2 * A)
    return (1.0 + dt / 2 * A) * inv, dt * B * inv


def discretize_diag(disc: str, A, B, dt):
    check_disc(disc)
    return (discretize_zoh if disc == "zoh" else discretize_bilinear)(A, B, dt)


def discretize_gbt(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor, alpha: float = 0.5):
    """Generalized bilinear transform for dense A (..., N, N), B (..., N), dt (...)."""
    eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
    dt = dt[..., None, None]
    lhs = eye - alpha * dt * A
    dA = torch.linalg.solve(lhs, eye + (1 - alpha) * dt * A)
    dB = torch.linalg.solve(lhs, dt[..., 0] * B)
    return dA, dB


def discretize_dense_zoh(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor):
    """Zero-order hold for dense A: exp([[A, B], [0, 0]] dt) = [[A_bar, B_bar], [0, 1]]."""
    N = A.shape[-1]
    B = B.expand(A.shape[:-1])
    top = torch.cat([A, B[..., None]], -1)  # (..., N, N+1)
    aug = torch.cat([top, torch.zeros_like(top[..., :1, :])], -2)  # (..., N+1, N+1)
    E = torch.linalg.matrix_exp(aug * dt[..., None, None])
    return E[..., :N, :N], E[..., :N, N]


def discretize_dense(disc: str, A, B, dt):
    check_disc(disc)
    if disc == "zoh":
        return discretize_dense_zoh(A, B, dt)
    return discretize_gbt(A, B, dt, 0.5)


# ---- DPLR A = Lambda - P P^* in half (conjugate-pair) storage ----------------------------------
# A vector stored as its half x (N/2 modes) stands for [x, conj(x)], so P_i^* x = 2 Re(sum conj(P_i) x).


def _pstar(P: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """P_i^* x for conjugate-symmetric x: (r, H, N2), (..., H, N2) -> (..., r, H), real."""
    return 2 * torch.einsum("rhn,...hn->...rh", P.conj(), x).real


def dplr_bilinear_B(Lambda: torch.Tensor, P: torch.Tensor, B: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    """B_bar = dt (I - dt/2 A)^{-1} B for A = Lambda - P P^*, by Woodbury (no N x N solve).

    With D = 1 - dt/2 Lambda:

        (D + dt/2 P P^*)^{-1} = D^{-1} - D^{-1} P ((2/dt) I + P^* D^{-1} P)^{-1} P^* D^{-1}.
    Lambda (H, N2), P (r, H, N2), B (..., H, N2), dt (H,). Returns (..., H, N2)."""
    Dinv = 1.0 / (1.0 - dt[:, None] / 2 * Lambda)  # (H, N2)
    y = dt[:, None] * B * Dinv
    r = P.shape[0]
    S = _pstar(P, P * Dinv)  # (r, r, H): S[j, i] = P_i^* D^{-1} P_j
    S = S.permute(2, 1, 0) + torch.diag_embed((2.0 / dt)[:, None].expand(-1, r))  # (H, r, r)
    rhs = _pstar(P, y).movedim(-2, -1)[..., None]  # (..., H, r, 1)
    coef = torch.linalg.solve(S.to(rhs.dtype), rhs)[..., 0].movedim(-1, -2)  # (..., r, H)
    return y - Dinv * torch.einsum("rhn,...rh->...hn", P, coef.to(P.dtype))


def dplr_bilinear_B_inverse(
    Lambda: torch.Tensor, P: torch.Tensor, dB: torch.Tensor, dt: torch.Tensor
) -> torch.Tensor:
    """The continuous B with `dplr_bilinear_B(Lambda, P, B, dt) == dB`: B = (1/dt) (I - dt/2 A) B_bar.

    (I - dt/2 A) x = (1 - dt/2 Lambda) x + dt/2 P (P^* x). Shapes as `dplr_bilinear_B`."""
    Mx = (1.0 - dt[:, None] / 2 * Lambda) * dB + dt[:, None] / 2 * torch.einsum(
        "rhn,...rh->...hn", P, _pstar(P, dB).to(P.dtype)
    )
    return Mx / dt[:, None]
