"""SequenceModel.step's inference fast path (`StepProgram`) against the layer-by-layer reference path:
every layer family and kind of step (folded matrix, the layer's fast recurrence, the layer's own step),
norms, pools, channels, dtypes; the program follows every parameter change and leaves the calls it
cannot serve to the reference."""

import pytest
import torch

from liquid_s4 import SequenceModel
from liquid_s4.models.step_program import StepProgram

from ..reference import randomize_norms

FAMILIES = {
    "s4-fold": dict(layer="s4", layer_args=dict(d_state=8)),
    "liquid_s4-pb-fold": dict(
        layer="liquid_s4", layer_args=dict(d_state=8, liquid_kernel="pb", liquid_degree=3)
    ),
    "liquid_s4-kb-fold": dict(
        layer="liquid_s4", layer_args=dict(d_state=4, liquid_kernel="kb", liquid_degree=2)
    ),
    "s4d-tanh-fold": dict(layer="s4d", layer_args=dict(d_state=8, liquid_kernel="pb", liquid_squash="tanh")),
    "s4d-fast": dict(layer="s4d", layer_args=dict(d_state=64)),
    "s4d-kb-fast": dict(layer="s4d", layer_args=dict(d_state=64, liquid_kernel="kb", liquid_degree=3)),
    "s4-fast": dict(layer="s4", layer_args=dict(d_state=32, channels=2)),
    "lssl-fold": dict(layer="lssl", layer_args=dict(d_state=5)),
    "lssl-layer": dict(layer="lssl", layer_args=dict(d_state=24)),
    "s4d-scan-layer": dict(
        layer="s4d", layer_args=dict(d_state=8, liquid_kernel="scan", liquid_form="split")
    ),
    "s4-fold-channels": dict(layer="s4", layer_args=dict(d_state=4, channels=2, postact="linear")),
}
KIND = {"fold": "fold", "fast": "fast", "layer": "layer"}


def make(family, norm="batch", prenorm=True, pool="mean", dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    m = SequenceModel(
        d_input=2,
        d_output=3,
        d_model=8,
        n_layers=2,
        norm=norm,
        prenorm=prenorm,
        pool=pool,
        **FAMILIES[family],
        **kw,
    ).to(dtype)
    randomize_norms(m)  # norms away from the identity, so every norm parameter counts
    return m.eval()


def run(m, x, program: bool, state=None):
    m.use_step_program = program
    state = m.default_state(x.shape[0]) if state is None else state
    ys = []
    with torch.no_grad():
        for t in range(x.shape[1]):
            y, state = m.step(x[:, t], state)
            ys.append(y)
    m.use_step_program = True
    return torch.stack(ys, 1), state


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("norm,prenorm,pool", [("batch", True, "mean"), ("layer", False, "none")])
def test_program_equals_reference(family, norm, prenorm, pool):
    m = make(family, norm, prenorm, pool)
    x = torch.randn(3, 30, 2, dtype=torch.float64)
    ref, s_ref = run(m, x, False)
    out, s_out = run(m, x, True)
    program = m._program_cache.peek()
    assert program is not None
    kind = family.split("-")[-1] if family.split("-")[-1] in KIND else family.split("-")[-2]
    assert {b.kind for b in program.blocks} == {KIND[kind]}
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-10)
    for a, b in zip(s_out["layers"], s_ref["layers"]):
        torch.testing.assert_close(a, b.contiguous(), rtol=1e-10, atol=1e-10)
    # the states are interchangeable: the program continues the reference's state and vice versa
    x2 = torch.randn(3, 7, 2, dtype=torch.float64)
    torch.testing.assert_close(
        run(m, x2, True, s_ref)[0], run(m, x2, False, s_out)[0], rtol=1e-10, atol=1e-10
    )


def test_program_float32_and_tokens():
    m = make("liquid_s4-pb-fold", dtype=torch.float32)
    x = torch.randn(2, 50, 2)
    torch.testing.assert_close(run(m, x, True)[0], run(m, x, False)[0], rtol=1e-5, atol=1e-5)
    torch.manual_seed(0)
    t = (
        SequenceModel(
            d_input=1, d_output=3, d_model=8, n_layers=2, vocab_size=7, layer="s4", layer_args=dict(d_state=4)
        )
        .double()
        .eval()
    )
    tokens = torch.randint(0, 7, (2, 20))
    torch.testing.assert_close(run(t, tokens, True)[0], run(t, tokens, False)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("edit", ["ssm.data", "D", "batchnorm", "layer rate", "load_state_dict"])
def test_program_follows_every_change(edit):
    m = make("liquid_s4-pb-fold")
    x = torch.randn(2, 12, 2, dtype=torch.float64)
    run(m, x, True)  # builds the program
    with torch.no_grad():
        if edit == "ssm.data":
            next(m.blocks[1].layer.ssm.parameters()).data.mul_(0.8)
        elif edit == "D":
            m.blocks[0].layer.conv.D.data.add_(0.5)
        elif edit == "batchnorm":
            m.blocks[0].norm.norm.running_var.data.mul_(3.0)
        elif edit == "layer rate":
            m.blocks[0].layer.rate = 2.0
        else:
            m.load_state_dict(make("liquid_s4-pb-fold", seed=5).state_dict())
    torch.testing.assert_close(run(m, x, True)[0], run(m, x, False)[0], rtol=1e-10, atol=1e-10)


def test_calls_the_program_cannot_serve_take_the_reference_path():
    m = make("s4-fold", norm="layer")
    x = torch.randn(2, 2, dtype=torch.float64)
    state = m.default_state(2)
    # gradients enabled: the differentiable reference (gradients reach the parameters)
    y, _ = m.step(x, state)
    y.sum().backward()
    assert m.blocks[0].layer.conv.D.grad is not None
    assert m.__dict__.get("_program_cache") is None or m._program_cache.peek() is None
    # a forward hook on a part the program replaces is still called
    calls = []
    m.blocks[0].layer.output.projection.register_forward_hook(lambda *a: calls.append(1))
    with torch.no_grad():
        m.step(x, state)
    assert calls
    # a part in training mode (dropout): the reference path
    m2 = make("s4-fold", norm="layer")
    m2.blocks[1].train()
    with torch.no_grad():
        m2.step(x, m2.default_state(2))
    program = m2.__dict__.get("_program_cache")
    assert program is None or program.peek() is None or not program.peek().usable()


def test_program_tensors_cover_the_layer_caches():
    """The program's cache key holds every tensor the layers' own caches are keyed by, and the norms'."""
    m = make("liquid_s4-pb-fold")
    keyed = {id(t) for t in StepProgram.tensors(m)}
    for b in m.blocks:
        assert {id(t) for t in b.layer.cached_tensors()} <= keyed
        assert {id(t) for t in (b.norm.norm.weight, b.norm.norm.running_var)} <= keyed
