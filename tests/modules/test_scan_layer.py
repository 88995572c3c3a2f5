"""S4D with liquid_kernel="scan": the exact liquid recurrence as a layer, against brute-force float64
loops written from the layer's own parameters."""

from __future__ import annotations

import math

import pytest
import torch

from liquid_s4 import S4, S4D, SequenceModel
from liquid_s4.modules.lssl import LSSL
from liquid_s4.ops import fused_scan
from liquid_s4.ops.discretize import discretize_diag
from liquid_s4.ops.scan import naive_liquid_scan

from ..reference import LargestTensor

FORMS = [("discrete", "zoh"), ("discrete", "bilinear"), ("split", "zoh"), ("ode", "zoh")]
FORM_NAMES = ("discrete", "split", "ode")


def _layer(form="discrete", disc="zoh", channels=1, squash=None, bidirectional=False, H=3, N=8, seed=0):
    torch.manual_seed(seed)
    layer = S4D(
        H,
        N,
        disc=disc,
        channels=channels,
        liquid_kernel="scan",
        liquid_form=form,
        liquid_squash=squash,
        bidirectional=bidirectional,
        activation=None,
        postact="linear" if channels > 1 else None,
        transposed=True,
    ).double()
    with torch.no_grad():  # a B large enough that the liquid terms matter
        layer.ssm.B.mul_(3.0)
    return layer


def brute_force(layer, u, rate=None, x0=None):
    """y (B, C, H, L) without the output block, and the last state, by a loop over steps, discretizing
    each step with its own step size dt * rate_k (float64)."""
    ssm, conv = layer.ssm, layer.conv
    A = ssm.Lambda().detach()
    Bv = torch.view_as_complex(ssm.B).detach()
    C = torch.view_as_complex(ssm.C).detach()[: layer.channels]
    dt = torch.exp(ssm.log_dt).detach()
    Bsz, H, L = u.shape
    rate = torch.ones(Bsz, L, dtype=u.dtype) if rate is None else rate
    rate = rate if isinstance(rate, torch.Tensor) else torch.full((Bsz, L), float(rate), dtype=u.dtype)
    x = torch.zeros(Bsz, H, A.shape[-1], dtype=A.dtype) if x0 is None else x0
    squash = layer.liquid_squash == "tanh" or layer.liquid_form in ("split", "ode")
    ys = []
    for k in range(L):
        uk = u[..., k, None]
        sk = torch.tanh(uk) if squash else uk
        d = dt[None, :, None] * rate[:, k, None, None]  # (B, H, 1)
        if layer.liquid_form == "discrete":
            dA, dB = discretize_diag(layer.disc, A, Bv, d)
            x = (dA + dB * sk) * x + dB * uk
        elif layer.liquid_form == "split":
            dA, dB = discretize_diag("zoh", A, Bv, d)
            r = Bv.abs()
            bt = Bv * (-A.real) * torch.tanh(r / -A.real) / r
            x = dA * (1 + d * bt * sk) * x + dB * uk
        else:
            rho = -A.real
            bt = torch.complex(rho * torch.tanh(Bv.real / rho), Bv.imag)
            z = A + bt * sk
            x = torch.exp(d * z) * x + (torch.exp(d * z) - 1) / z * Bv * uk
        ys.append(2 * torch.einsum("chn,bhn->bch", C, x).real)
    y = torch.stack(ys, -1) + conv.D.detach()[None, :, :, None] * u[:, None]
    return y, x


@pytest.mark.parametrize("form,disc", FORMS)
@pytest.mark.parametrize("squash", [None, "tanh"])
def test_forward_equals_the_brute_force_recurrence(form, disc, squash):
    if form in ("split", "ode") and squash is None:
        squash = "tanh"
    layer = _layer(form, disc, channels=2, squash=squash)
    u = torch.randn(2, 3, 60, dtype=torch.float64)
    y_ssm, x = layer.conv.scan(layer.ssm.scan_coefficients(1.0, form), u, 1.0)
    y_ref, x_ref = brute_force(layer, u)
    assert torch.allclose(y_ssm, y_ref, rtol=1e-10, atol=1e-10)
    assert torch.allclose(x, x_ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("form,disc", FORMS)
def test_per_step_time_gaps_equal_a_per_step_discretization(form, disc):
    """rate a (B, L) tensor: every step discretized with its own step size, against the brute force."""
    layer = _layer(form, disc, squash="tanh" if form in ("split", "ode") else None)
    u = torch.randn(2, 3, 45, dtype=torch.float64)
    rate = torch.exp(torch.randn(2, 45, dtype=torch.float64))  # gaps over more than a decade
    y, _ = layer(u, rate=rate)
    y_ref, _ = brute_force(layer, u, rate)
    assert torch.allclose(y, y_ref[:, 0], rtol=1e-10, atol=1e-10)
    y_one, _ = layer(u, rate=torch.full((2, 45), 1.7, dtype=torch.float64))
    assert torch.allclose(y_one, layer(u, rate=1.7)[0], rtol=1e-12, atol=1e-12)


def test_scan_minus_the_plain_layer_is_the_complete_second_order_term():
    """y_scan - y_plain = sum_{i<j<=k} 2 Re(C A_bar^{k-1-i} B_bar^2) u_i u_j + O(a^3) for inputs of
    amplitude a: the residual falls by 8 when a halves (KB2 would keep only the pairs j = i + 1)."""
    layer = _layer("discrete", "zoh")
    plain = _layer("discrete", "zoh")
    plain.liquid_kernel = None
    plain.load_state_dict(layer.state_dict())
    sys = layer.discrete()
    dA, dB, C = sys.dA.detach(), sys.dB.detach(), sys.C.detach()[0]
    L = 24
    u0 = torch.randn(1, 3, L, dtype=torch.float64)
    k = torch.arange(L)
    # second-order term: sum over i < j <= k of C dA^{k-1-i} dB^2 u_i u_j
    P = (k[:, None] - 1 - k[None, :]).clamp(min=0)  # (k, i)
    W = 2 * (C[:, None, None, :] * dA[:, None, None, :] ** P[None, :, :, None] * dB[:, None, None, :] ** 2)
    W = W.sum(-1).real  # (H, k, i)

    def residual(a):
        u = a * u0
        y_scan = layer(u)[0]
        y_plain = plain(u)[0]
        cum = torch.cumsum(u, -1)  # sum_{j<=k} u_j
        pair = torch.zeros_like(u)
        for kk in range(L):
            for i in range(kk):  # j runs over i+1..kk: sum = cum[kk] - cum[i]
                pair[..., kk] += W[:, kk, i] * u[..., i] * (cum[..., kk] - cum[..., i])
        return (y_scan - y_plain - pair).abs().max().item(), pair.abs().max().item()

    r1, p1 = residual(1e-2)
    r2, _ = residual(5e-3)
    assert r1 < 0.05 * p1  # the second-order term is what differs
    assert 6.0 < r1 / r2 < 10.0  # third order


@pytest.mark.parametrize("form,disc", FORMS)
def test_step_equals_forward(form, disc):
    layer = _layer(form, disc, channels=2)
    u = torch.randn(2, 3, 40, dtype=torch.float64)
    y, _ = layer(u)
    for grad in (False, True):  # cached fast set-up, and the differentiable step
        with torch.set_grad_enabled(grad):
            state, ys = layer.default_state(2), []
            for t in range(40):
                yt, state = layer.step(u[..., t], state)
                ys.append(yt)
        assert torch.allclose(torch.stack(ys, -1), y, rtol=1e-10, atol=1e-10)


def test_step_equals_forward_in_float32_at_length_4096():
    torch.manual_seed(1)
    layer = S4D(8, 16, liquid_kernel="scan", transposed=True)
    u = torch.randn(2, 8, 4096)
    with torch.no_grad():
        y, _ = layer(u)
        state, ys = layer.default_state(2), []
        for t in range(4096):
            yt, state = layer.step(u[..., t], state)
            ys.append(yt)
    assert (torch.stack(ys, -1) - y).abs().max().item() <= 1e-4


def test_per_step_rate_in_step_mode_equals_forward():
    layer = _layer("ode", "zoh", squash="tanh")
    u = torch.randn(2, 3, 30, dtype=torch.float64)
    rate = 0.2 + torch.rand(2, 30, dtype=torch.float64) * 3
    y, _ = layer(u, rate=rate)
    state, ys = layer.default_state(2), []
    for t in range(30):
        yt, state = layer.step(u[..., t], state, rate=rate[:, t])
        ys.append(yt)
    assert torch.allclose(torch.stack(ys, -1), y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("form,disc", FORMS)
def test_state_passing_across_random_chunks_and_lengths(form, disc):
    layer = _layer(form, disc)
    u = torch.randn(3, 3, 70, dtype=torch.float64)
    rate = 0.5 + torch.rand(3, 70, dtype=torch.float64)
    y, _ = layer(u, rate=rate)
    state, outs, s0 = layer.default_state(3), [], 0
    for s1 in (1, 17, 18, 50, 70):
        yc, state = layer(u[..., s0:s1], state, rate=rate[:, s0:s1])
        outs.append(yc)
        s0 = s1
    assert torch.allclose(torch.cat(outs, -1), y, rtol=1e-10, atol=1e-10)
    # lengths: outputs zero past each length, the state is the one after each sequence's own inputs
    lengths = torch.tensor([0, 33, 70])
    yl, sl = layer(u, layer.default_state(3), lengths=lengths, rate=rate)
    for b, n in enumerate(lengths.tolist()):
        assert (yl[b, :, n:] == 0).all()
        if n:
            yb, sb = layer(u[b : b + 1, :, :n], layer.default_state(1), rate=rate[b : b + 1, :n])
            assert torch.allclose(yl[b, :, :n], yb[0], rtol=1e-10, atol=1e-10)
            assert torch.allclose(sl[b], sb[0], rtol=1e-10, atol=1e-10)
        else:
            assert (sl[b] == 0).all()


def test_bidirectional_adds_the_reversed_pass_from_the_following_inputs():
    layer = _layer("discrete", "zoh", bidirectional=True)
    u = torch.randn(2, 3, 25, dtype=torch.float64)
    lengths = torch.tensor([25, 14])
    y, _ = layer(u, lengths=lengths)
    C = torch.view_as_complex(layer.ssm.C).detach()
    for b, n in enumerate(lengths.tolist()):
        fwd, _ = brute_force(layer, u[b : b + 1, :, :n])
        # the anti-causal half: the same recurrence on the reversed sequence, read out by C[1]
        coef = layer.ssm.scan_coefficients()
        ur = u[b : b + 1, :, :n].flip(-1)
        rev, _ = naive_liquid_scan("affine", ur, torch.zeros_like(ur), coef.a, coef.b, coef.bt, C[1:])
        anti = torch.nn.functional.pad(rev.flip(-1)[..., 1:], (0, 1))
        assert torch.allclose(y[b, :, :n], (fwd + anti)[0, 0], rtol=1e-10, atol=1e-10)
        assert (y[b, :, n:] == 0).all()


def test_gradients_reach_every_parameter_and_match_the_reference_implementation():
    layer = _layer("ode", "zoh", channels=2, squash="tanh")
    u = torch.randn(2, 3, 90, dtype=torch.float64, requires_grad=True)
    rate = (0.5 + torch.rand(2, 90, dtype=torch.float64)).requires_grad_()
    y, _ = layer(u, rate=rate)
    w = torch.randn_like(y)
    grads = torch.autograd.grad((y * w).sum(), [u, rate, *layer.parameters()])
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)
    coef = layer.ssm.scan_coefficients(rate, "ode")  # the step-by-step reference, through autograd
    d = layer.conv.step_sizes(coef, rate, tuple(u.shape), u)
    y_ref, _ = naive_liquid_scan("ode", u, d, coef.a, coef.b, coef.bt, coef.C[:2], squash=True)
    y_ref = layer.output(
        torch.addcmul(y_ref, layer.conv.D[..., None], u[:, None]).flatten(1, 2), torch.float64, True
    )
    ref = torch.autograd.grad((y_ref * w).sum(), [u, rate, *layer.parameters()])
    for a, b in zip(grads, ref, strict=True):
        assert torch.allclose(a, b, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("impl", ["chunk", "fused"])
def test_no_state_sized_tensor_in_forward_or_backward(impl, monkeypatch):
    """Neither implementation builds a (B, H, N/2, L) tensor: the largest tensor of forward and backward
    stays at most one block of states (chunk: 1024 steps) or the size of the inputs."""
    if impl == "fused" and not fused_scan.available():
        pytest.skip("numba (the fast extra) not installed")
    from liquid_s4.ops import scan as scan_ops

    real = scan_ops.liquid_scan
    monkeypatch.setattr("liquid_s4.modules.conv.liquid_scan", lambda *a, **k: real(*a, **k, impl=impl))
    B, H, N2, L = 1, 2, 8, 8192
    layer = S4D(H, 2 * N2, liquid_kernel="scan", transposed=True)
    u = torch.randn(B, H, L, requires_grad=True)
    with LargestTensor() as big:
        y, _ = layer(u)
        y.sum().backward()
    assert big.numel <= B * H * N2 * L // 4, big.numel


def test_the_discrete_form_can_diverge_where_the_stable_forms_cannot():
    """Why "split" and "ode" exist: with |A_bar + B_bar u| > 1 the discrete recurrence grows
    geometrically; the stable forms stay bounded on the same input, with the same parameters."""
    torch.manual_seed(0)
    layers = {f: S4D(2, 4, liquid_kernel="scan", liquid_form=f, transposed=True).double() for f in FORM_NAMES}
    for layer in layers.values():
        layer.load_state_dict(layers["discrete"].state_dict())
        with torch.no_grad():
            layer.ssm.B.fill_(40.0)
            layer.ssm.log_dt.fill_(math.log(0.1))
    u = torch.full((1, 2, 3000), 3.0, dtype=torch.float64)
    y = layers["discrete"](u)[0]
    assert not torch.isfinite(y).all() or y.abs().max() > 1e6
    for form in ("split", "ode"):
        y = layers[form](u)[0]
        assert torch.isfinite(y).all() and y.abs().max() < 1e6, form


@pytest.mark.parametrize("form", ["split", "ode"])
def test_training_at_length_16384_stays_finite_with_a_stable_form(form):
    """Unit-variance inputs, a large B and learning rate, L = 16384: every loss and gradient stays
    finite."""
    torch.manual_seed(0)
    layer = S4D(4, 16, liquid_kernel="scan", liquid_form=form, transposed=True, lr=None)
    with torch.no_grad():
        layer.ssm.B.mul_(20.0)  # a transition that the discrete form could not keep stable
    opt = torch.optim.Adam(layer.parameters(), lr=0.05)
    for _ in range(4):
        u = torch.randn(2, 4, 16384)
        y, _ = layer(u)
        loss = (y - u.roll(5, -1)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        assert math.isfinite(loss.item())
        assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
        opt.step()


def test_bad_arguments_get_clear_errors():
    with pytest.raises(ValueError, match="init='legs'"):
        S4(4, 8, liquid_kernel="scan")
    with pytest.raises(ValueError, match="diagonal state matrix"):
        LSSL(4, 8, liquid_kernel="scan")
    with pytest.raises(ValueError, match="unknown liquid_form"):
        S4D(4, 8, liquid_kernel="scan", liquid_form="euler")
    with pytest.raises(ValueError, match="set liquid_kernel='scan'"):
        S4D(4, 8, liquid_form="ode")
    with pytest.raises(ValueError, match="disc='zoh'"):
        S4D(4, 8, liquid_kernel="scan", liquid_form="ode", disc="bilinear")
    with pytest.raises(ValueError, match="disc='zoh'"):
        S4D(4, 8, liquid_kernel="scan", liquid_form="split", disc="bilinear")
    u = torch.randn(2, 10, 4)
    with pytest.raises(ValueError, match="needs liquid_kernel='scan'"):
        S4D(4, 8)(u, rate=torch.ones(2, 10))
    scan = S4D(4, 8, liquid_kernel="scan")
    with pytest.raises(ValueError, match=r"shape \(2, 10\)"):
        scan(u, rate=torch.ones(2, 9))
    with pytest.raises(ValueError, match="finite and > 0"):
        scan(u, rate=torch.zeros(2, 10))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        scan.step(u[:, 0], scan.default_state(2), rate=torch.ones(3))


def test_sequence_model_with_scan_layers_steps_like_its_forward():
    torch.manual_seed(0)
    model = SequenceModel(
        d_input=2,
        d_output=3,
        d_model=8,
        n_layers=2,
        layer="s4d",
        pool="none",
        layer_args={"d_state": 8, "liquid_kernel": "scan"},
    ).eval()
    x = torch.randn(2, 30, 2)
    with torch.no_grad():
        y = model(x)
        state, ys = model.default_state(2), []
        for t in range(30):
            yt, state = model.step(x[:, t], state)
            ys.append(yt)
    assert torch.allclose(torch.stack(ys, 1), y, rtol=1e-4, atol=1e-5)


def test_the_cached_step_coefficients_follow_every_parameter_edit():
    """Evaluation caches the scan's step coefficients; an in-place edit of any SSM tensor (p.data) or D
    rebuilds them, so the step keeps equalling the forward."""
    layer = _layer("discrete", "zoh").eval()
    u = torch.randn(2, 3, 5, dtype=torch.float64)
    with torch.no_grad():
        layer.step(u[..., 0], layer.default_state(2))  # fills the cache
        for p in [*layer.ssm.parameters(), layer.conv.D]:
            p.data.mul_(0.9)
            y, _ = layer(u)
            state, ys = layer.default_state(2), []
            for t in range(5):
                yt, state = layer.step(u[..., t], state)
                ys.append(yt)
            assert torch.allclose(torch.stack(ys, -1), y, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("pool", ["none", "mean"])
def test_sequence_model_steps_with_per_step_time_gaps_like_its_forward(pool):
    torch.manual_seed(1)
    model = SequenceModel(
        d_input=1,
        d_output=2,
        d_model=8,
        n_layers=2,
        layer="s4d",
        pool=pool,
        layer_args={"d_state": 8, "liquid_kernel": "scan", "liquid_form": "ode"},
    ).eval()
    x, rate = torch.randn(3, 25, 1), 0.2 + 2 * torch.rand(3, 25)
    with torch.no_grad():
        y = model(x, rate=rate)
        state = model.default_state(3)
        for t in range(25):
            yt, state = model.step(x[:, t], state, rate=rate[:, t])
            if pool == "none":
                assert torch.allclose(yt, y[:, t], rtol=1e-4, atol=1e-5)
    if pool == "mean":
        assert torch.allclose(yt, y, rtol=1e-4, atol=1e-5)
