"""ONNX export of streaming models: the real-arithmetic program (PyTorch, float64) and the exported graph
(onnxruntime, float32) against the eager `SequenceModel.step` loop, for every layer family."""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from liquid_s4.deploy.realstep import RealStreamModule
from liquid_s4.models.sequence import SequenceModel

from ..reference import randomize_norms

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from liquid_s4.deploy.onnx import OnnxStream, export_onnx  # noqa: E402

LAYERS = {
    "s4d": ("s4d", {}),
    "s4d-pb3": ("s4d", dict(liquid_kernel="pb", liquid_degree=3)),
    "s4d-kb-tanh": ("s4d", dict(liquid_kernel="kb", liquid_degree=3, liquid_squash="tanh")),
    "s4d-scan": ("s4d", dict(liquid_kernel="scan")),
    "s4d-scan-split": ("s4d", dict(liquid_kernel="scan", liquid_form="split", disc="zoh")),
    "s4d-scan-ode": ("s4d", dict(liquid_kernel="scan", liquid_form="ode", disc="zoh")),
    "s4": ("s4", {}),
    "s4-pb": ("s4", dict(liquid_kernel="pb")),
    "liquid_s4-kb": ("liquid_s4", dict(liquid_kernel="kb")),
    "liquid_s4-pb": ("liquid_s4", {}),
    "lssl": ("lssl", {}),
}

# (layer, norm, prenorm, pool, channels, tokens, postact, activation)
CASES = [
    ("s4d", "layer", True, "mean", 1, False, "glu", "gelu"),
    ("s4d-pb3", "batch", True, "mean", 2, False, "glu", "gelu"),
    ("s4d-kb-tanh", "batch", False, "none", 1, False, "linear", "relu"),
    ("s4d-scan", "layer", True, "last", 1, False, "glu", "silu"),
    ("s4d-scan-split", "batch", True, "mean", 2, False, "glu", "gelu"),
    ("s4d-scan-ode", "layer", False, "none", 1, True, "glu", "tanh"),
    ("s4", "batch", True, "mean", 1, False, None, "sigmoid"),
    ("s4-pb", "layer", True, "none", 2, False, "linear", "identity"),
    ("liquid_s4-kb", "batch", True, "last", 2, False, "glu", "gelu"),
    ("liquid_s4-pb", "batch", False, "mean", 1, True, "glu", "swish"),
    ("lssl", "layer", True, "none", 1, False, "glu", "gelu"),
    ("lssl", "batch", False, "mean", 2, True, "linear", None),
]


def make_model(layer, norm, prenorm, pool, channels, tokens, postact, activation, d_state=4, d_input=2):
    kind, args = LAYERS[layer]
    args = dict(args, d_state=d_state, channels=channels, postact=postact, activation=activation)
    m = SequenceModel(
        d_input=d_input,
        d_output=3,
        d_model=8,
        n_layers=2,
        layer=kind,
        layer_args=args,
        norm=norm,
        prenorm=prenorm,
        pool=pool,
        vocab_size=11 if tokens else None,
    )
    randomize_norms(m)  # statistics and affine parameters away from the identity: folding errors show
    return m.eval()


def inputs(model, B, L):
    if model.config.vocab_size:
        return torch.randint(0, model.config.vocab_size, (B, L))
    return torch.randn(B, L, model.config.d_input)


def step_reference(model, x):
    """model.step over every step of x, in float64: (B, L, d_output)."""
    m64 = copy.deepcopy(model).double()
    x = x if model.config.vocab_size else x.double()
    state, ys = m64.default_state(x.shape[0]), []
    with torch.no_grad():
        for k in range(x.shape[1]):
            y, state = m64.step(x[:, k], state)
            ys.append(y)
    return torch.stack(ys, 1)


def rel_err(y, ref) -> float:
    y, ref = np.asarray(y, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    return float(np.abs(y - ref).max() / np.abs(ref).max())


def graph_dtypes(proto) -> set[int]:
    """Element types of every initializer, input, output and value_info, subgraphs included."""
    seen = set()

    def visit(g):
        for t in g.initializer:
            seen.add(t.data_type)
        for v in [*g.input, *g.output, *g.value_info]:
            if v.type.HasField("tensor_type"):
                seen.add(v.type.tensor_type.elem_type)
        for node in g.node:
            for a in node.attribute:
                if a.type == onnx.AttributeProto.GRAPH:
                    visit(a.g)
                if a.type == onnx.AttributeProto.TENSOR:
                    seen.add(a.t.data_type)

    visit(proto.graph)
    return seen


@pytest.mark.parametrize("case", CASES, ids=[f"{c[0]}-{c[1]}-{c[3]}-ch{c[4]}" for c in CASES])
def test_onnx_matches_step(case, tmp_path):
    torch.manual_seed(1)
    model = make_model(*case)
    B, T = 2, 5
    x = inputs(model, B, 3 * T + 3)
    ref = step_reference(model, x).numpy()

    # the real-arithmetic program in float64: exact to rounding, for blocks that split the chunk
    prog = RealStreamModule(model, T, block=2, dtype=torch.float64)
    state, ys = prog.default_state(B), []
    for a, b in ((0, T), (T, 2 * T), (2 * T, 3 * T), (3 * T, 3 * T + 3)):  # the last chunk: steps
        y, *state = prog(x[:, a:b], *state)
        ys.append(y)
    assert rel_err(torch.cat(ys, 1), ref) < 1e-9

    path = tmp_path / "model.onnx"
    export_onnx(model, path, chunk_size=T, metadata={"sample_rate": 16000, "labels": ["a", "b", "c"]})
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto)
    complex_types = {onnx.TensorProto.COMPLEX64, onnx.TensorProto.COMPLEX128}
    assert not graph_dtypes(proto) & complex_types
    stream = OnnxStream(path)
    assert stream.chunk_size == T
    assert stream.metadata == {"sample_rate": 16000, "labels": ["a", "b", "c"]}
    assert stream.info["pool"] == model.config.pool and stream.info["d_output"] == 3
    xs = x.numpy()
    state, ys = None, []
    for a, b in ((0, T), (T, 2 * T + 3), (2 * T + 3, 3 * T + 3)):  # one chunk, 1.6 chunks, one chunk
        y, state = stream.stream(xs[:, a:b], state)
        ys.append(y)
    assert rel_err(np.concatenate(ys, 1), ref) < 1e-5
    # the layer states are the model's, as real pairs
    m_state = model.default_state(B)
    with torch.no_grad():
        for k in range(x.shape[1]):
            _, m_state = model.step(x[:, k], m_state)
    for i, s in enumerate(m_state["layers"]):
        s = s.contiguous()
        real = torch.view_as_real(s).flatten(-2) if s.is_complex() else s
        assert rel_err(state[f"layer{i}"], real.numpy()) < 1e-4


@pytest.mark.parametrize("T", [1, 16])
def test_chunk_sizes(T, tmp_path):
    torch.manual_seed(2)
    model = make_model("liquid_s4-pb", "batch", True, "mean", 1, False, "glu", "gelu", d_state=8, d_input=1)
    x = inputs(model, 3, 2 * T + 1)
    ref = step_reference(model, x).numpy()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, chunk_size=T, block=4)
    stream = OnnxStream(path)
    y, state = stream.stream(x.numpy()[..., 0])  # (B, L) inputs for d_input 1; chunks of T, then the rest
    assert y.shape == (3, 2 * T + 1, 3)
    assert rel_err(y, ref) < 1e-5
    y1, _ = stream.stream(x.numpy()[:1, :T], stream.default_state(1))  # another batch size
    assert rel_err(y1, ref[:1, :T]) < 1e-5


def test_fixed_batch_and_opset(tmp_path):
    model = make_model("s4d", "layer", True, "mean", 1, False, "glu", "gelu")
    path = tmp_path / "m.onnx"
    export_onnx(model, path, chunk_size=4, batch_size=2, opset=13)
    proto = onnx.load(str(path))
    assert proto.opset_import[0].version == 13
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2
    x = inputs(model, 2, 4)
    y, _ = OnnxStream(path).stream(x.numpy())
    assert rel_err(y, step_reference(model, x).numpy()) < 1e-5


def test_reset_every(tmp_path):
    torch.manual_seed(3)
    model = make_model("s4-pb", "batch", True, "mean", 1, False, "glu", "gelu")
    path = tmp_path / "m.onnx"
    export_onnx(model, path, chunk_size=4)
    R = 6
    stream = OnnxStream(path, reset_every=R)
    x = inputs(model, 2, 15)
    y, state = stream.stream(x[:, :9].numpy())
    y2, _ = stream.stream(x[:, 9:].numpy(), state)
    y = np.concatenate([y, y2], 1)
    for a in range(0, 15, R):  # every segment is the model's answer for the inputs since its start
        ref = step_reference(model, x[:, a : a + R]).numpy()
        assert rel_err(y[:, a : a + R], ref) < 1e-5


def test_errors(tmp_path):
    model = make_model("s4d", "layer", True, "mean", 1, False, "glu", "gelu")
    path = tmp_path / "m.onnx"
    model.train()
    with pytest.raises(RuntimeError, match="training mode"):
        export_onnx(model, path, chunk_size=4)
    model.eval()
    export_onnx(model, path, chunk_size=4)
    size = os.path.getsize(path)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export_onnx(model, path, chunk_size=8)
    assert os.path.getsize(path) == size
    export_onnx(model, path, chunk_size=8, overwrite=True)
    assert OnnxStream(path).chunk_size == 8
    assert [p for p in os.listdir(tmp_path) if p != "m.onnx"] == []  # no temporary file left behind
    with pytest.raises(ValueError, match="chunk_size"):
        export_onnx(model, tmp_path / "x.onnx", chunk_size=0)
    with pytest.raises(ValueError, match="JSON"):
        export_onnx(model, tmp_path / "x.onnx", chunk_size=2, metadata={"bad": object()})
    assert not os.path.exists(tmp_path / "x.onnx")
    bi = SequenceModel(
        d_input=1, d_output=2, d_model=4, n_layers=1, layer="s4d", layer_args=dict(bidirectional=True)
    )
    with pytest.raises(ValueError, match="bidirectional"):
        export_onnx(bi.eval(), tmp_path / "b.onnx", chunk_size=2)
    ret = SequenceModel(d_input=1, d_output=2, d_model=4, n_layers=1, layer="s4d", head="retrieval")
    with pytest.raises(ValueError, match="retrieval"):
        export_onnx(ret.eval(), tmp_path / "r.onnx", chunk_size=2)


def test_onnx_missing(tmp_path, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "onnx" or name.startswith("onnx."):
            raise ImportError("No module named 'onnx'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    model = make_model("s4d", "layer", True, "mean", 1, False, "glu", "gelu")
    with pytest.raises(ImportError, match=r"pip install liquid-s4\[deploy\]"):
        export_onnx(model, tmp_path / "m.onnx", chunk_size=2)


def test_long_chunk_block_by_block(tmp_path, monkeypatch):
    """A chunk of several blocks and a shorter last block, with the block starts carried one block at a
    time (the form for chunks whose one-product carry matrix would be large)."""
    import liquid_s4.deploy.realstep as realstep

    monkeypatch.setattr(realstep, "_CARRY_LIMIT", 0)
    torch.manual_seed(4)
    model = make_model("liquid_s4-kb", "batch", True, "mean", 2, False, "glu", "gelu", d_state=6)
    T = 43
    x = inputs(model, 2, 2 * T)
    ref = step_reference(model, x).numpy()
    path = tmp_path / "m.onnx"
    export_onnx(model, path, chunk_size=T, block=8)
    y, _ = OnnxStream(path).stream(x.numpy())
    assert rel_err(y, ref) < 1e-5
