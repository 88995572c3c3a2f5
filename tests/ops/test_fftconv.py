"""fftconv_sum's explicit adjoint (backward) against autograd through the same FFTs and through an
explicit double loop, for causal (length L) and two-sided (length 2L) kernels, in float64."""

import pytest
import torch

from liquid_s4.ops.fftconv import bidirectional_kernel, fft_size, fftconv_sum, fftconv_sum_ref


def _loop_conv(us, ks):
    """y[b, c, h, n] = sum_s sum_j k_s[c, h, (n - j) mod 2L] u_s[b, h, j] for the first L outputs."""
    B, H, L = us[0].shape
    out = []
    for n in range(L):
        acc = 0
        for u, k in zip(us, ks):
            kk = torch.nn.functional.pad(k, (0, 2 * L - k.shape[-1]))
            idx = torch.tensor([(n - j) % (2 * L) for j in range(L)])
            acc = acc + torch.einsum("chj,bhj->bch", kk[..., idx], u)
        out.append(acc)
    return torch.stack(out, -1)


def test_fft_size_is_smooth_and_large_enough():
    for L in [1, 2, 5, 11, 16000, 16384, 17000, 65536]:
        n = fft_size(L)
        odd = n >> (n & -n).bit_length() - 1
        assert n >= 2 * L and odd in (1, 3, 9) and n < 2.7 * L + 2
    assert fft_size(16000) == 32768 and fft_size(17000) == 36864 and fft_size(16384) == 32768


@pytest.mark.parametrize("two_sided", [False, True])
@pytest.mark.parametrize("L", [11, 12])  # FFT size 24 > 2L (negative lags moved) and 24 = 2L
def test_fftconv_sum_gradients(two_sided, L):
    torch.manual_seed(0)
    B, C, H = 2, 3, 2
    us = [torch.randn(B, H, L, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    ks = [torch.randn(C, H, L, dtype=torch.float64, requires_grad=True) for _ in range(2)]
    if two_sided:
        ks[1] = (
            bidirectional_kernel(ks[1], torch.randn(C, H, L, dtype=torch.float64)).detach().requires_grad_()
        )
    g = torch.randn(B, C, H, L, dtype=torch.float64)
    outs = [f(us, ks) for f in (fftconv_sum, fftconv_sum_ref, _loop_conv)]
    grads = [torch.autograd.grad((y * g).sum(), us + ks) for y in outs]
    for y in outs[1:]:
        assert torch.allclose(outs[0], y, atol=1e-12)
    for ref in grads[1:]:
        for a, b in zip(grads[0], ref):
            assert a.shape == b.shape and torch.allclose(a, b, atol=1e-12)


def test_fftconv_sum_skips_unneeded_gradients_and_checks_arguments():
    u = torch.randn(1, 2, 8, requires_grad=True)
    k = torch.randn(1, 2, 8)  # a kernel without gradient
    (gu,) = torch.autograd.grad(fftconv_sum([u], [k]).sum(), [u])
    assert torch.allclose(gu, torch.autograd.grad(fftconv_sum_ref([u], [k]).sum(), [u])[0], atol=1e-5)
    with pytest.raises(ValueError, match="as many kernels as signals"):
        fftconv_sum([u, u], [k])
