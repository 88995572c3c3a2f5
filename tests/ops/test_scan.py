"""Diagonal scans with time-varying coefficients: the chunked scan against the step-by-step reference,
outputs and gradients, real and complex, with and without an initial state."""

import pytest
import torch

from liquid_s4.ops.scan import chunk_diag_scan, liquid_scan, naive_diag_scan, naive_liquid_scan


def _inputs(shape, dtype, decay=0.9, seed=0):
    g = torch.Generator().manual_seed(seed)
    if dtype.is_complex:
        real = torch.float64 if dtype == torch.complex128 else torch.float32
        mag = decay + (1 - decay) * torch.rand(shape, generator=g, dtype=real)
        f = torch.polar(mag, torch.rand(shape, generator=g, dtype=real) * 6.28)
        gg = torch.complex(
            torch.randn(shape, generator=g, dtype=real), torch.randn(shape, generator=g, dtype=real)
        )
    else:
        f = decay + (1 - decay) * torch.rand(shape, generator=g, dtype=dtype) * torch.sign(
            torch.randn(shape, generator=g, dtype=dtype)
        )
        gg = torch.randn(shape, generator=g, dtype=dtype)
    return f, gg


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("L,chunk", [(1, None), (7, None), (64, None), (100, 8), (100, 7), (33, 64)])
@pytest.mark.parametrize("with_x0", [False, True])
def test_chunk_scan_equals_reference(dtype, L, chunk, with_x0):
    f, g = _inputs((2, 3, L), dtype)
    x0 = _inputs((2, 3), dtype, seed=1)[1] if with_x0 else None
    assert torch.allclose(chunk_diag_scan(f, g, x0, chunk), naive_diag_scan(f, g, x0), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("with_x0", [False, True])
def test_chunk_scan_gradients_equal_the_references(dtype, with_x0):
    f, g = _inputs((2, 3, 37), dtype)
    x0 = _inputs((2, 3), dtype, seed=1)[1] if with_x0 else None
    leaves = [t.clone().requires_grad_() for t in (f, g) + ((x0,) if with_x0 else ())]
    w = _inputs((2, 3, 37), dtype, seed=2)[1]

    def loss(scan):
        x = scan(leaves[0], leaves[1], leaves[2] if with_x0 else None)
        return (x * w.conj()).real.sum() if dtype.is_complex else (x * w).sum()

    got = torch.autograd.grad(loss(lambda *a: chunk_diag_scan(*a, chunk=5)), leaves)
    want = torch.autograd.grad(loss(naive_diag_scan), leaves)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-11, atol=1e-11)


def test_chunk_scan_gradcheck_complex():
    f, g = _inputs((1, 2, 9), torch.complex128)
    x0 = _inputs((1, 2), torch.complex128, seed=3)[1]
    args = tuple(t.clone().requires_grad_() for t in (f, g, x0))
    assert torch.autograd.gradcheck(lambda a, b, c: chunk_diag_scan(a, b, c, chunk=4), args)


def test_fast_decay_does_not_underflow_into_nan():
    """Cumulative factors far below the float32 range: no quotient of them is formed."""
    f = torch.full((1, 4096), 0.01)
    g = torch.randn(1, 4096)
    x = chunk_diag_scan(f, g)
    assert torch.isfinite(x).all()
    assert torch.allclose(x, naive_diag_scan(f, g), rtol=1e-5, atol=1e-6)


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match="same shape and dtype"):
        chunk_diag_scan(torch.ones(2, 5), torch.ones(2, 4))
    with pytest.raises(ValueError, match="x0 must have shape"):
        chunk_diag_scan(torch.ones(2, 5), torch.ones(2, 5), torch.ones(3))


# ---- the liquid recurrence, read out ---------------------------------------------------------------
def _liquid_system(H=3, N=4, Ch=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    dA = torch.polar(
        0.8 + 0.15 * torch.rand(H, N, generator=g, dtype=torch.float64),
        torch.rand(H, N, generator=g, dtype=torch.float64) * 3,
    )
    dB = (
        torch.complex(
            torch.randn(H, N, generator=g, dtype=torch.float64),
            torch.randn(H, N, generator=g, dtype=torch.float64),
        )
        * 0.1
    )
    C = torch.complex(
        torch.randn(Ch, H, N, generator=g, dtype=torch.float64),
        torch.randn(Ch, H, N, generator=g, dtype=torch.float64),
    )
    return dA, dB, C


@pytest.mark.parametrize("L,block", [(1, 4), (23, 4), (23, 1024), (64, 16)])
@pytest.mark.parametrize("with_x0", [False, True])
def test_liquid_scan_equals_the_step_by_step_recurrence(L, block, with_x0):
    dA, dB, C = _liquid_system()
    u = torch.randn(2, 3, L, dtype=torch.float64)
    x0 = torch.randn(2, 3, 4, dtype=torch.complex128) if with_x0 else None
    y, xL = liquid_scan(u, dA, dB, C, x0, block)
    y_ref, x_ref = naive_liquid_scan(u, dA, dB, C, x0)
    assert torch.allclose(y, y_ref, rtol=1e-11, atol=1e-12) and torch.allclose(
        xL, x_ref, rtol=1e-11, atol=1e-12
    )


@pytest.mark.parametrize("with_x0", [False, True])
def test_liquid_scan_gradients_equal_the_references(with_x0):
    dA, dB, C = _liquid_system(seed=1)
    u = torch.randn(2, 3, 29, dtype=torch.float64)
    x0 = torch.randn(2, 3, 4, dtype=torch.complex128) if with_x0 else None
    leaves = [t.clone().requires_grad_() for t in (u, dA, dB, C) + ((x0,) if with_x0 else ())]
    wy = torch.randn(2, 2, 3, 29, dtype=torch.float64)
    wx = torch.randn(2, 3, 4, dtype=torch.complex128)

    def loss(scan):
        y, xL = scan(*leaves[:4], leaves[4] if with_x0 else None)
        return (y * wy).sum() + (xL * wx.conj()).real.sum()

    got = torch.autograd.grad(loss(lambda *a: liquid_scan(*a, block=8)), leaves)
    want = torch.autograd.grad(loss(naive_liquid_scan), leaves)
    for a, b in zip(got, want, strict=True):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-11)


def test_liquid_scan_gradcheck():
    dA, dB, C = _liquid_system(H=2, N=2, Ch=1, seed=2)
    u = torch.randn(1, 2, 7, dtype=torch.float64)
    x0 = torch.randn(1, 2, 2, dtype=torch.complex128)
    args = tuple(t.clone().requires_grad_() for t in (u, dA, dB, C, x0))
    assert torch.autograd.gradcheck(lambda *a: liquid_scan(*a, block=3), args)
