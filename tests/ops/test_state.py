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


def _systems():
    """A diagonal conjugate system (S4D), a dense conjugate one (S4's DPLR) and a dense real one (LSSL),
    float64, each with the liquid input vectors of degree 3."""
    from liquid_s4 import LSSL, S4, S4D

    torch.manual_seed(0)
    out = {}
    for name, layer in (
        ("diagonal", S4D(4, d_state=8, channels=2)),
        ("dense-conj", S4(4, d_state=8)),
        ("dense-real", LSSL(4, d_state=5)),
    ):
        out[name] = layer.double().ssm.discrete(1.3, 3)
    return out


@pytest.mark.parametrize("kind", ["diagonal", "dense-conj", "dense-real"])
@pytest.mark.parametrize("L", [1, 7, 300])
def test_chunk_operators_equal_state_passing(kind, L):
    """The cached chunk maps give the initial state's outputs and the next state of `state_output` and
    `next_state`, with and without extra inputs, for every kind of system."""
    from liquid_s4.ops.state import apply_chunk_operators

    sys = _systems()[kind]
    B, H = 3, 4
    like = sys.dA if sys.diagonal else sys.dA[..., 0]
    x0 = torch.randn(B, H, sys.N, dtype=like.dtype)
    u = torch.randn(B, H, L, dtype=torch.float64)
    extra = sys.liquid_B  # None for LSSL (no liquid terms)
    v = [] if extra is None else [torch.randn(B, H, L, dtype=torch.float64) for _ in range(len(extra))]
    ops = sys.chunk_operators(L, extra)
    y0 = torch.randn(B, sys.C.shape[0], H, L, dtype=torch.float64)
    y, nxt = apply_chunk_operators(ops, y0, x0, [u, *v])
    torch.testing.assert_close(y, y0 + sys.state_output(x0, L), rtol=1e-10, atol=1e-10)
    ref = sys.next_state(u, x0, None, None if extra is None else (extra, v))
    torch.testing.assert_close(nxt, ref, rtol=1e-10, atol=1e-10)
    # and against the recurrence, one step at a time
    x, ys = x0, []
    for k in range(L):
        x = sys.step(x, u[..., k], None if extra is None else (extra, torch.stack([w[..., k] for w in v], 1)))
        ys.append(sys.output(x))
    torch.testing.assert_close(nxt, x, rtol=1e-9, atol=1e-10)
    y_free, _ = apply_chunk_operators(ops, torch.zeros_like(y0), x0, [0 * u, *(0 * w for w in v)])
    x, ys = x0, []
    for k in range(L):
        x = sys.step(x, 0 * u[..., k])
        ys.append(sys.output(x))
    torch.testing.assert_close(y_free, torch.stack(ys, -1), rtol=1e-9, atol=1e-10)
