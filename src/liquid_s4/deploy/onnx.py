"""ONNX export of streaming models, and a runner for the exported files.

`export_onnx(model, path, chunk_size)` writes one ONNX graph, in real arithmetic (float32, no
complex types), with inputs

    x              (batch, time, d_input) float32, or (batch, time) int64 token ids
    layer{i}, ...  the state tensors (see `liquid_s4.deploy.realstep` for their layout)

and outputs

    y              (batch, time, d_output): at every step exactly what `SequenceModel.step` returns
    next_layer{i}, ...  the state after the chunk, to feed back as the next chunk's state.

The graph is exact for any number of steps: a chunk of `chunk_size` steps runs through the chunked
(block-convolution) form of `RealProgram`, any other length through a loop of the one-step form (an
ONNX If between the two, a Loop in the second). So the last, shorter chunk of a file is exact too,
only slower per step. `OnnxStream` runs such a file with onnxruntime, splits long inputs into chunks,
and can reset the state every R steps for continuous streams.

Needs the optional `deploy` extra: `pip install liquid-s4[deploy]` (onnx, onnxruntime).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np

from .realstep import DEFAULT_BLOCK, RealProgram, check_streamable

FORMAT = 1
META_KEY = "liquid_s4"
DEFAULT_OPSET = 17
MIN_OPSET = 13


def _require(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        raise ImportError(
            f"liquid_s4.deploy: {module} is not installed; ONNX export and streaming need the deploy "
            "extra: pip install liquid-s4[deploy]"
        ) from e


# ---- the ONNX backend of RealProgram ------------------------------------------------------------
def _binary(op: str):
    def f(self, a, b):
        return self.node(op, [self._operand(a), self._operand(b)])

    return f


def _unary(op: str):
    def f(self, a):
        return self.node(op, [a])

    return f


class OnnxOps:
    """The operations of `RealProgram.run` as ONNX nodes. Values are names; constants become float32
    initializers of the main graph (shared by every subgraph); subgraphs collect their own nodes
    (`graph`)."""

    def __init__(self, opset: int):
        self.onnx = _require("onnx")
        self.opset = opset
        self.initializers: dict[str, Any] = {}
        self._int_consts: dict[tuple, str] = {}
        self._nodes: list[list] = [[]]
        self._count = 0

    # ---- graph plumbing
    def fresh(self, hint: str = "v") -> str:
        self._count += 1
        return f"{hint}_{self._count}"

    def node(self, op: str, inputs, n_out: int = 1, hint: str | None = None, **attrs):
        outs = [self.fresh(hint or op.lower()) for _ in range(n_out)]
        self._nodes[-1].append(self.onnx.helper.make_node(op, list(inputs), outs, **attrs))
        return outs[0] if n_out == 1 else outs

    def begin(self) -> None:
        self._nodes.append([])

    def end(self, name: str, inputs, outputs):
        """Close the subgraph begun last: inputs and outputs as (name, elem_type[, shape])."""
        vi = self.onnx.helper.make_tensor_value_info
        nodes = self._nodes.pop()
        return self.onnx.helper.make_graph(
            nodes,
            name,
            [vi(*v) if len(v) == 3 else vi(*v, None) for v in inputs],
            [vi(*v) if len(v) == 3 else vi(*v, None) for v in outputs],
        )

    def const(self, name: str, arr) -> str:
        key = "c." + name
        if key not in self.initializers:
            a = np.ascontiguousarray(np.asarray(arr, dtype=np.float32))
            self.initializers[key] = self.onnx.numpy_helper.from_array(a, key)
        return key

    def ints(self, values, scalar: bool = False) -> str:
        key = (tuple(values), scalar)
        if key not in self._int_consts:
            name = f"i.{len(self._int_consts)}"
            a = np.array(values[0] if scalar else list(values), dtype=np.int64)
            self.initializers[name] = self.onnx.numpy_helper.from_array(a, name)
            self._int_consts[key] = name
        return self._int_consts[key]

    def _operand(self, v) -> str:
        return self.const(f"scalar{float(v)!r}", np.float32(v)) if isinstance(v, (int, float)) else v

    # ---- operations
    add, sub, mul, div, matmul = (_binary(o) for o in ("Add", "Sub", "Mul", "Div", "MatMul"))
    tanh, sigmoid, relu, exp, sin, cos, sqrt, neg, erf = (
        _unary(o) for o in ("Tanh", "Sigmoid", "Relu", "Exp", "Sin", "Cos", "Sqrt", "Neg", "Erf")
    )

    def less(self, x, value: float):
        return self.node("Less", [x, self._operand(value)])

    def where(self, cond, x, y):
        return self.node("Where", [cond, x, y])

    def concat(self, xs, axis: int):
        return xs[0] if len(xs) == 1 else self.node("Concat", xs, axis=axis)

    def slice(self, x, axis: int, start: int, end: int, step: int = 1):
        return self.node(
            "Slice", [x, self.ints([start]), self.ints([end]), self.ints([axis]), self.ints([step])]
        )

    def reshape(self, x, shape):
        return self.node("Reshape", [x, self.ints(shape)])

    def transpose(self, x, perm):
        return self.node("Transpose", [x], perm=list(perm))

    def gather(self, table, ids):
        return self.node("Gather", [table, ids], axis=0)

    def cumsum(self, x, axis: int):
        return self.node("CumSum", [x, self.ints([axis], scalar=True)])

    def scan_complex(self, fr, fi, gr, gi, xr, xi, shape=None):
        """x_k = f_k x_{k-1} + g_k (complex, as real and imaginary parts) along axis 0 of f, g: an ONNX
        Scan. shape: the dimensions of x after the batch axis. Returns (all x_r, all x_i, last x_r,
        last x_i)."""
        F = self.onnx.TensorProto.FLOAT
        names = [self.fresh("scan_in") for _ in range(6)]
        sr, si, pfr, pfi, pgr, pgi = names
        self.begin()
        nr = self.add(self.sub(self.mul(pfr, sr), self.mul(pfi, si)), pgr)
        ni = self.add(self.add(self.mul(pfr, si), self.mul(pfi, sr)), pgi)
        out = [nr, ni, self.node("Identity", [nr]), self.node("Identity", [ni])]
        shape = [None, *shape]  # (B, ...): onnxruntime wants the shapes of a Scan body's outputs
        body = self.end("scan_body", [(n, F) for n in names], [(n, F, shape) for n in out])
        endr, endi, allr, alli = self.node("Scan", [xr, xi, fr, fi, gr, gi], 4, body=body, num_scan_inputs=4)
        return allr, alli, endr, endi


# ---- building the graph -------------------------------------------------------------------------
def build_onnx(
    program: RealProgram, chunk_size: int, batch_size: int | None = None, opset: int = DEFAULT_OPSET
):
    """The ONNX model (onnx.ModelProto) of `program` (see the module docstring)."""
    onnx = _require("onnx")
    helper, TP = onnx.helper, onnx.TensorProto
    F = TP.FLOAT
    ops = OnnxOps(opset)
    T = int(chunk_size)
    batch = "batch" if batch_size is None else int(batch_size)
    specs = program.state_specs
    x_type = TP.INT64 if program.tokens else F
    x_shape = [batch, "time"] if program.tokens else [batch, "time", program.d_input]
    state_in = [s.name for s in specs]

    def shape(s):
        return [batch if d == "batch" else d for d in s.shape]

    def identities(values, hint):
        return [ops.node("Identity", [v], hint=hint) for v in values]

    steps = ops.node("Gather", [ops.node("Shape", ["x"]), ops.ints([1], scalar=True)], hint="steps")
    is_chunk = ops.node("Equal", [steps, ops.ints([T], scalar=True)])

    # then: the chunked form for exactly T steps
    ops.begin()
    y, nxt = program.run(ops, "x", list(state_in), T)
    outs = identities([y, *nxt], "chunk_out")
    then_graph = ops.end("chunk", [], [(outs[0], F)] + [(n, F) for n in outs[1:]])

    # else: one step at a time, in a Loop over the steps
    ops.begin()
    it, cond = ops.fresh("step"), ops.fresh("cond")
    carried = [ops.fresh("state") for _ in specs]
    ops.begin()
    xk = ops.node("Gather", ["x", it], axis=1)  # (B, d_input) or (B,)
    xk = ops.reshape(xk, [-1, 1] if program.tokens else [-1, 1, program.d_input])
    yk, nk = program.run(ops, xk, list(carried), 1)
    yk = ops.reshape(yk, [-1, program.d_output])
    body_out = [ops.node("Identity", [cond])] + identities([*nk, yk], "step_out")
    body = ops.end(
        "step",
        [(it, TP.INT64, []), (cond, TP.BOOL, [])] + [(c, F) for c in carried],
        [(body_out[0], TP.BOOL)] + [(n, F) for n in body_out[1:]],
    )
    true = ops.initializers.setdefault("i.true", onnx.numpy_helper.from_array(np.array(True), "i.true")).name
    loop_out = ops.node("Loop", [steps, true, *state_in], len(specs) + 1, body=body)
    loop_out = [loop_out] if isinstance(loop_out, str) else loop_out
    ys = ops.transpose(loop_out[-1], (1, 0, 2))  # (L, B, d_output) -> (B, L, d_output)
    outs_e = identities([ys, *loop_out[:-1]], "loop_out")
    else_graph = ops.end("steps", [], [(n, F) for n in outs_e])

    out_names = ["y"] + [f"next_{n}" for n in state_in]
    ops._nodes[-1].append(
        helper.make_node("If", [is_chunk], out_names, then_branch=then_graph, else_branch=else_graph)
    )
    vi = helper.make_tensor_value_info
    inputs = [vi("x", x_type, x_shape)] + [vi(s.name, F, shape(s)) for s in specs]
    outputs = [vi("y", F, [batch, "time", program.d_output])] + [
        vi(f"next_{s.name}", F, shape(s)) for s in specs
    ]
    graph = helper.make_graph(
        ops._nodes[-1], "liquid_s4_stream", inputs, outputs, list(ops.initializers.values())
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="liquid_s4"
    )
    model.ir_version = min(model.ir_version, 8)  # readable by onnxruntime releases from 1.14 on
    return model


def export_onnx(
    model,
    path: str | os.PathLike,
    chunk_size: int,
    batch_size: int | None = None,
    rate: float | None = None,
    opset: int | None = None,
    metadata: dict[str, Any] | None = None,
    overwrite: bool = False,
    block: int = DEFAULT_BLOCK,
) -> None:
    """Write `model` (a `SequenceModel` in eval mode) as an ONNX streaming graph to `path` (see the
    module docstring), atomically, and check it with `onnx.checker`.

    chunk_size: the steps of the chunk the graph is built for (other lengths run too, step by step);
    batch_size: a fixed batch size, or None for a dynamic batch axis; rate: the multiplier of every
    layer's dt (None: each layer's own `rate`, as `SequenceModel.step`); opset: the ONNX opset
    (default 17, at least 13); metadata: JSON-serializable entries stored with the graph (such as
    sample_rate and labels), read back by `OnnxStream.metadata`; overwrite: replace an existing file
    (refused otherwise); block: the block length of the chunked form (see `RealProgram`).

    Errors: a RuntimeError for a model in training mode; a ValueError for the retrieval head and
    bidirectional layers (no streaming step); an ImportError without onnx (`pip install
    liquid-s4[deploy]`); a FileExistsError for an existing path without overwrite=True."""
    from .. import __version__
    from ..fileio import atomic_write

    onnx = _require("onnx")
    check_streamable(model)
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise ValueError(f"export_onnx: chunk_size must be a positive integer, got {chunk_size!r}")
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"export_onnx: batch_size must be a positive integer or None, got {batch_size!r}")
    opset = DEFAULT_OPSET if opset is None else int(opset)
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(
            f"export_onnx: opset must lie in [{MIN_OPSET}, {onnx.defs.onnx_opset_version()}], got {opset}"
        )
    path = os.fspath(path)
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"export_onnx: {path} exists; pass overwrite=True to replace it")
    user = dict(metadata or {})
    program = RealProgram(model, rate, block)
    graph = build_onnx(program, chunk_size, batch_size, opset)
    meta = {
        "format": FORMAT,
        "liquid_s4_version": __version__,
        "chunk_size": chunk_size,
        "d_input": program.d_input,
        "d_output": program.d_output,
        "vocab_size": program.config.vocab_size,
        "pool": program.pool,
        "rate": rate,
        "input": "x",
        "output": "y",
        "states": [{"name": s.name, "shape": list(s.shape)} for s in program.state_specs],
        "model": program.config.to_dict(),
        "metadata": user,
    }
    try:
        text = json.dumps(meta)
    except TypeError as e:
        raise ValueError(f"export_onnx: metadata must be JSON-serializable ({e})") from e
    onnx.helper.set_model_props(graph, {META_KEY: text})
    onnx.checker.check_model(graph)
    atomic_write(path, lambda tmp: onnx.save(graph, tmp))


# ---- running an exported file -------------------------------------------------------------------
class OnnxStream:
    """An exported streaming graph (`export_onnx`) run by onnxruntime, on numpy arrays.

    stream(x, state=None) -> (y, state): x (B, L, d_input) (or (B, L) when d_input == 1, or int token
    ids (B, L)) for any L >= 1; y (B, L, d_output) holds, for every step, what `SequenceModel.step`
    returns. Inputs longer than `chunk_size` run as chunks of chunk_size steps; a remainder (the end
    of a file) runs through the graph's one-step loop: exact, slower per step. state: a dict of arrays
    from `default_state(B)` or a previous call (None: a fresh state).

    reset_every R: for continuous streams, the whole state returns to zero after every R steps
    (counted from the first call, across calls), so each output is the model's answer for the inputs
    since the last reset (as `SequenceModel.default_state(reset_every=R)`); chunks are split at the
    reset points. providers / sess_options: passed to onnxruntime.InferenceSession; without
    sess_options, the session's idle threads sleep rather than spin, and intra_op_num_threads sets
    its thread count (default: onnxruntime's)."""

    def __init__(
        self,
        path: str | os.PathLike,
        providers=None,
        sess_options=None,
        intra_op_num_threads: int | None = None,
        reset_every: int | None = None,
    ):
        ort = _require("onnxruntime")
        onnx = _require("onnx")
        path = os.fspath(path)
        proto = onnx.load(path, load_external_data=False)
        props = {p.key: p.value for p in proto.metadata_props}
        if META_KEY not in props:
            raise ValueError(f"{path} is not a liquid_s4 streaming graph (no {META_KEY!r} metadata)")
        self.info = json.loads(props[META_KEY])
        if self.info.get("format", 0) > FORMAT:
            raise ValueError(f"{path} has format {self.info['format']}; this liquid_s4 reads <= {FORMAT}")
        if sess_options is None:
            sess_options = ort.SessionOptions()
            # idle worker threads sleep instead of spinning: a chunk is a short burst of work, and
            # spinning threads take the cores from everything else (and from each other under load)
            sess_options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            if intra_op_num_threads is not None:
                sess_options.intra_op_num_threads = intra_op_num_threads
        self.session = ort.InferenceSession(
            proto.SerializeToString(), sess_options, providers=providers or ["CPUExecutionProvider"]
        )
        self.chunk_size = int(self.info["chunk_size"])
        self.state_names = [s["name"] for s in self.info["states"]]
        self._shapes = {s["name"]: s["shape"] for s in self.info["states"]}
        self.reset_every = reset_every
        if reset_every is not None and (not isinstance(reset_every, int) or reset_every < 1):
            raise ValueError(
                f"OnnxStream: reset_every must be a positive integer or None, got {reset_every!r}"
            )
        self._since_reset = 0

    @property
    def metadata(self) -> dict[str, Any]:
        """The user metadata stored at export (e.g. sample_rate, labels)."""
        return dict(self.info.get("metadata", {}))

    @property
    def d_input(self) -> int | None:
        return self.info["d_input"]

    @property
    def d_output(self) -> int:
        return self.info["d_output"]

    def default_state(self, batch_size: int) -> dict[str, np.ndarray]:
        """The zero state for `batch_size` streams; also restarts the reset_every count."""
        self._since_reset = 0
        return {
            n: np.zeros([batch_size if d == "batch" else d for d in self._shapes[n]], np.float32)
            for n in self.state_names
        }

    def _inputs(self, x) -> np.ndarray:
        x = np.asarray(x)
        if self.info["vocab_size"]:
            if x.ndim != 2 or not np.issubdtype(x.dtype, np.integer):
                raise ValueError(
                    f"OnnxStream: token inputs must be integer ids (B, L), got {x.dtype} {x.shape}"
                )
            return x.astype(np.int64)
        d = self.info["d_input"]
        if x.ndim == 2 and d == 1:
            x = x[..., None]
        if x.ndim != 3 or x.shape[-1] != d:
            raise ValueError(f"OnnxStream: expected inputs (B, L, {d}), got {x.shape}")
        return x.astype(np.float32)

    def run(self, x: np.ndarray, state: dict[str, np.ndarray]):
        """One call of the graph: x (B, L, .) prepared as the graph takes it -> (y, next state)."""
        out = self.session.run(None, {"x": x, **state})
        return out[0], dict(zip(self.state_names, out[1:], strict=True))

    def stream(self, x, state: dict[str, np.ndarray] | None = None):
        x = self._inputs(x)
        B, L = x.shape[:2]
        if L < 1:
            raise ValueError("OnnxStream: empty input (L = 0)")
        if state is None:
            state = self.default_state(B)
        ys, k = [], 0
        while k < L:
            n = min(self.chunk_size, L - k)
            if self.reset_every is not None:
                if self._since_reset == self.reset_every:
                    state = {name: np.zeros_like(v) for name, v in state.items()}
                    self._since_reset = 0
                n = min(n, self.reset_every - self._since_reset)
            y, state = self.run(x[:, k : k + n], state)
            ys.append(y)
            k += n
            if self.reset_every is not None:
                self._since_reset += n
        return (ys[0] if len(ys) == 1 else np.concatenate(ys, 1)), state
