"""The fast inference steps (`ops.recurrence`) against explicit full-state recurrences in float64:
the whole conjugate-symmetric state [x, conj(x)], dense A_bar from a linear solve, y = Re(C x)."""

import math

import pytest
import torch

from liquid_s4.ops.hippo import MEASURES, nplr
from liquid_s4.ops.recurrence import DiagonalRecurrence, DPLRRecurrence, real_view

from ..reference import _bilinear, full

c128 = torch.complex128


def _explicit(dA, dB, C, u, x0, extra=None):
    """Full-state x_k = dA x_{k-1} + dB u_k (+ sum_p B_p v_p), y_k = Re(C_full x_k) = 2 Re(C x_half);
    dA (H, M, M)."""
    x, ys = full(x0), []
    for k in range(u.shape[1]):
        x = torch.einsum("hmn,bhn->bhm", dA, x) + dB * u[:, k, :, None]
        if extra is not None:
            Bp, v = extra
            x = x + torch.einsum("shm,bsh->bhm", full(Bp), v[:, k].to(c128))
        ys.append(torch.einsum("chm,bhm->bch", full(C), x).real)
    return torch.stack(ys, 1), x[..., : x.shape[-1] // 2]


def _run(rec, u, x0, v=None, out_slot=False, fused=False):
    """Steps of `rec`: `step` + `output`, or `advance` (fused=True), which returns states as
    (B, H, n) views of (H, B, n) buffers and reads them back in that layout. out_slot writes each new
    state into a slice of a wider tensor, as liquid layers do."""
    x, ys = x0, []
    for k in range(u.shape[1]):
        vk = None if v is None else v[:, k]
        shape = (x.shape[1], x.shape[0], x.shape[2] + 2) if fused else (*x.shape[:-1], x.shape[-1] + 2)
        out = torch.empty(shape, dtype=x.dtype)[..., 1:-1] if out_slot else None
        if fused:
            x, y = rec.advance(x, u[:, k], vk, out=out)
            assert x.transpose(0, 1).is_contiguous() or out_slot
        else:
            x = rec.step(x, u[:, k], vk, out=out)
            y = rec.output(x)
        if out_slot:
            assert x.data_ptr() == out.data_ptr()
        ys.append(y.unflatten(1, (-1, u.shape[-1])))
    return torch.stack(ys, 1), x


@pytest.mark.parametrize("fused", [False, True], ids=["step", "advance"])
@pytest.mark.parametrize("Ch", [1, 2])
@pytest.mark.parametrize("with_extra", [False, True])
def test_diagonal_step_equals_explicit_recurrence(Ch, with_extra, fused):
    B, H, n, L, S = 3, 4, 5, 12, 2
    dA = torch.exp(
        torch.complex(-torch.rand(H, n, dtype=torch.float64), torch.randn(H, n, dtype=torch.float64))
    )
    dB, C = torch.randn(H, n, dtype=c128), torch.randn(Ch, H, n, dtype=c128)
    Bp = torch.randn(S, H, n, dtype=c128) if with_extra else None
    u, x0 = torch.randn(B, L, H, dtype=torch.float64), torch.randn(B, H, n, dtype=c128)
    v = torch.randn(B, L, S, H, dtype=torch.float64) if with_extra else None
    y_ref, x_ref = _explicit(torch.diag_embed(full(dA)), full(dB), C, u, x0, (Bp, v) if with_extra else None)
    rec = DiagonalRecurrence(dA, dB, C, Bp)
    for out_slot in (False, True):
        y, x = _run(rec, u, x0, v, out_slot, fused)
        assert torch.allclose(y, y_ref, atol=1e-12) and torch.allclose(x, x_ref, atol=1e-12)


def _dplr(measure, H, n):
    Lambda, P, B, _ = nplr(measure, 2 * n)
    Lambda = torch.complex(Lambda.real.clamp(max=-1e-4), Lambda.imag).expand(H, -1).clone()
    P = P[:, None].expand(-1, H, -1) * (1 + 0.1 * torch.rand(P.shape[0], H, n, dtype=torch.float64))
    B = B.expand(H, -1) * (1 + torch.rand(H, n, dtype=torch.float64))
    dt = torch.exp(torch.empty(H, dtype=torch.float64).uniform_(math.log(1e-3), math.log(1e-1)))
    return Lambda, P, B, dt


@pytest.mark.parametrize("fused", [False, True], ids=["step", "advance"])
@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("with_extra", [False, True])
def test_dplr_step_equals_dense_bilinear_recurrence(measure, with_extra, fused):
    """Woodbury form == x_k = (I - dt/2 A)^{-1} ((I + dt/2 A) x_{k-1} + dt B u_k) with A formed densely
    (fout has a rank-2 P: the r x r solve is exercised). `advance` takes every dot product from the
    previous state and applies all updates as one batched product: the same recurrence."""
    Bsz, H, n, L, Ch = 2, 3, 4, 40, 2
    Lambda, P, B, dt = _dplr(measure, H, n)
    C = torch.randn(Ch, H, n, dtype=c128)
    A = torch.diag_embed(full(Lambda)) - torch.einsum("rhn,rhm->hnm", full(P), full(P).conj())
    dA, dB = _bilinear(A, full(B), dt)
    Bp = (dB[..., :n] ** 2)[None] if with_extra else None  # the liquid B_bar^2 of a KB layer
    u, x0 = torch.randn(Bsz, L, H, dtype=torch.float64), torch.randn(Bsz, H, n, dtype=c128)
    v = torch.randn(Bsz, L, 1, H, dtype=torch.float64) if with_extra else None
    y_ref, x_ref = _explicit(dA, dB, C, u, x0, (Bp, v) if with_extra else None)
    rec = DPLRRecurrence(Lambda, P, B, C, dt, Bp)
    for out_slot in (False, True):
        y, x = _run(rec, u, x0, v, out_slot, fused)
        scale = y_ref.abs().max()
        assert (y - y_ref).abs().max() <= 1e-11 * scale and (
            x - x_ref
        ).abs().max() <= 1e-11 * x_ref.abs().max()


@pytest.mark.parametrize("fused", [False, True], ids=["step", "advance"])
def test_dplr_step_float32_stays_close_over_many_steps(fused):
    """Setup in float64, stepping in float32: after 2048 steps of a LegS system the outputs are within
    float32 rounding (relative 1e-4) of the float64 steps."""
    H, n, L = 8, 16, 2048
    Lambda, P, B, dt = _dplr("legs", H, n)
    C = torch.randn(1, H, n, dtype=c128)
    u = torch.randn(1, L, H, dtype=torch.float64)
    x0 = torch.zeros(1, H, n, dtype=c128)
    y64, _ = _run(DPLRRecurrence(Lambda, P, B, C, dt), u, x0)
    rec32 = DPLRRecurrence(
        Lambda.to(torch.complex64),
        P.to(torch.complex64),
        B.to(torch.complex64),
        C.to(torch.complex64),
        dt.float(),
    )
    y32, _ = _run(rec32, u.float(), x0.to(torch.complex64), fused=fused)
    assert y32.dtype == torch.float32
    assert (y32.double() - y64).abs().max() <= 1e-4 * y64.abs().max()


@pytest.mark.parametrize("dtype", [torch.complex64, c128])
def test_real_view_shares_memory_and_interleaves(dtype):
    """`real_view` is a writable view (Re, Im interleaved) for every unit-stride layout the steps write
    through (a state, a slice of a liquid state, an (H, B, n) transpose), and an equal copy otherwise."""
    z = torch.randn(3, 4, 6, dtype=dtype)
    for view in (z, z[..., :5], z.transpose(0, 1)):
        r = real_view(view)
        assert torch.equal(r, torch.view_as_real(view).flatten(-2))
        r.mul_(2)  # in place through the real view
        assert torch.equal(torch.view_as_real(view).flatten(-2), r)
    strided = z[..., ::2]
    assert torch.equal(real_view(strided), torch.view_as_real(strided).flatten(-2))
