"""Numerical reliability of the layers: trainable A near its bound, float32 set-up of S4, caches that
follow every way of changing a parameter, bad rates, empty batches, half precision, a local GELU."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch.autograd import gradcheck

from liquid_s4 import LSSL, S4, S4D, LiquidS4, ModelConfig, SequenceModel
from liquid_s4.modules import snapshot
from liquid_s4.modules.block import activation_step
from liquid_s4.modules.kernel import real_part
from liquid_s4.ops.hippo import nplr

from ..reference import run_steps

ZERO_RE_INITS = ("legt", "lagt", "fout")  # Re Lambda = 0: every mode starts next to the bound


# ---- item 1: Re A trains for every init -------------------------------------------------------
@pytest.mark.parametrize("init", ZERO_RE_INITS)
def test_s4_gradcheck_every_parameter(init):
    """float64 gradcheck of S4 (output and next state) with respect to every parameter: with the
    old clamp, d/d log A_real was 0 analytically but not numerically for these inits."""
    torch.manual_seed(0)
    layer = S4(2, 4, init=init, l_max=8, channels=2, postact="linear").double()
    u = torch.randn(1, 8, 2, dtype=torch.float64)
    names = [n for n, _ in layer.named_parameters()]
    assert "ssm.log_A_real_gap" in names

    def f(*params):
        y, state = torch.func.functional_call(
            layer, dict(zip(names, params)), (u,), {"state": layer.default_state(1)}
        )
        return y, torch.view_as_real(state)

    params = tuple(p.detach().clone().requires_grad_() for p in layer.parameters())
    assert gradcheck(f, params, eps=1e-6, atol=1e-6, rtol=1e-5)


def _adam_moves_A_real(layer, steps: int = 5) -> torch.Tensor:
    u = torch.randn(2, 32, layer.d_model)
    before = layer.ssm.log_A_real_gap.detach().clone()
    opt = torch.optim.Adam(layer.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        layer(u)[0].square().mean().backward()
        assert layer.ssm.log_A_real_gap.grad.abs().min() > 0  # no mode is frozen
        opt.step()
    return (layer.ssm.log_A_real_gap.detach() - before).abs()


@pytest.mark.parametrize("init", ZERO_RE_INITS)
def test_s4_A_real_trains_from_the_imaginary_axis(init):
    torch.manual_seed(0)
    layer = S4(4, 8, init=init)
    assert torch.allclose(layer.ssm.Lambda().real, torch.full((4, 4), -2e-4), rtol=1e-5)  # documented start
    assert _adam_moves_A_real(layer).min() > 0  # every mode moved (the clamp left them all exactly in place)


def test_s4d_A_real_trains_next_to_the_bound():
    """Modes 1e-4 from the bound (where the clamp used to hold them) train."""
    torch.manual_seed(0)
    layer = S4D(4, 8)
    with torch.no_grad():
        layer.ssm.log_A_real_gap.fill_(math.log(1e-4))
    assert torch.allclose(layer.ssm.Lambda().real, torch.full((4, 4), -2e-4), rtol=1e-6, atol=0)
    assert _adam_moves_A_real(layer).min() > 0  # every mode moved (the clamp left them all exactly in place)


def test_A_real_bound_holds_for_any_parameter():
    x = torch.tensor([-1e4, -100.0, -30.0, 0.0, 5.0], requires_grad=True)
    re = real_part(x)
    assert bool((re <= -1e-4).all())
    re.sum().backward()
    assert bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize(
    "cls, init", [(S4, "legs"), (S4D, "lin"), (S4D, "inv"), (S4D, "legs"), (S4D, "real")]
)
def test_inits_away_from_the_bound_keep_their_A(cls, init):
    layer = cls(2, 16, init=init)
    A = layer.ssm.Lambda()
    if cls is S4 or init == "legs":
        expected = nplr("legs", 16)[0].real
    else:
        expected = {"lin": -0.5, "inv": -0.5, "real": -(torch.arange(8.0) + 1)}[init]
    assert torch.allclose(
        A.real, torch.as_tensor(expected, dtype=torch.float32).expand(2, 8), rtol=1e-6, atol=0
    )


@pytest.mark.parametrize("cls", [S4, S4D])
def test_weights_saved_with_log_A_real_load_converted(cls):
    """State dicts of the earlier parametrization (Re A = -max(exp(log_A_real), 1e-4)) load into the
    new one (Re A = -(1e-4 + exp(log_A_real_gap))) and give the same A."""
    torch.manual_seed(0)
    layer = cls(4, 8)
    old = {k: v for k, v in layer.state_dict().items() if k != "ssm.log_A_real_gap"}
    x = torch.randn(4, 4) * 2 - 4
    x[0] = math.log(1e-4) - 1.0  # clamped modes
    old["ssm.log_A_real"] = x
    fresh = cls(4, 8)
    fresh.load_state_dict(old)  # strict
    expected = -torch.exp(x.double()).clamp(min=1e-4)
    assert torch.allclose(
        fresh.ssm.Lambda().real.double(),
        expected,
        rtol=1e-5,
        atol=2e-7,
    )
    assert torch.equal(fresh.ssm.A_imag, layer.ssm.A_imag)


# ---- item 2: float32 S4 step --------------------------------------------------------------------
@pytest.mark.parametrize("init", ("legs",) + ZERO_RE_INITS)
def test_s4_float32_step_matches_convolution_at_4096(init):
    """C = C~ (I - A_bar^L)^{-1} is set up in float64: conv and step of a float32 layer agree to
    1e-4 (max |difference| / max |y|) at L = 4096 (it was 3e-2 for FouT, 4e-4 for LagT)."""
    torch.manual_seed(0)
    layer = S4(8, 64, init=init).eval()
    u = torch.randn(1, 4096, 8)
    with torch.no_grad():
        y, _ = layer(u)
        y_step, _ = run_steps(layer, u, path="fast")
    assert ((y - y_step).abs().max() / y.abs().max()).item() <= 1e-4


@pytest.mark.parametrize("init", ("legs",) + ZERO_RE_INITS)
def test_s4_float32_with_rate_matches_float64(init):
    """The rate != 1 kernel re-derives C~ in float64 too (float32: 2e-5 to 5e-5 for LagT and FouT)."""
    torch.manual_seed(0)
    layer = S4(8, 64, init=init).eval()
    u = torch.randn(1, 1024, 8)
    with torch.no_grad():
        layer(u)  # C~ at L = 1024
        wide = copy.deepcopy(layer).double()
        y, y64 = layer(u, rate=0.5)[0], wide(u.double(), rate=0.5)[0]
    assert ((y.double() - y64).abs().max() / y64.abs().max()).item() <= 1e-5


# ---- item 3: caches follow every change of a parameter --------------------------------------------
LAYERS = {
    "s4d": lambda: S4D(4, 8),
    "s4": lambda: S4(4, 8, l_max=32),
    "lssl": lambda: LSSL(4, 8),
    "liquid_pb": lambda: LiquidS4(4, 8, l_max=32, liquid_kernel="pb"),
    "liquid_kb": lambda: LiquidS4(4, 8, l_max=32, liquid_kernel="kb"),
}


def _edit_data_copy(layer, other):
    for p, q in zip(layer.parameters(), other.parameters()):
        p.data.copy_(q.data)


def _edit_data_add(layer, other):
    for p, q in zip(layer.parameters(), other.parameters()):
        p.data.add_(q.data - p.data)


def _edit_data_assign(layer, other):
    for p, q in zip(layer.parameters(), other.parameters()):
        p.data = q.data.clone()


def _edit_copy_no_grad(layer, other):
    with torch.no_grad():
        for p, q in zip(layer.parameters(), other.parameters()):
            p.copy_(q)


def _edit_load_state_dict(layer, other):
    layer.load_state_dict(other.state_dict())


def _edit_numpy(layer, other):
    for p, q in zip(layer.parameters(), other.parameters()):
        p.detach().numpy()[...] = q.detach().numpy()


def _edit_ema(layer, other, decay=0.9):
    for p, q in zip(layer.parameters(), other.parameters()):
        p.data.mul_(decay).add_(q.data, alpha=1 - decay)


EDITS = [
    _edit_data_copy,
    _edit_data_add,
    _edit_data_assign,
    _edit_copy_no_grad,
    _edit_load_state_dict,
    _edit_numpy,
    _edit_ema,
]


def _outputs(layer, u):
    """(forward output, step outputs) under no_grad, which fills (or uses) both caches."""
    with torch.no_grad():
        return layer(u)[0], run_steps(layer, u[:, :4], path="fast")[0]


@pytest.mark.parametrize("edit", EDITS, ids=lambda f: f.__name__[6:])
@pytest.mark.parametrize("name", list(LAYERS))
def test_caches_follow_parameter_edits(name, edit):
    torch.manual_seed(0)
    layer, other = LAYERS[name]().eval(), LAYERS[name]().eval()
    u = torch.randn(2, 32, 4)
    y0, s0 = _outputs(layer, u)
    edit(layer, other)
    y1, s1 = _outputs(layer, u)
    fresh = LAYERS[name]().eval()
    fresh.load_state_dict(layer.state_dict())
    y_ref, s_ref = _outputs(fresh, u)
    assert (y_ref - y0).abs().max() > 1e-2  # the edit matters
    assert torch.allclose(y1, y_ref, atol=1e-6, rtol=0) and torch.allclose(s1, s_ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize("name", list(LAYERS))
def test_caches_follow_averaged_model(name):
    torch.manual_seed(0)
    layer, other = LAYERS[name]().eval(), LAYERS[name]().eval()
    avg = torch.optim.swa_utils.AveragedModel(layer)
    u = torch.randn(2, 32, 4)
    _outputs(avg.module, u)
    avg.update_parameters(other)  # the first update copies, the second averages
    _outputs(avg.module, u)
    avg.update_parameters(layer)
    y1, s1 = _outputs(avg.module, u)
    fresh = LAYERS[name]().eval()
    fresh.load_state_dict(avg.module.state_dict())
    y_ref, s_ref = _outputs(fresh, u)
    assert torch.allclose(y1, y_ref, atol=1e-6, rtol=0) and torch.allclose(s1, s_ref, atol=1e-6, rtol=0)


def test_sequence_model_after_an_ema_update_equals_a_fresh_copy():
    torch.manual_seed(0)
    cfg = ModelConfig(d_input=3, d_output=5, d_model=8, n_layers=2, layer="s4d", layer_args={"d_state": 8})
    model, ema = SequenceModel(cfg).eval(), SequenceModel(cfg).eval()
    x = torch.randn(2, 24, 3)
    with torch.no_grad():
        ema(x)
        _edit_ema(ema, model, decay=0.5)
        fresh = SequenceModel(cfg).eval()
        fresh.load_state_dict(ema.state_dict())
        assert torch.allclose(ema(x), fresh(x), atol=1e-6, rtol=0)


@pytest.mark.parametrize("edit", [_edit_data_add, _edit_numpy], ids=["data_add", "numpy"])
def test_caches_follow_edits_without_memcmp(monkeypatch, edit):
    """The comparison used off the CPU (and where libc's memcmp is missing): torch.equal over bytes."""
    monkeypatch.setattr(snapshot, "_MEMCMP", None)
    test_caches_follow_parameter_edits("s4", edit)


def test_snapshot_sees_every_change():
    a, b = torch.zeros(3, 4), torch.zeros(2, dtype=torch.long)
    snap = snapshot.TensorSnapshot([a, b])
    assert snap.matches([a, b]) and not snap.matches([a]) and not snap.matches([b, a])
    a.data[1, 2] = -0.0  # a different bit pattern, equal as a number
    assert not snap.matches([a, b])
    a.data[1, 2] = 0.0
    assert snap.matches([a, b])
    a.data = a.data.t().contiguous().t()  # same values, another storage
    assert not snap.matches([a, b])
    a2 = torch.full((4,), float("nan"))
    assert snapshot.TensorSnapshot([a2]).matches([a2])  # NaN equals itself bitwise


def test_snapshot_ignores_unrelated_calls():
    """The caches are still used while nothing changes (one kernel / setup computation)."""
    layer = S4D(4, 8).eval()
    u = torch.randn(2, 16, 4)
    with torch.no_grad():
        layer(u)
        k = layer._kernel_cache.peek()
        layer(u)
        assert layer._kernel_cache.peek() is k
        layer.step(u[:, 0], layer.default_state(2))
        setup = layer._step_cache.peek()
        layer.step(u[:, 0], layer.default_state(2))
        assert layer._step_cache.peek() is setup


# ---- item 4: rate, empty batches, half precision ---------------------------------------------------
BAD_RATES = [0, 0.0, -1.0, float("nan"), float("inf"), -float("inf"), "fast", True]


@pytest.mark.parametrize("rate", BAD_RATES, ids=repr)
@pytest.mark.parametrize("cls", [S4D, S4, LSSL])
def test_bad_rate_is_rejected(cls, rate):
    layer = cls(4, 8)
    u = torch.randn(1, 16, 4)
    for call in (lambda: layer(u, rate=rate), lambda: layer.step(u[:, 0], layer.default_state(1), rate=rate)):
        with pytest.raises(ValueError, match="rate must be a finite number > 0"):
            call()
    with pytest.raises(ValueError, match="rate must be a finite number > 0"):
        layer.rate = rate
    assert layer.rate == 1.0
    layer.rate = 2  # a valid rate is kept as a float
    assert layer.rate == 2.0 and isinstance(layer.rate, float)


@pytest.mark.parametrize(
    "kw",
    [{}, {"liquid_kernel": "kb"}, {"liquid_kernel": "pb", "liquid_degree": 3}, {"bidirectional": True}],
    ids=["plain", "kb", "pb3", "bidir"],
)
@pytest.mark.parametrize("cls", [S4D, S4, LSSL])
def test_empty_batch(cls, kw):
    if cls is LSSL and "liquid_kernel" in kw:
        return
    layer = cls(4, 8, **kw)
    u = torch.randn(0, 16, 4, requires_grad=True)
    y, _ = layer(u)
    assert y.shape == (0, 16, 4)
    y.sum().backward()
    assert u.grad.shape == u.shape
    layer.eval()
    with torch.no_grad():
        assert layer(u)[0].shape == (0, 16, 4)
        if not layer.bidirectional:
            y, state = layer(u, state=layer.default_state(0), lengths=torch.zeros(0, dtype=torch.long))
            assert y.shape == (0, 16, 4) and state.shape[0] == 0
            y, state = layer.step(u[:, 0], layer.default_state(0))
            assert y.shape == (0, 4) and state.shape[0] == 0


@pytest.mark.parametrize("dtype, tol", [(torch.float16, 3e-3), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("name", list(LAYERS))
def test_half_precision_layer_keeps_a_float32_ssm(name, dtype, tol):
    """`.to(float16/bfloat16)` keeps the SSM tensors in float32 (the SSM part runs in float32); D,
    the output block and the outputs take the new dtype. Outputs match the float32 layer to `tol`
    (max |difference| / max |y|) on the same (rounded) inputs, in forward and step."""
    torch.manual_seed(0)
    layer = LAYERS[name]().eval()
    half = copy.deepcopy(layer).to(dtype)
    assert all(t.dtype == torch.float32 for t in half.ssm.tensors() if t.is_floating_point())
    assert half.D.dtype == dtype and half.output.projection[0].weight.dtype == dtype
    u = torch.randn(2, 32, 4).to(dtype)
    with torch.no_grad():
        y32, y = layer(u.float())[0], half(u)[0]
        s32, s = run_steps(layer, u[:, :8].float(), path="fast")[0], run_steps(half, u[:, :8], path="fast")[0]
    assert y.dtype == dtype and s.dtype == dtype
    assert ((y.float() - y32).abs().max() / y32.abs().max()).item() <= tol
    assert ((s.float() - s32).abs().max() / s32.abs().max()).item() <= tol
    back = copy.deepcopy(half).float()  # the SSM tensors lost nothing
    assert all(torch.equal(a, b) for a, b in zip(back.ssm.tensors(), layer.ssm.tensors()))


def test_half_precision_trains():
    torch.manual_seed(0)
    layer = S4D(4, 8).to(torch.bfloat16)
    u = torch.randn(2, 32, 4, dtype=torch.bfloat16)
    layer(u)[0].float().square().mean().backward()
    assert layer.ssm.log_A_real_gap.grad.dtype == torch.float32 and layer.D.grad.dtype == torch.bfloat16


# ---- item 5: GELU without global switches -----------------------------------------------------------
@pytest.mark.parametrize("shape", [(1, 256), (64, 256), (3, 5), (1, 1), (2, 3)])
def test_activation_step_gelu_equals_gelu(shape):
    """Equal to nn.functional.gelu within 1e-6 absolute (it is PyTorch's own GELU kernel; the
    default call may go through oneDNN, which differs by a few ulps)."""
    y = torch.randn(shape) * 4
    for approximate in ("none", "tanh"):
        out = activation_step(torch.nn.GELU(approximate=approximate), y)
        assert out.shape == y.shape and out.is_contiguous()
        assert torch.allclose(out, torch.nn.functional.gelu(y, approximate=approximate), atol=1e-6, rtol=0)


def test_step_leaves_process_wide_switches_alone(monkeypatch):
    def forbidden(*args):
        raise AssertionError("a layer step changed the process-wide oneDNN switch")

    monkeypatch.setattr(torch._C, "_set_mkldnn_enabled", forbidden)
    layer = S4D(4, 8).eval()
    with torch.no_grad():
        y, _ = layer.step(torch.randn(1, 4), layer.default_state(1))
    assert y.shape == (1, 4)
