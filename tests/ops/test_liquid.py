"""Correlation signals, input history and the multi-signal FFT convolution."""

import pytest
import torch

from liquid_s4.ops.fftconv import anticausal_kernel, bidirectional_kernel, fftconv_sum
from liquid_s4.ops.liquid import (
    anticorrelation,
    anticorrelations,
    correlation,
    correlation_ref,
    correlations,
    delayed,
    kb_convolution,
    last_inputs,
    pb_readout,
    pb_readout_ref,
    pb_readout_reverse,
    pb_readout_step,
    product_skip,
    product_skip_ref,
    push_history,
    step_correlations,
)


@pytest.mark.parametrize("degree", [2, 3, 5])
@pytest.mark.parametrize("squash", [None, "tanh"])
def test_correlation_matches_loop_reference(degree, squash):
    u = torch.randn(2, 3, 9, dtype=torch.float64)
    assert torch.equal(correlation(u, degree, squash=squash), correlation_ref(u, degree, squash=squash))
    hist = torch.randn(2, 3, degree - 1, dtype=torch.float64)
    assert torch.allclose(correlation(u, degree, hist, squash), correlation_ref(u, degree, hist, squash))


def test_correlation_by_hand():
    u = torch.tensor([[[2.0, 3.0, 5.0, 7.0]]])
    v = correlation(u, 3)
    assert v[0, 0, 0].tolist() == [0.0, 6.0, 15.0, 35.0]  # u_k u_{k-1}
    assert v[0, 1, 0].tolist() == [0.0, 0.0, 30.0, 105.0]  # u_k u_{k-1} u_{k-2}
    w = anticorrelation(u, 3)
    assert w[0, 0, 0].tolist() == [6.0, 15.0, 35.0, 0.0]  # u_k u_{k+1}
    assert w[0, 1, 0].tolist() == [30.0, 105.0, 0.0, 0.0]
    assert delayed(u, -1)[0, 0].tolist() == [3.0, 5.0, 7.0, 0.0]
    assert delayed(u, 2)[0, 0].tolist() == [0.0, 0.0, 2.0, 3.0]
    assert delayed(u, 2, torch.tensor([[[11.0, 13.0]]]))[0, 0].tolist() == [11.0, 13.0, 2.0, 3.0]
    assert delayed(u, 4).abs().sum() == 0 and delayed(u, -5).abs().sum() == 0
    v_h = correlation(u, 3, history=torch.tensor([[[11.0, 13.0]]]))
    assert v_h[0, 1, 0].tolist() == [2 * 13 * 11.0, 3 * 2 * 13.0, 30.0, 105.0]


def test_last_inputs_with_lengths_and_short_chunks():
    hist = torch.tensor([[[1.0, 2.0, 3.0]], [[4.0, 5.0, 6.0]], [[7.0, 8.0, 9.0]]])  # (B=3, H=1, n=3)
    u = torch.tensor([[[10.0, 11.0, 12.0, 13.0]], [[20.0, 21.0, 0.0, 0.0]], [[0.0, 0.0, 0.0, 0.0]]])
    lengths = torch.tensor([4, 2, 0])
    out = last_inputs(u, 3, hist, lengths)
    assert out[:, 0].tolist() == [[11.0, 12.0, 13.0], [6.0, 20.0, 21.0], [7.0, 8.0, 9.0]]
    assert last_inputs(u[:, :, :1], 3, hist)[:, 0].tolist() == [
        [2.0, 3.0, 10.0],
        [5.0, 6.0, 20.0],
        [8.0, 9.0, 0.0],
    ]


def test_fftconv_sum_is_a_linear_convolution():
    """Each (signal, kernel) pair is convolved without wrap-around, causal or strictly anti-causal."""
    B, S, C, H, L = 2, 3, 2, 3, 17
    u = torch.randn(B, S, H, L, dtype=torch.float64)
    k = torch.randn(S, C, H, L, dtype=torch.float64)
    y = fftconv_sum(u.unbind(1), k.unbind(0))
    ref = torch.zeros(B, C, H, L, dtype=torch.float64)
    for n in range(L):
        for j in range(n + 1):
            ref[..., n] += torch.einsum("schn,bshn->bch", k[..., n - j, None], u[..., j, None])
    assert torch.allclose(y, ref, atol=1e-12)
    kb = torch.randn(S, C, H, L, dtype=torch.float64)
    y2 = fftconv_sum(u.unbind(1), anticausal_kernel(kb).unbind(0))
    ref2 = torch.zeros(B, C, H, L, dtype=torch.float64)
    for n in range(L):
        for j in range(n + 1, L):
            ref2[..., n] += torch.einsum("schn,bshn->bch", kb[..., j - n - 1, None], u[..., j, None])
    assert torch.allclose(y2, ref2, atol=1e-12)
    assert torch.allclose(
        bidirectional_kernel(k, kb), torch.nn.functional.pad(k, (0, L)) + anticausal_kernel(kb)
    )


@pytest.mark.parametrize("C", [1, 2])
@pytest.mark.parametrize("with_history", [False, True])
@pytest.mark.parametrize("L", [1, 9])
def test_product_skip_matches_autograd_reference(C, with_history, L):
    """The fused degree-2 PB term y + c u_k u_{k-1}: values and gradients (y, u, c, history) equal
    autograd's through `product_skip_ref`, in float64."""
    torch.manual_seed(0)
    y = torch.randn(3, C, 4, L, dtype=torch.float64, requires_grad=True)
    u = torch.randn(3, 4, L, dtype=torch.float64, requires_grad=True)
    c = torch.randn(C, 4, dtype=torch.float64, requires_grad=True)
    hist = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True) if with_history else None
    inputs = [t for t in (y, u, c, hist) if t is not None]
    out, ref = product_skip(y, u, c, hist), product_skip_ref(y, u, c, hist)
    assert torch.allclose(out, ref, atol=1e-14)
    w = torch.randn_like(out)
    for g, g_ref in zip(
        torch.autograd.grad((out * w).sum(), inputs),
        torch.autograd.grad((ref * w).sum(), inputs),
        strict=True,
    ):
        assert torch.allclose(g, g_ref, atol=1e-12)
    assert torch.autograd.gradcheck(
        product_skip, (y[:1, :, :2, :4], u[:1, :2, :4], c[:, :2], None if hist is None else hist[:1, :2])
    )


def test_product_skip_on_a_transposed_view():
    """Layers pass (B, H, L) views of (B, L, H) inputs: the same values and gradients as for a
    contiguous u, and v and the input gradient come out contiguous (they meet contiguous tensors)."""
    torch.manual_seed(0)
    y = torch.randn(2, 2, 3, 7, dtype=torch.float64, requires_grad=True)
    ut = torch.randn(2, 7, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    u = ut.transpose(1, 2)
    assert not u.is_contiguous()
    out, ref = product_skip(y, u, c), product_skip_ref(y, u.contiguous(), c)
    assert out.is_contiguous() and torch.allclose(out, ref, atol=1e-14)
    (gu,) = torch.autograd.grad(out.sum(), u)
    (gu_ref,) = torch.autograd.grad(ref.sum(), ut)
    assert gu.is_contiguous() and torch.allclose(gu, gu_ref.transpose(1, 2), atol=1e-12)


# ---- whole-sequence and per-step forms against the same references -------------------------------
@pytest.mark.parametrize("degree", [2, 3, 4])
@pytest.mark.parametrize("squash", [None, "tanh"])
def test_step_forms_replay_the_sequence_forms(degree, squash):
    """Stepping with step_correlations / push_history / pb_readout_step from a history gives, at every
    step, the signals of correlation_ref and the read-out of pb_readout_ref (float64, to rounding)."""
    torch.manual_seed(degree)
    B, C, H, L = 2, 2, 3, 7
    u = torch.randn(B, H, L, dtype=torch.float64)
    hist0 = torch.randn(B, H, degree - 1, dtype=torch.float64)
    coef = torch.randn(degree - 1, C, H, dtype=torch.float64)
    y0 = torch.randn(B, C, H, L, dtype=torch.float64)
    v_ref = correlation_ref(u, degree, hist0, squash)  # (B, P - 1, H, L)
    y_ref = pb_readout_ref(y0, u, coef, hist0, squash)
    hist = hist0
    for k in range(L):
        v = step_correlations(u[..., k], hist, degree, squash)
        assert torch.allclose(v, v_ref[..., k], rtol=1e-14, atol=1e-15)
        assert torch.allclose(pb_readout_step(y0[..., k], v, coef), y_ref[..., k], rtol=1e-13, atol=1e-14)
        one = pb_readout_step(y0[:, 0, :, k].clone(), v, coef[:, 0], inplace=True)  # one channel, (B, H)
        assert torch.allclose(one, pb_readout_ref(y0[:, :1], u, coef[:, :1], hist0, squash)[:, 0, :, k])
        hist = push_history(hist, u[..., k])
        assert torch.equal(hist, last_inputs(u[..., : k + 1], degree - 1, hist0))


@pytest.mark.parametrize("degree", [2, 3, 4])
@pytest.mark.parametrize("squash", [None, "tanh"])
@pytest.mark.parametrize("with_history", [False, True])
def test_pb_readout_matches_reference_with_gradients(degree, squash, with_history):
    """Each path of pb_readout (fused degree 2, Horner for higher degrees, explicit with squashing)
    against the loop reference: outputs and gradients in float64."""
    torch.manual_seed(0)
    B, C, H, L = 2, 2, 3, 9
    u = torch.randn(B, H, L, dtype=torch.float64, requires_grad=True)
    y = torch.randn(B, C, H, L, dtype=torch.float64, requires_grad=True)
    coef = torch.randn(degree - 1, C, H, dtype=torch.float64, requires_grad=True)
    hist = torch.randn(B, H, degree - 1, dtype=torch.float64) if with_history else None
    out = pb_readout(y, u, coef, hist, squash)
    ref = pb_readout_ref(y, u, coef, hist, squash)
    assert torch.allclose(out, ref, rtol=1e-13, atol=1e-13)
    g = torch.randn_like(out)
    grads = torch.autograd.grad(out, (y, u, coef), g)
    grads_ref = torch.autograd.grad(ref, (y, u, coef), g)
    for a, b in zip(grads, grads_ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-12, atol=1e-12)


def test_pb_readout_reverse_reads_the_following_inputs():
    torch.manual_seed(1)
    u = torch.randn(1, 2, 6, dtype=torch.float64)
    coef = torch.randn(2, 1, 2, dtype=torch.float64)
    y = pb_readout_reverse(torch.zeros(1, 1, 2, 6, dtype=torch.float64), anticorrelations(u, 3), coef)
    for k in range(6):  # sum_p c_p w^(p)_{k+1}, w^(p)_j = u_j ... u_{j+p-1}
        want = torch.zeros(2, dtype=torch.float64)
        for p in (2, 3):
            if k + p < 6:
                want += coef[p - 2, 0] * torch.prod(u[0, :, k + 1 : k + 1 + p], -1)
        assert torch.allclose(y[0, 0, :, k], want, atol=1e-14)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_kb_convolution_equals_explicit_sums(bidirectional):
    """y = k * u + sum_p kp_p * v^(p) (+ the anti-causal kernels on the following-input products), by
    explicit sums over lags."""
    torch.manual_seed(2)
    B, C, H, L, P = 2, 1, 2, 8, 3
    u = torch.randn(B, H, L, dtype=torch.float64)
    hist = torch.randn(B, H, P - 1, dtype=torch.float64)
    k = torch.randn(C, H, L, dtype=torch.float64)
    kp = torch.randn(P - 1, C, H, L, dtype=torch.float64)
    kb = torch.randn(C, H, L, dtype=torch.float64)
    kp_rev = torch.randn(P - 1, C, H, L, dtype=torch.float64) if bidirectional else None
    kk = bidirectional_kernel(k, kb) if bidirectional else k
    y, v = kb_convolution(u, kk, kp, hist, None, kp_rev)
    vs = correlation_ref(u, P, hist)
    assert all(torch.allclose(a, vs[:, i]) for i, a in enumerate(v))
    w = anticorrelation(u, P)
    want = torch.zeros(B, C, H, L, dtype=torch.float64)
    for t in range(L):
        for j in range(t + 1):
            want[..., t] += k[..., t - j] * u[:, None, :, j]
            for p in range(P - 1):
                want[..., t] += kp[p, :, :, t - j] * vs[:, None, p, :, j]
        if bidirectional:
            for j in range(t + 1, L):
                want[..., t] += kb[..., j - t - 1] * u[:, None, :, j]
                for p in range(P - 1):
                    want[..., t] += kp_rev[p, :, :, j - t - 1] * w[:, None, p, :, j]
    assert torch.allclose(y, want, atol=1e-12)
    assert len(correlations(u, P, hist)) == len(v)
