import pytest
import torch

from liquid_s4.ops.discretize import (
    discretize_bilinear,
    discretize_dense,
    discretize_gbt,
    discretize_zoh,
    dplr_bilinear_B,
    dplr_bilinear_B_inverse,
)
from liquid_s4.ops.hippo import transition


def test_diagonal_zoh_matches_matrix_exponential():
    A = torch.complex(-torch.rand(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64))
    B = torch.randn(5, dtype=torch.complex128)
    dt = torch.tensor([0.3], dtype=torch.float64)
    dA, dB = discretize_zoh(A, B, dt)
    E = torch.linalg.matrix_exp(torch.diag(A) * dt)
    assert torch.allclose(torch.diag(dA), E)
    assert torch.allclose(dB, torch.linalg.solve(torch.diag(A), (E - torch.eye(5)) @ B))


def test_diagonal_bilinear_matches_dense_gbt():
    A = torch.complex(-torch.rand(5, dtype=torch.float64), torch.randn(5, dtype=torch.float64))
    B = torch.randn(5, dtype=torch.complex128)
    dt = torch.tensor(0.2, dtype=torch.float64)
    dA, dB = discretize_bilinear(A, B, dt)
    gA, gB = discretize_gbt(torch.diag(A), B, dt, 0.5)
    assert torch.allclose(torch.diag(dA), gA) and torch.allclose(dB, gB)


def test_gbt_euler_limits():
    A, B = transition("legs", 6)
    dt = torch.tensor(0.01, dtype=torch.float64)
    fA, fB = discretize_gbt(A, B, dt, 0.0)
    assert torch.allclose(fA, torch.eye(6, dtype=torch.float64) + dt * A) and torch.allclose(fB, dt * B)
    bA, _ = discretize_gbt(A, B, dt, 1.0)
    assert torch.allclose(bA, torch.linalg.inv(torch.eye(6, dtype=torch.float64) - dt * A))


def test_dense_zoh_integrates_the_ode():
    # x' = A x + B with constant input 1 over one step, integrated by many small Euler steps
    A, B = transition("legt", 4)
    dt = torch.tensor(0.05, dtype=torch.float64)
    dA, dB = discretize_dense("zoh", A, B, dt)
    x = torch.zeros(4, dtype=torch.float64)
    n = 20000
    for _ in range(n):
        x = x + dt / n * (A @ x + B)
    assert torch.allclose(dB, x, atol=1e-6)
    assert torch.allclose(dA, torch.linalg.matrix_exp(A * dt))


def _dplr(init, N=8, H=3):
    from liquid_s4.ops.hippo import nplr

    lam, P, B, _ = nplr(init, N)
    lam = lam.expand(H, -1) + 0.1j * torch.randn(H, N // 2, dtype=torch.float64)  # channels differ
    P = P[:, None].expand(-1, H, -1).clone()
    return lam, P, B.expand(H, -1).clone(), 0.05 + torch.rand(H, dtype=torch.float64)


def _full(v):
    return torch.cat([v, v.conj()], -1)


@pytest.mark.parametrize("init", ["legs", "legt", "lagt", "fout"])
def test_dplr_bilinear_B_matches_dense_solve(init):
    """Woodbury B_bar (rank 1 and 2) against the dense bilinear transform of the full 2*(N/2) system."""
    lam, P, B, dt = _dplr(init)
    A = torch.diag_embed(_full(lam)) - torch.einsum("rhn,rhm->hnm", _full(P), _full(P).conj())
    _, dB = discretize_gbt(A, _full(B), dt)
    Bs = torch.stack([B, torch.randn_like(B)])
    dBs = dplr_bilinear_B(lam, P, Bs, dt)
    assert torch.allclose(dBs[0], dB[:, : B.shape[-1]], atol=1e-12)
    assert torch.allclose(dplr_bilinear_B_inverse(lam, P, dBs, dt), Bs, atol=1e-12)


def test_dplr_bilinear_B_gradients():
    lam, P, B, dt = _dplr("legs", N=4, H=2)
    args = [t.clone().requires_grad_() for t in (lam, P, B, dt)]
    assert torch.autograd.gradcheck(dplr_bilinear_B, args)
    assert torch.autograd.gradcheck(dplr_bilinear_B_inverse, args)
