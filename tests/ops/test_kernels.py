"""Fast kernels against their materializing references and explicit matrix powers (float64),
on values and gradients, plus a check that no (H, N, L) workspace is ever built."""

import math

import pytest
import torch

from liquid_s4.ops import kernels
from liquid_s4.ops.discretize import discretize_gbt
from liquid_s4.ops.hippo import MEASURES, nplr
from liquid_s4.ops.kernels import (
    cauchy_imag,
    cauchy_imag_ref,
    kernel_dplr,
    krylov,
    krylov_ref,
    vandermonde,
    vandermonde_ref,
)

from ..reference import LargestTensor, explicit_kernel, full

c128 = torch.complex128


def _grads(out, inputs, seed=1):
    """Gradients of a fixed random projection of `out` (same projection for the same seed)."""
    g = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(seed))
    grads = torch.autograd.grad((out * g).sum().real, inputs, retain_graph=True, allow_unused=True)
    return [torch.zeros_like(x) if d is None else d for x, d in zip(inputs, grads)]


@pytest.mark.parametrize("L", [1, 7, 64, 300])
def test_vandermonde_matches_powers_and_reference(L):
    H, N = 3, 5
    log_dA = torch.complex(
        -torch.rand(H, N, dtype=torch.float64) * 0.1, torch.randn(H, N, dtype=torch.float64)
    ).requires_grad_()
    w = torch.randn(2, H, N, dtype=c128, requires_grad=True)
    K = vandermonde(w, log_dA, L)
    K_ref = vandermonde_ref(w, log_dA, L)
    dA = torch.exp(log_dA.detach())
    powers = torch.stack([dA**l for l in range(L)], -1)
    K_pow = 2 * torch.einsum("chn,hnl->chl", w.detach(), powers).real
    assert K.shape == (2, H, L)
    assert torch.allclose(K, K_ref, atol=1e-12) and torch.allclose(K.detach(), K_pow, atol=1e-12)
    for a, b in zip(_grads(K, [w, log_dA]), _grads(K_ref, [w, log_dA])):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("lead", [(), (3,), (2, 2)])
def test_vandermonde_analytic_backward_gradcheck(lead):
    """The hand-written backward (`_Vandermonde`) against finite differences in float64, for any
    leading dims of w (liquid layers stack B_bar^p kernels there), and with one input frozen."""
    H, N, L = 2, 3, 11  # L not a multiple of the block size
    g = torch.Generator().manual_seed(0)
    w = torch.randn(*lead, H, N, dtype=c128, generator=g).requires_grad_()
    q = torch.complex(
        -torch.rand(H, N, dtype=torch.float64, generator=g) * 0.3,
        torch.randn(H, N, dtype=torch.float64, generator=g),
    )
    q.requires_grad_()
    assert torch.autograd.gradcheck(lambda w, q: vandermonde(w, q, L), (w, q))
    (gw,) = torch.autograd.grad(vandermonde(w, q.detach(), L).sum(), w)
    (gw_ref,) = torch.autograd.grad(vandermonde_ref(w, q.detach(), L).sum(), w)
    assert torch.allclose(gw, gw_ref, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_vandermonde_powers_never_subnormal(dtype):
    """Fast-decaying modes at long lags underflow; the powers are floored at eps^2 instead of
    entering the products as subnormals (slow on CPU), and the kernel stays within rounding."""
    from liquid_s4.ops.kernels import _vandermonde_factors

    H, N, L = 2, 4, 4096
    log_dA = torch.complex(
        -torch.tensor([[0.05, 0.5, 2.0, 20.0]] * H, dtype=dtype), torch.ones(H, N, dtype=dtype)
    )
    inner, outer = _vandermonde_factors(log_dA, 64, L // 64)
    for z in (inner, outer):
        x = torch.view_as_real(z).abs()
        assert not ((x > 0) & (x < torch.finfo(dtype).tiny)).any()
    w = torch.randn(H, N, dtype=log_dA.dtype)
    K, K_ref = vandermonde(w, log_dA, L), vandermonde_ref(w.to(c128), log_dA.to(c128), L)
    assert (K.double() - K_ref).abs().max() <= 10 * torch.finfo(dtype).eps * K_ref.abs().max()


@pytest.mark.parametrize("chunked", [False, True, "gpu"])
def test_cauchy_imag_matches_reference_with_gradients(chunked, monkeypatch):
    """The real-arithmetic Cauchy sums at imaginary points i g equal the complex materializing
    reference, with gradients for v, lam (both parts) and g (through dt), in float64 (with "gpu",
    blocked as on a GPU: several channels per block, no cap on the frequencies)."""
    if chunked is True:
        monkeypatch.setattr(
            kernels, "CAUCHY_IMAG_CHUNK_ELEMENTS", 16
        )  # several frequency chunks, a ragged last one
    elif chunked == "gpu":
        monkeypatch.setattr(kernels, "CAUCHY_IMAG_FREQS", 4)  # ignored by the GPU chunking
        monkeypatch.setattr(
            kernels, "_chunking", lambda device: (kernels.CAUCHY_IMAG_CHUNK_ELEMENTS_GPU, None)
        )
    M, H, N, F = 3, 2, 4, 9
    v = torch.randn(M, H, N, dtype=c128, requires_grad=True)
    lam = torch.complex(
        -torch.rand(H, N, dtype=torch.float64) - 0.01, 3 * torch.randn(H, N, dtype=torch.float64)
    ).requires_grad_()
    dt = torch.rand(H, dtype=torch.float64, requires_grad=True)
    g = (2 / dt)[:, None] * torch.tan(
        math.pi * torch.arange(F, dtype=torch.float64) / (2 * F)
    )  # up to near-Nyquist
    out, ref = cauchy_imag(v, lam, g), cauchy_imag_ref(v, lam, g)
    assert torch.allclose(out, ref, atol=1e-12, rtol=1e-12)
    for x, y in zip(_grads(out, [v, lam, dt]), _grads(ref, [v, lam, dt])):
        assert torch.allclose(x, y, atol=1e-10, rtol=1e-10)


def test_cauchy_imag_float32_is_accurate_near_nyquist():
    """float32 against float64 at the S4 shapes' extremes (large g, small dt), relative to |out|."""
    torch.manual_seed(0)
    M, H, N, L = 4, 3, 16, 4096
    v = torch.randn(M, H, N, dtype=c128)
    lam = torch.complex(
        -torch.rand(H, N, dtype=torch.float64) - 0.5, 50 * torch.randn(H, N, dtype=torch.float64)
    )
    dt = torch.tensor([1e-4, 1e-2, 1e-1], dtype=torch.float64)
    g = (2 / dt)[:, None] * torch.tan(math.pi * torch.arange(L // 2, dtype=torch.float64) / L)
    ref = cauchy_imag_ref(v, lam, g)
    args32 = v.to(torch.complex64), lam.to(torch.complex64), g.float()
    scale = ref.abs().amax(-1, keepdim=True)
    err = ((cauchy_imag(*args32).to(c128) - ref).abs() / scale).max()
    err_naive = ((cauchy_imag_ref(*args32).to(c128) - ref).abs() / scale).max()  # complex float32 arithmetic
    # the split t = g - li costs some cancellation near resonance (g ~ li >> |lr|): within 4x of plain float32
    assert err < 5e-5 and err < 4 * err_naive, (err, err_naive)


def _dplr_system(measure, N, H, Ch, Kb=1):
    Lambda, P, B, _ = nplr(measure, N)
    Lambda = torch.complex(Lambda.real.clamp(max=-1e-4), Lambda.imag).expand(H, -1).clone()
    P = P[:, None].expand(-1, H, -1).clone()
    B = B.expand(Kb, H, -1) * (1 + torch.rand(Kb, H, N // 2, dtype=torch.float64))
    C = torch.randn(Ch, H, N // 2, dtype=c128)
    dt = torch.exp(torch.empty(H, dtype=torch.float64).uniform_(math.log(1e-3), math.log(1e-1)))
    return Lambda, P, B, C, dt


def _dplr_dense(Lambda, P, B, dt):
    A = torch.diag_embed(full(Lambda)) - torch.einsum("rhn,rhm->hnm", full(P), full(P).conj())
    return discretize_gbt(A, full(B), dt)


@pytest.mark.parametrize("measure", MEASURES)
@pytest.mark.parametrize("L", [16, 33])
def test_kernel_dplr_matches_matrix_powers(measure, L):
    H, N, Ch, Kb = 3, 8, 2, 2
    Lambda, P, B, C, dt = _dplr_system(measure, N, H, Ch, Kb)
    K = kernel_dplr(Lambda, P, B, C, dt, L)  # C is read as C~
    assert K.shape == (Kb, Ch, H, L)
    for j in range(Kb):
        dA, dB = _dplr_dense(Lambda, P, B[j], dt)
        # C~ = C (I - A^L)  =>  C = C~ (I - A^L)^{-1}
        M = torch.eye(N, dtype=c128) - torch.linalg.matrix_power(dA, L)
        C_true = torch.linalg.solve(M.mT, full(C).permute(1, 2, 0)).permute(2, 0, 1)
        assert torch.allclose(K[j], explicit_kernel(dA, dB, C_true, L), atol=1e-10)


def test_kernel_dplr_gradients_match_dense_reference_including_nyquist():
    # even L puts a frequency exactly at z = -1, where the textbook 2/(1+z) form divides by zero
    H, N, L = 2, 6, 32
    Lambda, P, B, C, dt = _dplr_system("legs", N, H, 1)
    inputs = [x.clone().requires_grad_() for x in (Lambda, P, B, C, dt)]
    K = kernel_dplr(*inputs, L)[0]
    g = torch.randn_like(K)
    grads = torch.autograd.grad((K * g).sum(), inputs)
    ref_inputs = [x.clone().requires_grad_() for x in (Lambda, P, B, C, dt)]
    lam, Pr, Br, Cr, dtr = ref_inputs
    dA, dB = _dplr_dense(lam, Pr, Br[0], dtr)
    M = torch.eye(N, dtype=c128) - torch.linalg.matrix_power(dA, L)
    C_true = torch.linalg.solve(M.mT, full(Cr).permute(1, 2, 0)).permute(2, 0, 1)
    K_ref = krylov_ref(dA, dB, C_true, L).real
    ref_grads = torch.autograd.grad((K_ref * g).sum(), ref_inputs)
    for a, b in zip(grads, ref_grads):
        assert torch.isfinite(a).all()
        assert torch.allclose(a, b, atol=1e-9 * max(1.0, b.abs().max().item()))


@pytest.mark.parametrize("L", [1, 5, 64, 100])
@pytest.mark.parametrize("dtype", [torch.float64, c128])
def test_krylov_matches_reference(L, dtype):
    H, M = 3, 4
    A = torch.randn(H, M, M, dtype=dtype) / 3
    dA = torch.linalg.matrix_exp(A * 0.1 - torch.eye(M) * 0.05).requires_grad_()
    b = torch.randn(2, H, M, dtype=dtype, requires_grad=True)  # batched right vectors
    c = torch.randn(3, H, M, dtype=dtype, requires_grad=True)
    K, K_ref = krylov(dA, b, c, L), krylov_ref(dA, b, c, L)
    assert K.shape == (2, 3, H, L)
    assert torch.allclose(K, K_ref, atol=1e-10)
    for x, y in zip(_grads(K, [dA, b, c]), _grads(K_ref, [dA, b, c])):
        assert torch.allclose(x, y, atol=1e-9)


def test_fast_kernels_never_build_an_HNL_tensor(monkeypatch):
    """Forward and backward of each fast kernel stay far below H*N*L elements."""
    monkeypatch.setattr(kernels, "CAUCHY_IMAG_CHUNK_ELEMENTS", 1 << 12)
    H, N, L = 4, 64, 4096
    limit = H * N * L // 8
    log_dA = torch.complex(-torch.rand(H, N) * 0.01, torch.randn(H, N)).requires_grad_()
    w = torch.randn(1, H, N, dtype=torch.complex64, requires_grad=True)
    Lambda, P, B, C, dt = (
        x.to(torch.complex64) if x.is_complex() else x.float() for x in _dplr_system("legs", 2 * N, H, 1)
    )
    dt.requires_grad_()
    dA = (torch.eye(N) * 0.99 + 0.001 * torch.randn(H, N, N)).requires_grad_()
    for fn in (
        lambda: vandermonde(w, log_dA, L),
        lambda: kernel_dplr(Lambda, P, B, C, dt, L),
        lambda: krylov(dA, torch.randn(H, N), torch.randn(1, H, N), L),
    ):
        with LargestTensor() as big:
            fn().square().sum().backward()
        assert big.numel < limit, big.numel


@pytest.mark.parametrize("n", [1, 2, 7, 16])
def test_irfft_first_equals_inverse_fft(n):
    from liquid_s4.ops.kernels import irfft_first

    X = torch.randn(3, n // 2 + 1, dtype=torch.complex128)
    assert torch.allclose(irfft_first(X, n), torch.fft.irfft(X, n=n)[..., 0], atol=1e-14)
