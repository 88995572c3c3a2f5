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


def discretize_bilinear(A: torch.Tensor, B: torch.Tensor, dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
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
