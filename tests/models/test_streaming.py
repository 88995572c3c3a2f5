"""SequenceModel.stream: chunks of any length equal stepping and the full forward, for every layer family,
both norms and every pool; the continuous-stream options (pool window, decay, resets) against their
definitions computed from the full forward's features."""

import random

import pytest
import torch

from liquid_s4 import SequenceModel

from ..reference import randomize_norms

FAMILIES = {
    "s4d": dict(layer="s4d", layer_args=dict(d_state=8)),
    "s4d-pb": dict(layer="s4d", layer_args=dict(d_state=8, liquid_kernel="pb", liquid_degree=3)),
    "s4d-kb": dict(layer="s4d", layer_args=dict(d_state=8, liquid_kernel="kb", liquid_degree=2)),
    "s4d-scan": dict(layer="s4d", layer_args=dict(d_state=8, liquid_kernel="scan")),
    "s4d-split": dict(layer="s4d", layer_args=dict(d_state=8, liquid_kernel="scan", liquid_form="split")),
    "s4d-ode": dict(layer="s4d", layer_args=dict(d_state=8, liquid_kernel="scan", liquid_form="ode")),
    "s4": dict(layer="s4", layer_args=dict(d_state=8, channels=2)),
    "liquid_s4-pb": dict(layer="liquid_s4", layer_args=dict(d_state=8, liquid_kernel="pb", liquid_degree=2)),
    "liquid_s4-kb": dict(layer="liquid_s4", layer_args=dict(d_state=8, liquid_kernel="kb", liquid_degree=3)),
    "lssl": dict(layer="lssl", layer_args=dict(d_state=5)),
}
TOL = dict(rtol=1e-9, atol=1e-10)


def make(norm="layer", prenorm=True, pool="mean", family="s4d", vocab=None, seed=0):
    torch.manual_seed(seed)
    m = SequenceModel(
        d_input=3,
        d_output=4,
        d_model=8,
        n_layers=2,
        norm=norm,
        prenorm=prenorm,
        pool=pool,
        vocab_size=vocab,
        **FAMILIES[family],
    ).double()
    randomize_norms(m)  # norms away from the identity, so every norm parameter counts
    return m.eval()


def stepped(m, x, state=None):
    state = m.default_state(x.shape[0]) if state is None else state
    ys = []
    for t in range(x.shape[1]):
        y, state = m.step(x[:, t], state)
        ys.append(y)
    return torch.stack(ys, 1), state


def chunked(m, x, sizes, state=None):
    ys, start = [], 0
    for n in sizes:
        y, state = m.stream(x[:, start : start + n], state)
        ys.append(y)
        start += n
    return torch.cat(ys, 1), state


def random_split(L, rng):
    sizes = []
    while sum(sizes) < L:
        sizes.append(min(rng.choice([1, 2, 3, 7, 16]), L - sum(sizes)))
    return sizes


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("pool", ["mean", "last", "none"])
@pytest.mark.parametrize("norm,prenorm", [("layer", True), ("batch", False)])
def test_chunks_equal_steps_and_forward(family, pool, norm, prenorm):
    m = make(norm, prenorm, pool, family)
    L = 24
    x = torch.randn(2, L, 3, dtype=torch.float64)
    y_step, s_step = stepped(m, x)
    rng = random.Random(len(family) + 10 * len(pool) + 100 * prenorm)
    splits = [[L], random_split(L, rng)] + ([[1] * L] if pool == "mean" and prenorm else [])
    with torch.no_grad():
        for sizes in splits:
            y, s = chunked(m, x, sizes)
            torch.testing.assert_close(y, y_step, **TOL)
            torch.testing.assert_close(s["sum"], s_step["sum"], **TOL)
            assert s["count"] == s_step["count"] == L
            for a, b in zip(s["layers"], s_step["layers"]):
                torch.testing.assert_close(a, b.contiguous(), **TOL)
        full = m(x)
    if pool == "none":
        torch.testing.assert_close(y_step, full, **TOL)
    else:
        torch.testing.assert_close(y_step[:, -1], full, **TOL)
        torch.testing.assert_close(y_step[:, 12], m(x[:, :13]), **TOL)


def test_stream_and_step_mix_on_one_stream():
    m = make(family="liquid_s4-pb")
    x = torch.randn(3, 30, 3, dtype=torch.float64)
    y_ref, _ = stepped(m, x)
    y1, s = m.stream(x[:, :11])
    y2, s = stepped(m, x[:, 11:20], s)
    y3, _ = m.stream(x[:, 20:], s)
    torch.testing.assert_close(torch.cat([y1, y2, y3], 1), y_ref, **TOL)


def test_tokens_and_scalar_inputs():
    m = make(family="s4d-pb", vocab=11)
    x = torch.randint(0, 11, (2, 25))
    y_step, _ = stepped(m, x)
    y, _ = chunked(m, x, [4, 21])
    torch.testing.assert_close(y, y_step, **TOL)
    torch.manual_seed(1)
    m1 = SequenceModel(d_input=1, d_output=2, d_model=8, n_layers=1, layer="s4d").double().eval()
    x1 = torch.randn(2, 9, dtype=torch.float64)  # (B, L) scalars
    torch.testing.assert_close(m1.stream(x1)[0], stepped(m1, x1)[0], **TOL)


def test_per_step_rate():
    m = make(family="s4d-split", pool="none")
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    rate = torch.rand(2, 30, dtype=torch.float64) * 3 + 0.1
    y, state = m.stream(x[:, :13], rate=rate[:, :13])
    y2, _ = m.stream(x[:, 13:], state, rate=rate[:, 13:])
    torch.testing.assert_close(torch.cat([y, y2], 1), m(x, rate=rate), **TOL)
    with pytest.raises(ValueError, match="per-step rate"):
        make(family="s4d", pool="none").stream(x, rate=rate)


def test_training_mode_streams_with_gradients():
    """Truncated backpropagation through time: a chunk's loss reaches the parameters, and the state
    carried into the next chunk is the forward's."""
    m = make(family="s4d").train()
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    y, s = m.stream(x[:, :10])
    y.sum().backward()
    assert m.encoder.weight.grad is not None and bool(m.encoder.weight.grad.abs().sum() > 0)
    m.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        make(norm="batch").train().stream(x)


def features(m, x):
    with torch.no_grad():
        return m.features(x)  # (B, L, H)


@pytest.mark.parametrize("W", [1, 5, 12])
def test_pool_window(W):
    m = make(family="liquid_s4-pb")
    x = torch.randn(2, 37, 3, dtype=torch.float64)
    h = features(m, x)
    ref = torch.stack([h[:, max(0, t - W + 1) : t + 1].mean(1) for t in range(37)], 1)
    ref = m.decoder(ref)
    with torch.no_grad():
        y_step, _ = stepped(m, x, m.default_state(2, pool_window=W))
        y_chunk, _ = chunked(m, x, [3, 10, 1, 23], m.default_state(2, pool_window=W))
    torch.testing.assert_close(y_step, ref, **TOL)
    torch.testing.assert_close(y_chunk, ref, **TOL)


@pytest.mark.parametrize("lam", [0.5, 0.9, 1.0])
def test_pool_decay(lam):
    m = make(family="s4")
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    h = features(m, x)
    w = lam ** torch.arange(30, dtype=torch.float64)
    ref = torch.stack(
        [(h[:, : t + 1] * w[: t + 1].flip(0)[:, None]).sum(1) / w[: t + 1].sum() for t in range(30)], 1
    )
    ref = m.decoder(ref)
    with torch.no_grad():
        y_step, _ = stepped(m, x, m.default_state(2, pool_decay=lam))
        y_chunk, _ = chunked(m, x, [7, 1, 22], m.default_state(2, pool_decay=lam))
    torch.testing.assert_close(y_step, ref, **TOL)
    torch.testing.assert_close(y_chunk, ref, **TOL)


@pytest.mark.parametrize("pool", ["mean", "last", "none"])
def test_reset_every_runs_clips(pool):
    """With reset_every R, the output at step t is the model's forward on the inputs since the last reset."""
    m = make(family="s4d-kb", pool=pool)
    R, x = 8, torch.randn(2, 29, 3, dtype=torch.float64)
    with torch.no_grad():
        y_step, _ = stepped(m, x, m.default_state(2, reset_every=R))
        y_chunk, _ = chunked(m, x, [3, 11, 15], m.default_state(2, reset_every=R))
        for t in (0, 7, 8, 13, 16, 28):
            start = t // R * R
            out = m(x[:, start : t + 1])
            ref = out[:, -1] if pool == "none" else out
            torch.testing.assert_close(y_step[:, t], ref, **TOL)
    torch.testing.assert_close(y_chunk, y_step, **TOL)


def test_window_with_reset_and_long_stream_float32():
    """A window over a long float32 stream stays close to the exact window mean (the sum is recomputed
    once per window, so rounding does not accumulate)."""
    torch.manual_seed(0)
    m = SequenceModel(d_input=1, d_output=3, d_model=8, n_layers=1, layer="s4d").eval()
    x = torch.randn(1, 3000)
    with torch.no_grad():
        h = m.features(x)
        state = m.default_state(1, pool_window=64)
        for t in range(3000):
            y, state = m.step(x[:, t], state)
        ref = m.decoder(h[:, -64:].mean(1))
        y_chunk, _ = m.stream(x, m.default_state(1, pool_window=64))
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(y_chunk[:, -1], ref, rtol=1e-5, atol=1e-5)


def test_bad_options_and_states():
    m = make(pool="last")
    with pytest.raises(ValueError, match="use reset_every"):
        m.default_state(2, pool_window=4)
    m = make()
    for kw, msg in (
        (dict(pool_window=0), "pool_window"),
        (dict(pool_decay=1.5), "pool_decay"),
        (dict(pool_decay=0.0), "pool_decay"),
        (dict(reset_every=2.5), "reset_every"),
        (dict(pool_window=3, pool_decay=0.9), "not both"),
    ):
        with pytest.raises(ValueError, match=msg):
            m.default_state(2, **kw)
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="default_state"):
        m.stream(x, {"layers": []})
    with pytest.raises(ValueError, match="another batch size"):
        m.stream(x, m.default_state(3))
    with pytest.raises(ValueError, match="another batch size"):
        m.step(x[:, 0], m.default_state(3))
    for bad in ([1.0, 2.0, 3.0], torch.tensor(1.0)):
        with pytest.raises(TypeError, match="one step of inputs as a tensor"):
            m.step(bad, m.default_state(2))
    with pytest.raises(ValueError, match="expected inputs"):
        m.stream(torch.randn(2, 5, 4, dtype=torch.float64))
    bi = SequenceModel(
        d_input=3, d_output=4, d_model=8, n_layers=1, layer="s4d", layer_args=dict(bidirectional=True)
    ).eval()
    with pytest.raises(ValueError, match="bidirectional"):
        bi.stream(torch.randn(2, 5, 3))


@pytest.mark.parametrize("family", ["s4d", "liquid_s4-kb", "lssl"])
def test_chunk_state_cache_follows_parameter_edits(family):
    """Chunks with state reuse cached state maps per chunk length; every way of editing a parameter
    (here through .data, and a load_state_dict) is seen on the next chunk."""
    m = make(family=family, pool="none")
    x = torch.randn(2, 20, 3, dtype=torch.float64)
    with torch.no_grad():
        chunked(m, x, [5, 5, 5, 5])  # fills the caches for chunks of 5
        for p in m.blocks[0].layer.ssm.parameters():
            p.data.mul_(0.9)
        torch.testing.assert_close(chunked(m, x, [5, 5, 5, 5])[0], stepped(m, x)[0], **TOL)
        other = make(family=family, pool="none", seed=3)
        m.load_state_dict(other.state_dict())
        torch.testing.assert_close(chunked(m, x, [5, 5, 5, 5])[0], stepped(other, x)[0], **TOL)


def test_export_onnx_method_streams_like_the_model(tmp_path):
    """`SequenceModel.export_onnx` writes a graph whose chunks, in onnxruntime, give the model's stream."""
    pytest.importorskip("onnxruntime")
    from liquid_s4.deploy.onnx import OnnxStream

    torch.manual_seed(0)
    m = SequenceModel(
        d_input=2,
        d_output=3,
        d_model=8,
        n_layers=2,
        layer="liquid_s4",
        norm="batch",
        layer_args=dict(d_state=4, liquid_kernel="pb"),
    ).eval()
    path = tmp_path / "m.onnx"
    m.export_onnx(path, chunk_size=6, metadata={"sample_rate": 16000})
    x = torch.randn(1, 15, 2)
    with torch.no_grad():
        ref, _ = m.stream(x)
    session = OnnxStream(path)
    y, state = session.stream(x[:, :12].numpy())
    y2, _ = session.stream(x[:, 12:].numpy(), state)
    out = torch.cat([torch.from_numpy(y), torch.from_numpy(y2)], 1)
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert session.metadata["sample_rate"] == 16000
    with pytest.raises(FileExistsError):
        m.export_onnx(path, chunk_size=6)


def test_large_chunk_maps_are_not_cached():
    """Above `chunk_cache_max_entries` a chunk passes its state through the closed forms instead of
    cached maps: the same outputs, no maps kept."""
    m = make(family="s4d", pool="none")
    x = torch.randn(2, 30, 3, dtype=torch.float64)
    ref, _ = stepped(m, x)
    for block in m.blocks:
        block.layer.chunk_cache_max_entries = 100  # smaller than any map here
    with torch.no_grad():
        y, _ = chunked(m, x, [10, 20])
    torch.testing.assert_close(y, ref, **TOL)
    assert all(block.layer._chunk_cache.peek() is None for block in m.blocks)
