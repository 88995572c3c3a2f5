"""Diagonal scans with time-varying coefficients: the chunked scan against the step-by-step reference,
outputs and gradients, real and complex, with and without an initial state."""

import math

import pytest
import torch

from liquid_s4.ops import fused_scan
from liquid_s4.ops.discretize import discretize_diag
from liquid_s4.ops.scan import (
    SCAN_FORMS,
    bounded_liquid_b,
    chunk_diag_scan,
    chunk_liquid_scan,
    liquid_coefficients,
    liquid_scan,
    naive_diag_scan,
    naive_liquid_scan,
    stable_liquid_b,
)


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
IMPLS = [
    "chunk",
    pytest.param(
        "fused",
        marks=pytest.mark.skipif(not fused_scan.available(), reason="numba (the fast extra) not installed"),
    ),
]


def _cplx(g, *shape, scale=1.0):
    return (
        torch.complex(
            torch.randn(*shape, generator=g, dtype=torch.float64),
            torch.randn(*shape, generator=g, dtype=torch.float64),
        )
        * scale
    )


def _system(form, H=3, N=4, Ch=2, B=2, L=23, seed=0):
    """Parameters of one form of the liquid scan (float64), stable enough for long sequences."""
    g = torch.Generator().manual_seed(seed)
    if form == "affine":  # a, b are A_bar, B_bar
        a = torch.polar(
            0.8 + 0.15 * torch.rand(H, N, generator=g, dtype=torch.float64),
            torch.rand(H, N, generator=g, dtype=torch.float64) * 3,
        )
    else:  # continuous: Re a < 0
        a = torch.complex(
            -0.2 - torch.rand(H, N, generator=g, dtype=torch.float64),
            3 * torch.randn(H, N, generator=g, dtype=torch.float64),
        )
    b = _cplx(g, H, N, scale=0.1 if form == "affine" else 0.5)
    if form == "affine":  # a transition vector of its own
        bt = _cplx(g, H, N, scale=0.1)
    else:
        bt = bounded_liquid_b(a, b) if form == "split" else stable_liquid_b(a, b)
    C = _cplx(g, Ch, H, N)
    u = torch.randn(B, H, L, generator=g, dtype=torch.float64)
    d = 0.05 + 0.2 * torch.rand(B, H, L, generator=g, dtype=torch.float64)
    return u, d, a, b, bt, C


def test_discrete_forms_are_the_layers_discretization_plus_the_liquid_term():
    """At s = 0 the zoh and bilinear forms give the plain layer's A_bar and B_bar (ops.discretize); the
    transition adds B_bar s."""
    u, d, a, b, bt, C = _system("zoh")
    dt = d[0, :, :1]  # (H, 1)
    for form in ("zoh", "bilinear"):
        dA, dB = discretize_diag(form, a, b, dt)
        f, g = liquid_coefficients(form, a, b, bt, dt, torch.zeros(()), torch.ones(()))
        assert torch.allclose(f, dA, rtol=1e-13) and torch.allclose(g, dB, rtol=1e-13)
        f, _ = liquid_coefficients(form, a, b, bt, dt, torch.tensor(0.7, dtype=torch.float64), torch.ones(()))
        assert torch.allclose(f, dA + 0.7 * dB, rtol=1e-13)


def test_ode_form_is_the_exact_solution_over_the_step():
    """One step of the "ode" form equals a fine RK4 integration of dx/dt = (a + bt s) x + b u (u held)."""
    u, d, a, b, bt, C = _system("ode")
    x0 = _cplx(torch.Generator().manual_seed(5), 3, 4)
    uk, dk = 1.3, 0.3
    s = math.tanh(uk)
    f, g = liquid_coefficients("ode", a, b, bt, *(torch.tensor(v, dtype=torch.float64) for v in (dk, s, uk)))
    x, n = x0.clone(), 2000
    h = dk / n

    def rhs(x):
        return (a + bt * s) * x + b * uk

    for _ in range(n):
        k1 = rhs(x)
        k2 = rhs(x + h / 2 * k1)
        k3 = rhs(x + h / 2 * k2)
        k4 = rhs(x + h * k3)
        x = x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    assert torch.allclose(f * x0 + g, x, rtol=1e-10, atol=1e-12)


def test_ode_form_is_contractive_for_every_input():
    """|f| <= 1 at every step whatever the input (|tanh u| <= 1 and |Re bt| <= -Re a, strict in exact
    arithmetic), even for a large B."""
    g = torch.Generator().manual_seed(3)
    a = torch.complex(
        -torch.rand(8, 16, generator=g, dtype=torch.float64) * 2 - 1e-3,
        torch.randn(8, 16, generator=g, dtype=torch.float64),
    )
    b = _cplx(g, 8, 16, scale=50.0)
    bt = stable_liquid_b(a, b)
    assert (bt.real.abs() <= -a.real).all()
    u = torch.linspace(-100, 100, 41, dtype=torch.float64)[:, None, None]
    d = torch.tensor(0.5, dtype=torch.float64)
    f, _ = liquid_coefficients("ode", a, b, bt, d, torch.tanh(u), u)
    assert (f.abs() <= 1).all()  # tanh and the bound saturate to equality in floating point
    u = torch.linspace(-3, 3, 41, dtype=torch.float64)[:, None, None]
    f, _ = liquid_coefficients("ode", a, b, bt, d, torch.tanh(u), u)
    assert (f.abs() < 1).all()


def test_split_form_is_contractive_for_every_input_and_first_order_close_to_the_ode():
    """|f| < 1 for any input with bt = bounded_liquid_b (|bt| <= -Re a, |tanh| <= 1), and the split
    transition e^{d a} (1 + d bt s) differs from e^{d (a + bt s)} by O(d^2)."""
    g = torch.Generator().manual_seed(4)
    a = torch.complex(
        -torch.rand(8, 16, generator=g, dtype=torch.float64) * 2 - 1e-3,
        torch.randn(8, 16, generator=g, dtype=torch.float64) * 5,
    )
    b = _cplx(g, 8, 16, scale=50.0)
    bt = bounded_liquid_b(a, b)
    assert (bt.abs() <= -a.real * (1 + 1e-12)).all()  # equal to rounding where tanh saturates
    # |f| <= e^{d Re a} (1 + d |bt|) < e^{d (Re a + |bt|)} <= 1: strict even at |bt| = -Re a
    u = torch.linspace(-100, 100, 41, dtype=torch.float64)[:, None, None]
    for d in (0.01, 0.5, 3.0):
        f, _ = liquid_coefficients("split", a, b, bt, torch.tensor(d, dtype=torch.float64), torch.tanh(u), u)
        assert (f.abs() < 1).all()
    errs = []
    for d in (1e-2, 5e-3):
        dd = torch.tensor(d, dtype=torch.float64)
        s = torch.tanh(u)
        f, _ = liquid_coefficients("split", a, b, bt, dd, s, u)
        errs.append((f - torch.exp(dd * (a + bt * s))).abs().max().item())
    assert 3.0 < errs[0] / errs[1] < 5.0  # second order in d


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", SCAN_FORMS)
@pytest.mark.parametrize("L", [1, 23, 70])
@pytest.mark.parametrize("extras", [False, True])
def test_liquid_scan_equals_the_step_by_step_recurrence(impl, form, L, extras):
    """Outputs and the state after each sequence's own number of inputs, with and without an initial
    state, per-sequence ends (0, inside, L) and squashing."""
    u, d, a, b, bt, C = _system(form, L=L, B=3)
    x0 = _cplx(torch.Generator().manual_seed(1), 3, 3, 4) if extras else None
    ends = torch.tensor([0, (L + 1) // 2, L]) if extras else None
    kw = dict(x0=x0, ends=ends, squash=extras)
    y, x = liquid_scan(form, u, d, a, b, bt, C, impl=impl, **kw)
    y_ref, x_ref = naive_liquid_scan(form, u, d, a, b, bt, C, **kw)
    assert y.shape == y_ref.shape == (3, 2, 3, L) and x.shape == (3, 3, 4)
    assert torch.allclose(y, y_ref, rtol=1e-10, atol=1e-11)
    assert torch.allclose(x, x_ref, rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", SCAN_FORMS)
def test_liquid_scan_gradients_equal_the_references(impl, form):
    """Gradients of u, d, a, b, bt, C and x0 (outputs and the state at per-sequence ends) equal autograd
    through the step-by-step reference; several blocks (chunk: 8 steps; fused: 64 steps over L = 150)."""
    u, d, a, b, bt, C = _system(form, L=150, seed=2)
    x0 = _cplx(torch.Generator().manual_seed(4), 2, 3, 4)
    ends = torch.tensor([97, 150])
    leaves = [t.clone().requires_grad_() for t in (u, d, a, b, bt, C, x0)]
    g = torch.Generator().manual_seed(6)
    wy = torch.randn(2, 2, 3, 150, generator=g, dtype=torch.float64)
    wx = _cplx(g, 2, 3, 4)

    def loss(scan):
        y, x = scan(form, *leaves[:6], x0=leaves[6], ends=ends, squash=True)
        return (y * wy).sum() + (x * wx.conj()).real.sum()

    def fast(*args, **kw):
        if impl == "chunk":
            return chunk_liquid_scan(*args, block=8, **kw)
        return liquid_scan(*args, impl="fused", **kw)

    got = torch.autograd.grad(loss(fast), leaves, allow_unused=True, materialize_grads=True)
    want = torch.autograd.grad(loss(naive_liquid_scan), leaves, allow_unused=True, materialize_grads=True)
    for name, x, y in zip(("u", "d", "a", "b", "bt", "C", "x0"), got, want, strict=True):
        assert torch.allclose(x, y, rtol=1e-9, atol=1e-10), name


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("form", ["affine", "ode"])
def test_liquid_scan_gradcheck(impl, form):
    u, d, a, b, bt, C = _system(form, H=2, N=2, Ch=1, B=1, L=7, seed=3)
    x0 = _cplx(torch.Generator().manual_seed(7), 1, 2, 2)
    args = tuple(t.clone().requires_grad_() for t in (u, d, a, b, bt, C, x0))

    def fn(*t):
        if impl == "chunk":
            return chunk_liquid_scan(form, *t[:6], x0=t[6], block=3)
        return liquid_scan(form, *t[:6], x0=t[6], impl="fused")

    assert torch.autograd.gradcheck(fn, args)


@pytest.mark.parametrize("impl", IMPLS)
def test_liquid_scan_in_float32_stays_close_to_float64(impl):
    u, d, a, b, bt, C = _system("zoh", L=2000, seed=8)
    y64, _ = naive_liquid_scan("zoh", u[:, :, :300], d[:, :, :300], a, b, bt, C)
    args32 = [t.float() if not t.is_complex() else t.to(torch.complex64) for t in (u, d, a, b, bt, C)]
    y32, _ = liquid_scan(
        "zoh", *[t[:, :, :300] if t.dim() == 3 and not t.is_complex() else t for t in args32], impl=impl
    )
    assert y32.dtype == torch.float32
    assert (y32.double() - y64).abs().max() <= 1e-4 * y64.abs().max()


def test_liquid_scan_rejects_unknown_forms_and_impls():
    u, d, a, b, bt, C = _system("zoh", L=3)
    with pytest.raises(ValueError, match="unknown liquid scan form"):
        liquid_scan("euler", u, d, a, b, bt, C)
    with pytest.raises(ValueError, match="unknown impl"):
        liquid_scan("zoh", u, d, a, b, bt, C, impl="cuda")


@pytest.mark.skipif(not fused_scan.available(), reason="numba (the fast extra) not installed")
def test_the_default_implementation_on_cpu_is_the_fused_one(monkeypatch):
    calls = []
    real = fused_scan.fused_liquid_scan
    monkeypatch.setattr(fused_scan, "fused_liquid_scan", lambda *a, **k: calls.append(1) or real(*a, **k))
    u, d, a, b, bt, C = _system("affine", L=5)
    liquid_scan("affine", u, d, a, b, bt, C)
    assert calls == [1]


@pytest.mark.skipif(not fused_scan.available(), reason="numba (the fast extra) not installed")
def test_fused_scan_from_several_python_threads_at_once():
    """Concurrent calls (e.g. two models served from two threads) give the results of sequential ones."""
    from concurrent.futures import ThreadPoolExecutor

    systems = [_system(form, L=200, seed=s) for s in range(4) for form in ("affine", "zoh")]
    forms = ["affine", "zoh"] * 4

    def run(i):
        u, d, a, b, bt, C = [t.clone().requires_grad_() for t in systems[i]]
        y, _ = liquid_scan(forms[i], u, d, a, b, bt, C, impl="fused")
        (gu,) = torch.autograd.grad(y.square().sum(), [u])
        return y.detach(), gu

    want = [run(i) for i in range(len(systems))]
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(run, range(len(systems))))
    for (y0, g0), (y1, g1) in zip(want, got, strict=True):
        assert torch.equal(y0, y1) and torch.equal(g0, g1)
