import math

import pytest
import torch

from liquid_s4.ops.hippo import MEASURES, low_rank_correction, nplr, transition


def test_legs_matches_definition():
    A, B = transition("legs", 3)
    s = math.sqrt
    expected = -torch.tensor([[1, 0, 0], [s(3), 2, 0], [s(5), s(15), 3]], dtype=torch.float64)
    assert torch.allclose(A, expected)
    assert torch.allclose(B, torch.tensor([1, s(3), s(5)], dtype=torch.float64))


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [2, 8, 64])
def test_low_rank_correction_makes_normal(measure, N):
    A, _ = transition(measure, N)
    P = low_rank_correction(measure, N)
    AP = A + P.T @ P
    assert torch.allclose(AP @ AP.T, AP.T @ AP, atol=1e-9 * N**2)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("N", [2, 8, 64])
def test_nplr_reconstructs_hippo(measure, N):
    A, B = transition(measure, N)
    Lambda, P, Bt, V = nplr(measure, N)
    assert Lambda.shape == (N // 2,) and V.shape == (N, N // 2) and Bt.shape == (N // 2,)
    Vf = torch.cat([V, V.conj()], 1)
    Lf, Pf, Bf = (torch.cat([x, x.conj()], -1) for x in (Lambda, P, Bt))
    assert torch.allclose(Vf.conj().T @ Vf, torch.eye(N, dtype=torch.complex128), atol=1e-10)
    rebuilt = Vf @ (torch.diag(Lf) - Pf.T @ Pf.conj()) @ Vf.conj().T
    assert (rebuilt - A).abs().max() < 1e-11 * max(1.0, A.abs().max())
    assert (Vf @ Bf - B).abs().max() < 1e-11 * N
    assert (Lambda.imag <= 1e-12).all()


def test_legs_real_part_is_minus_half():
    Lambda, *_ = nplr("legs", 64)
    assert torch.allclose(Lambda.real, torch.full((32,), -0.5, dtype=torch.float64))


def test_errors():
    with pytest.raises(ValueError, match="unknown HiPPO measure"):
        transition("legx", 4)
    with pytest.raises(ValueError, match="even"):
        nplr("legs", 5)
