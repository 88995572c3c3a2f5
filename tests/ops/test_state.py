import pytest
import torch

from liquid_s4.ops.fftconv import bidirectional_kernel, fftconv
from liquid_s4.ops.state import power_apply, reverse_within, scan_dense, scan_diag


def test_reverse_within_lengths():
    u = torch.arange(1.0, 7.0).view(1, 1, 6).repeat(2, 1, 1)
    out = reverse_within(u, torch.tensor([6, 3]))
    assert out[0, 0].tolist() == [6, 5, 4, 3, 2, 1]
    assert out[1, 0].tolist() == [3, 2, 1, 0, 0, 0]


@pytest.mark.parametrize("L", [1, 10, 257])
def test_scans_match_recurrence(L):
    B, H, N = 2, 3, 4
    u = torch.randn(B, H, L, dtype=torch.float64)
    log_dA = torch.complex(
        -torch.rand(H, N, dtype=torch.float64) * 0.1, torch.randn(H, N, dtype=torch.float64)
    )
    dA = torch.exp(log_dA)
    x = torch.zeros(B, H, N, dtype=torch.complex128)
    for k in range(L):
        x = dA * x + u[..., k, None]
    assert torch.allclose(scan_diag(log_dA, u.flip(-1)), x, atol=1e-11)

    dAm = torch.linalg.matrix_exp(
        0.1 * torch.randn(H, N, N, dtype=torch.float64) - 0.05 * torch.eye(N, dtype=torch.float64)
    )
    dB = torch.randn(H, N, dtype=torch.float64)
    x = torch.zeros(B, H, N, dtype=torch.float64)
    for k in range(L):
        x = (dAm @ x[..., None])[..., 0] + dB * u[..., k, None]
    assert torch.allclose(scan_dense(dAm, dB, u.flip(-1)), x, atol=1e-10)


def test_power_apply_per_sequence():
    dA = torch.randn(2, 3, 3, dtype=torch.float64) / 2
    x = torch.randn(4, 2, 3, dtype=torch.float64)
    n = torch.tensor([0, 1, 5, 12])
    out = power_apply(dA, x, n)
    for b in range(4):
        ref = torch.linalg.matrix_power(dA, int(n[b])) @ x[b, ..., None]
        assert torch.allclose(out[b], ref[..., 0])


def test_fftconv_is_linear_convolution():
    u = torch.randn(2, 3, 17, dtype=torch.float64)
    k = torch.randn(1, 3, 17, dtype=torch.float64)
    y = fftconv(u, k)[:, 0]
    ref = torch.zeros_like(u)
    for l in range(17):
        for j in range(l + 1):
            ref[..., l] += k[0, :, l - j] * u[..., j]
    assert torch.allclose(y, ref)
    kb = torch.randn(1, 3, 17, dtype=torch.float64)
    y = fftconv(u, bidirectional_kernel(k, kb))[:, 0]
    for l in range(17):
        for j in range(l + 1, 17):
            ref[..., l] += kb[0, :, j - l - 1] * u[..., j]
    assert torch.allclose(y, ref)
