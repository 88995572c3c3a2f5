"""FastStream (the numba per-sample path) against the eager reference `SequenceModel.step`."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("numba")

from liquid_s4.deploy import fast  # noqa: E402
from liquid_s4.deploy.fast import FastStream  # noqa: E402
from liquid_s4.models.sequence import SequenceModel  # noqa: E402

from ..reference import randomize_norms  # noqa: E402

L = 300  # steps per comparison


def build(dtype=torch.float64, seed=0, layer="s4d", layer_args=None, **kw) -> SequenceModel:
    torch.manual_seed(seed)
    cfg = dict(d_input=2, d_output=3, d_model=8, n_layers=2, layer=layer)
    cfg.update(kw)
    model = SequenceModel(**cfg, layer_args={"d_state": 4, **(layer_args or {})}).to(dtype).eval()
    randomize_norms(model)
    return model


def inputs(model: SequenceModel, B: int, n: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    c = model.config
    if c.vocab_size:
        return torch.randint(0, c.vocab_size, (B, n), generator=g)
    return torch.randn(B, n, c.d_input, generator=g, dtype=model.decoder.weight.dtype)


def reference(model, x, state=None, rate=None, **options):
    """model.step looped over x (B, n, ...): (outputs (B, n, d_output), final state)."""
    state = model.default_state(x.shape[0], **options) if state is None else state
    ys = []
    with torch.no_grad():
        for k in range(x.shape[1]):
            y, state = model.step(x[:, k], state, rate=rate)
            ys.append(y)
    return torch.stack(ys, 1), state


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max() / b.double().abs().max().clamp(min=1e-30))


CASES = {
    "s4d": dict(),
    "s4d-pb": dict(layer_args=dict(liquid_kernel="pb")),
    "s4d-kb3-tanh": dict(layer_args=dict(liquid_kernel="kb", liquid_degree=3, liquid_squash="tanh")),
    "s4d-pb3-batch-postnorm": dict(
        layer_args=dict(liquid_kernel="pb", liquid_degree=3), norm="batch", prenorm=False
    ),
    "s4d-bilinear-last": dict(layer_args=dict(disc="bilinear"), pool="last"),
    "scan-discrete": dict(layer_args=dict(liquid_kernel="scan", liquid_form="discrete")),
    "scan-discrete-tanh": dict(layer_args=dict(liquid_kernel="scan", liquid_squash="tanh"), norm="batch"),
    "scan-split": dict(layer_args=dict(liquid_kernel="scan", liquid_form="split"), pool="none"),
    "scan-ode": dict(layer_args=dict(liquid_kernel="scan", liquid_form="ode"), prenorm=False),
    "s4": dict(layer="s4", layer_args=dict(d_state=8)),
    "s4-pb-batch": dict(layer="s4", layer_args=dict(d_state=8, liquid_kernel="pb"), norm="batch"),
    "s4-kb-postnorm": dict(layer="s4", layer_args=dict(d_state=8, liquid_kernel="kb"), prenorm=False),
    "liquid_s4-pb": dict(layer="liquid_s4", layer_args=dict(d_state=8, init="legt"), pool="none"),
    "liquid_s4-kb-batch": dict(
        layer="liquid_s4", layer_args=dict(d_state=8, liquid_kernel="kb"), norm="batch"
    ),
    "lssl": dict(layer="lssl", layer_args=dict(d_state=5)),
    "lssl-zoh-batch-postnorm": dict(layer="lssl", layer_args=dict(disc="zoh"), norm="batch", prenorm=False),
    "channels2-linear-silu": dict(layer_args=dict(channels=2, postact="linear", activation="silu")),
    "s4-channels2-pb-relu": dict(
        layer="s4", layer_args=dict(d_state=8, channels=2, liquid_kernel="pb", activation="relu"), pool="last"
    ),
    "postact-none-tanh": dict(layer_args=dict(postact=None, activation="tanh")),
    "sigmoid-identity": dict(layer_args=dict(activation="sigmoid"), n_layers=1),
    "identity": dict(layer_args=dict(activation="identity", liquid_kernel="pb")),
    "tokens": dict(vocab_size=11, pool="none"),
    "tokens-s4-batch": dict(vocab_size=5, layer="s4", layer_args=dict(d_state=8), norm="batch"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_fast_equals_step_float64(name):
    model = build(**CASES[name])
    x = inputs(model, 2, L)
    ref, _ = reference(model, x)
    fs = FastStream(model, batch_size=2)
    assert rel_err(fs.run(x), ref) <= 1e-10
    fs.reset()
    ys = torch.stack([fs.step(x[:, k]) for k in range(40)], 1)
    assert ys.dtype == torch.float64 and ys.shape == (2, 40, 3)
    assert rel_err(ys, ref[:, :40]) <= 1e-10


@pytest.mark.parametrize("name", ["s4d-pb", "s4-pb-batch", "scan-ode", "lssl", "tokens"])
def test_fast_equals_step_float32(name):
    model = build(torch.float32, **CASES[name])
    x = inputs(model, 2, L)
    ref, _ = reference(model, x)
    y = FastStream(model, batch_size=2).run(x)
    assert y.dtype == torch.float32
    assert rel_err(y, ref) <= 1e-4


def test_run_equals_step_and_input_forms():
    """run on a chunk == step on each sample; (B,) and (B, 1) inputs, torch or numpy, give the same."""
    model = build(d_input=1, layer_args=dict(liquid_kernel="pb"))
    x = inputs(model, 3, 50)
    a, b, c = (FastStream(model, batch_size=3) for _ in range(3))
    ya = torch.cat([a.run(x[:, :17]), a.run(x[:, 17:])], 1)
    yb = torch.stack([b.step(x[:, k, 0]) for k in range(50)], 1)  # (B,) torch
    yc = torch.stack([c.step(x[:, k].numpy()) for k in range(50)], 1)  # (B, 1) numpy
    assert torch.equal(ya, yb) and torch.equal(ya, yc)
    assert rel_err(ya, reference(model, x)[0]) <= 1e-10
    d = FastStream(model, batch_size=3)  # float32 inputs are converted, like model.step
    assert torch.equal(d.run(x.float()), FastStream(model, batch_size=3).run(x.float().double()))


def test_rate():
    model = build(layer="s4", layer_args=dict(d_state=8, liquid_kernel="pb"))
    x = inputs(model, 1, 100)
    assert rel_err(FastStream(model, rate=2.0).run(x), reference(model, x, rate=2.0)[0]) <= 1e-10
    model.blocks[0].layer.rate = 0.5  # None: each layer's own rate, as in model.step
    assert rel_err(FastStream(model).run(x), reference(model, x)[0]) <= 1e-10


@pytest.mark.parametrize(
    "options",
    [
        dict(),
        dict(pool_window=7),
        dict(pool_decay=0.9),
        dict(reset_every=23),
        dict(pool_window=5, reset_every=9),
    ],
)
@pytest.mark.parametrize("name", ["s4-pb-batch", "s4d-pb3-batch-postnorm"])
def test_state_round_trip(name, options):
    """fast -> model.step -> fast continues the stream exactly, with every continuous-stream option."""
    model = build(**CASES[name])
    x = inputs(model, 2, 120)
    ref, _ = reference(model, x, **options)
    fs = FastStream(model, batch_size=2, **options)
    y1 = fs.run(x[:, :50])
    state = fs.state()
    y2, state = reference(model, x[:, 50:80], state=state)
    fs2 = FastStream(model, batch_size=2, **options)
    fs2.set_state(state)
    y3 = fs2.run(x[:, 80:])
    assert rel_err(torch.cat([y1, y2, y3], 1), ref) <= 1e-10
    # and a state taken over from model.step at once
    fs3 = FastStream(model, batch_size=2, **options)
    fs3.set_state(model.default_state(2, **options))
    assert rel_err(fs3.run(x), ref) <= 1e-10


@pytest.mark.parametrize("options", [dict(pool_window=16), dict(pool_decay=0.95), dict(reset_every=40)])
def test_continuous_stream_options(options):
    model = build(layer="liquid_s4", layer_args=dict(d_state=8), norm="batch", d_input=1)
    x = inputs(model, 1, L)
    ref, _ = reference(model, x, **options)
    assert rel_err(FastStream(model, **options).run(x), ref) <= 1e-10


def test_reset_every_restarts_like_forward():
    """With reset_every R the output at step t is the model's forward on the inputs since the last reset."""
    model = build(pool="mean")
    x = inputs(model, 1, 30)
    y = FastStream(model, reset_every=10).run(x)
    with torch.no_grad():
        for start in (0, 10, 20):
            seg = x[:, start : start + 10]
            assert rel_err(y[:, start + 9], model(seg)) <= 1e-10


def test_reset():
    model = build()
    x = inputs(model, 2, 20)
    fs = FastStream(model, batch_size=2)
    y = fs.run(x)
    fs.reset()
    assert torch.equal(fs.run(x), y)


def test_speech_commands_preset_model():
    """The benchmark target (float32, BatchNorm prenorm, S4 LegS + PB degree 2, mean pool)."""
    torch.manual_seed(0)
    model = SequenceModel(
        d_input=1,
        d_output=35,
        d_model=128,
        n_layers=6,
        layer="liquid_s4",
        layer_args=dict(
            d_state=8, init="legs", liquid_kernel="pb", liquid_degree=2, dt_min=0.002, dt_max=0.2, lr=0.001
        ),
        norm="batch",
    ).eval()
    randomize_norms(model)
    x = torch.randn(1, 100)
    ref, _ = reference(model, x)
    fs = FastStream(model)
    assert rel_err(fs.run(x), ref) <= 1e-4
    fs.reset()
    ys = torch.stack([fs.step(x[:, k]) for k in range(100)], 1)
    assert rel_err(ys, ref) <= 1e-4


# ---- errors -------------------------------------------------------------------------------------------
def test_bad_inputs():
    model = build()
    fs = FastStream(model, batch_size=2)
    with pytest.raises(ValueError, match=r"expected inputs \(B, 2\)"):
        fs.step(torch.zeros(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="B = 2"):
        fs.step(torch.zeros(3, 2, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"\(B, L, 2\)"):
        fs.run(torch.zeros(2, 5, dtype=torch.float64))
    with pytest.raises(TypeError, match="float inputs"):
        fs.step(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(TypeError, match="torch.Tensor or numpy"):
        fs.step([[0.0, 0.0], [0.0, 0.0]])
    tok = FastStream(build(vocab_size=5), batch_size=2)
    with pytest.raises(ValueError, match="integers"):
        tok.step(torch.zeros(2))
    y = tok.run(torch.tensor([[1, 2], [3, 4]]))
    before = tok.state()
    with pytest.raises(ValueError, match=r"lie in \[0, 5\)"):
        tok.step(torch.tensor([1, 5]))
    with pytest.raises(ValueError, match=r"lie in \[0, 5\)"):
        tok.run(torch.tensor([[0, 1], [2, -1]]))
    after = tok.state()  # nothing advanced
    assert after["count"] == before["count"] == 2 and torch.equal(after["sum"], before["sum"])
    assert y.shape == (2, 2, 3)


def test_bad_models():
    model = build()
    model.train()
    with pytest.raises(RuntimeError, match="eval"):
        FastStream(model)
    with pytest.raises(RuntimeError, match="bidirectional"):
        FastStream(build(layer_args=dict(bidirectional=True)))
    with pytest.raises(RuntimeError, match="retrieval"):
        FastStream(build(head="retrieval"))
    with pytest.raises(NotImplementedError, match="per-step rates"):
        FastStream(build(layer_args=dict(liquid_kernel="scan")), rate=torch.ones(1))
    with pytest.raises(ValueError, match="pool_window"):
        FastStream(build(pool="last"), pool_window=4)
    with pytest.raises(ValueError, match="batch_size"):
        FastStream(build(), batch_size=0)


def test_bad_states():
    model = build()
    fs = FastStream(model, batch_size=2, pool_decay=0.5)
    with pytest.raises(ValueError, match="stream options"):
        fs.set_state(model.default_state(2))
    fs = FastStream(model, batch_size=2)
    with pytest.raises(ValueError, match="layer 0"):
        fs.set_state(model.default_state(3))
    with pytest.raises(ValueError, match="state dict"):
        fs.set_state(None)


def test_numba_missing(monkeypatch):
    monkeypatch.setattr(fast.K, "numba", None)
    with pytest.raises(ImportError, match=r"pip install 'liquid-s4\[fast\]'"):
        FastStream(build())


# ---- run on chunks (layer by layer) against step (sample by sample) ------------------------------------
CHUNKS = (1, 7, 160, 1000)  # run's chunk lengths, one after the other (1168 steps)
CHUNK_CASES = [
    # the fused recurrences (S4 / Liquid-S4 rank 1, S4D; PB or none) and the generic ones
    ("liquid_s4-pb", dict(reset_every=300)),
    ("s4-pb-batch", dict(pool_window=50, reset_every=170)),
    ("s4d-pb3-batch-postnorm", dict(pool_decay=0.99, reset_every=163)),
    ("s4d", dict()),
    ("s4d-kb3-tanh", dict(reset_every=161)),
    ("s4-kb-postnorm", dict(reset_every=5)),
    ("s4-channels2-pb-relu", dict(reset_every=999)),
    ("scan-ode", dict(reset_every=8)),
    ("lssl-zoh-batch-postnorm", dict(reset_every=1)),
    ("tokens-s4-batch", dict(pool_window=3, reset_every=1000)),
]


def run_chunks(fs: FastStream, x: torch.Tensor) -> torch.Tensor:
    ys, k = [], 0
    for n in CHUNKS:
        ys.append(fs.run(x[:, k : k + n]))
        k += n
    return torch.cat(ys, 1)


@pytest.mark.parametrize("name,options", CHUNK_CASES, ids=[c[0] for c in CHUNK_CASES])
def test_run_chunks_equal_step(name, options):
    """run on chunks of 1, 7, 160 and 1000 steps (resets inside the chunks, pieces of `tile` steps) gives
    step's outputs and state bit for bit; and the reference's to 1e-10."""
    model = build(**CASES[name])
    x = inputs(model, 2, sum(CHUNKS))
    a, b = FastStream(model, batch_size=2, **options), FastStream(model, batch_size=2, **options)
    ya = run_chunks(a, x)
    yb = torch.stack([b.step(x[:, k]) for k in range(x.shape[1])], 1)
    assert torch.equal(ya, yb)
    assert (a._aux == b._aux).all() and (a._state == b._state).all()
    c = FastStream(model, batch_size=2, **options)
    c.tile = 13  # pieces that do not divide the chunks
    assert torch.equal(run_chunks(c, x), ya)
    if name in ("liquid_s4-pb", "s4d-pb3-batch-postnorm", "scan-ode"):
        ref, _ = reference(model, x, **options)
        assert rel_err(ya, ref) <= 1e-10


def test_run_chunks_float32_speech_commands_like():
    """float32, BatchNorm prenorm, S4 LegS + PB degree 2, GELU and GLU, mean pool with a window and
    resets: run on long chunks == step bit for bit, and the reference to 1e-4."""
    model = build(
        torch.float32,
        d_input=1,
        d_model=16,
        n_layers=3,
        layer="liquid_s4",
        layer_args=dict(d_state=8, init="legs", liquid_kernel="pb", liquid_degree=2),
        norm="batch",
    )
    options = dict(pool_window=40, reset_every=400)
    x = inputs(model, 1, sum(CHUNKS))
    a, b = FastStream(model, **options), FastStream(model, **options)
    ya = run_chunks(a, x)
    yb = torch.stack([b.step(x[:, k]) for k in range(x.shape[1])], 1)
    assert ya.dtype == torch.float32 and torch.equal(ya, yb)
    assert rel_err(ya, reference(model, x, **options)[0]) <= 1e-4
