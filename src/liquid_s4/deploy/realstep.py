"""A whole model's streaming step for a fixed chunk of T steps, in real arithmetic.

`RealProgram` reads an eval-mode `SequenceModel` once (in float64) and holds everything its
stream needs as real arrays; `RealProgram.run` computes, for a chunk of T inputs and the carried
state, exactly what T calls of `SequenceModel.step` compute (every step's output, and the state
after the chunk). It is written against a small set of tensor operations (`TorchOps` here, the
ONNX graph builder in `liquid_s4.deploy.onnx`), so the same code runs as a PyTorch module
(`RealStreamModule`) and becomes an ONNX graph.

The state, one real tensor per entry of `RealProgram.state_specs`:

    layer{i}     (B, H, 2 n') for S4/S4D layers: the complex layer state (B, H, n') as interleaved
                 (real, imaginary) pairs (`torch.view_as_real(state).flatten(-2)`); liquid PB/KB
                 layers keep their last P - 1 inputs in its last n' - n entries (imaginary parts 0).
                 (B, H, N) for LSSL layers (a real state).
    pool_sum     (B, d_model), pool_count (B, 1): the running sum and count of mean pooling (pool
                 "mean" only).

How a layer's chunk is computed:

- Linear time-invariant layers (S4, S4D, LSSL, with PB or KB liquid terms): the layer's recurrence
  is a real linear system x_k = M x_{k-1} + sum_s b_s w_s[k], y_k = C x_k + D u_k (+ PB read-outs),
  with inputs w = [u] (and the KB products v^(p)). The chunk is cut into blocks of `block` steps;
  within a block the outputs are a (block x block) Toeplitz product with the kernel C M^l b_s (D on
  its diagonal), and the block's contribution to the state a (block x m) product; the states at the
  block starts are carried one block at a time (x <- M^block x + z, a (m x m) product), and their
  contribution to the outputs is one (m x block) product per block. A shorter last block has its own
  (smaller) matrices. All matrices are computed once, in float64.
- The liquid scan (input-dependent transition, liquid_kernel="scan"): the coefficients f_k, g_k of
  x_k = f_k x_{k-1} + g_k for all steps at once (complex numbers as real pairs), then the recurrence
  one step at a time (`scan_complex`: a loop here, an ONNX Scan in the graph).
- Norms (BatchNorm in eval mode becomes one scale and shift), the output blocks, the running mean
  of mean pooling (a cumulative sum) and the decoder are position-wise over the chunk.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn

from ..models.sequence import batch_norm_affine

DEFAULT_BLOCK = 32
_CARRY_LIMIT = 2**20  # most entries of a layer's one-product carry matrix (else block by block)


def check_streamable(model) -> None:
    """A clear error for a model that has no streaming step: training mode, the retrieval head, a
    bidirectional layer."""
    if model.training:
        raise RuntimeError(
            "liquid_s4.deploy: the model is in training mode; call model.eval() before exporting (dropout "
            "and BatchNorm statistics must be fixed)"
        )
    if model.config.head == "retrieval":
        raise ValueError(
            "liquid_s4.deploy: the retrieval head compares two whole sequences; it has no streaming step"
        )
    for i, block in enumerate(model.blocks):
        if block.layer.bidirectional:
            raise ValueError(
                f"liquid_s4.deploy: layer {i} is bidirectional: it sees the future and cannot stream; "
                "only causal models stream"
            )


# ---- the layers' parts as real arrays -----------------------------------------------------------
@dataclass
class LinearLayer:
    """A linear time-invariant SSM layer as a real system (float64 arrays). M (H, m, m); Bs (S, H, m)
    input vectors of the signals [u, v^(2).. (KB)]; C (Ch, H, m); D (Ch, H); pb (P - 1, Ch, H) the PB
    read-outs or None; hist P - 1 (or 0); squash: tanh of the products; complex_state: the state tensor
    holds (real, imaginary) pairs (m = 2n) and the history as pairs after them."""

    M: np.ndarray
    Bs: np.ndarray
    C: np.ndarray
    D: np.ndarray
    pb: np.ndarray | None
    hist: int
    squash: bool
    kb: bool
    complex_state: bool
    _powers: dict = field(default_factory=dict)

    @property
    def m(self) -> int:
        return self.M.shape[-1]

    def state_size(self) -> int:
        return self.m + 2 * self.hist if self.complex_state else self.m

    def powers(self, n: int) -> list[np.ndarray]:
        """[M^0, ..., M^n] (each (H, m, m))."""
        p = self._powers.setdefault("list", [np.broadcast_to(np.eye(self.m), self.M.shape).copy()])
        while len(p) <= n:
            p.append(self.M @ p[-1])
        return p[: n + 1]

    def carry_matrix(self, L: int, nb: int) -> np.ndarray:
        """G (H, (nb + 1) m, (nb + 1) m): [x_0, z_0, .., z_{nb-1}] G = [x_0, .., x_{nb-1}, x_nb] (rows) for
        the states x_i at the starts of nb blocks of L steps and the state after them, from the start
        state x_0 and each block's input part z_c of its end state: x_i = x_0 (M^{iL})^T +
        sum_{c < i} z_c (M^{(i-1-c)L})^T."""
        H, m = self.M.shape[0], self.m
        ML = self.powers(L)[L]
        pw = [np.broadcast_to(np.eye(m), ML.shape).copy()]
        for _ in range(nb):
            pw.append(ML @ pw[-1])  # M^{kL}
        G = np.zeros((H, nb + 1, m, nb + 1, m))
        for i in range(nb + 1):
            G[:, 0, :, i] = np.swapaxes(pw[i], 1, 2)
            for c in range(i):
                G[:, c + 1, :, i] = np.swapaxes(pw[i - 1 - c], 1, 2)
        return G.reshape(H, (nb + 1) * m, (nb + 1) * m)

    def block_matrices(self, L: int) -> dict[str, np.ndarray]:
        """The matrices of a block of L steps: W (H, S L, Ch L) (outputs from the block's signals, laid
        out (s, j) x (c, k)), Sm (H, S L, m) (the state from them), O (H, m, Ch L) (outputs from the
        state at the block start), MT (H, m, m) ((M^L)^T: the state carried over the block)."""
        key = ("block", L)
        if key in self._powers:
            return self._powers[key]
        P = np.stack(self.powers(L))  # (L + 1, H, m, m)
        S, H, m = self.Bs.shape
        Ch = self.C.shape[0]
        kern = np.einsum("chi,lhij,shj->cshl", self.C, P[:L], self.Bs)  # (Ch, S, H, L): C M^l b_s
        k, j = np.arange(L)[:, None], np.arange(L)[None, :]
        lag = np.clip(k - j, 0, None)
        toe = np.where(k >= j, kern[..., lag], 0.0)  # (Ch, S, H, L(k), L(j))
        toe[:, 0] += self.D[:, :, None, None] * np.eye(L)
        W = toe.transpose(2, 1, 4, 0, 3).reshape(H, S * L, Ch * L)
        Sm = np.einsum("jhab,shb->hsja", P[L - 1 :: -1][:L], self.Bs).reshape(H, S * L, m)
        O = np.einsum("chi,khij->hjck", self.C, P[1 : L + 1]).reshape(H, m, Ch * L)
        out = {"W": W, "Sm": Sm, "O": O, "MT": np.swapaxes(P[L], 1, 2).copy()}
        self._powers[key] = out
        return out


@dataclass
class ScanLayer:
    """A liquid_kernel="scan" layer: form "affine" (f = a + bt s, g = b u) or "ode" (the zero-order-hold
    solution, d the step sizes (H,)); a, b, bt (H, n) complex; C (Ch, H, n) complex; D (Ch, H)."""

    form: str
    a: np.ndarray
    b: np.ndarray
    bt: np.ndarray
    C: np.ndarray
    D: np.ndarray
    d: np.ndarray | None
    squash: bool

    def state_size(self) -> int:
        return 2 * self.a.shape[-1]


@dataclass
class Norm:
    """kind "affine" (BatchNorm in eval mode: x * scale + shift, (H,) each) or "layer" (LayerNorm over
    the channels: weight and bias (H,) or None, eps)."""

    kind: str
    scale: np.ndarray | None
    shift: np.ndarray | None
    eps: float = 0.0


@dataclass
class Block:
    layer: LinearLayer | ScanLayer
    norm: Norm
    prenorm: bool
    activation: str  # identity, gelu, gelu_tanh, relu, silu, tanh, sigmoid
    proj_w: np.ndarray | None  # (out, Ch H) or None (no projection)
    proj_b: np.ndarray | None
    glu: bool


_ACTIVATIONS = {
    nn.Identity: "identity",
    nn.ReLU: "relu",
    nn.SiLU: "silu",
    nn.Tanh: "tanh",
    nn.Sigmoid: "sigmoid",
}


def _activation_name(act: nn.Module) -> str:
    if type(act) is nn.GELU:
        return "gelu_tanh" if act.approximate == "tanh" else "gelu"
    if type(act) in _ACTIVATIONS:
        return _ACTIVATIONS[type(act)]
    raise ValueError(f"liquid_s4.deploy: unsupported activation {type(act).__name__}")


def _norm(norm_module) -> Norm:
    m = norm_module.norm
    if isinstance(m, nn.BatchNorm1d):
        if m.running_mean is None:
            raise ValueError(
                "liquid_s4.deploy: BatchNorm without running statistics (track_running_stats=False) "
                "normalizes with the batch's own statistics and has no streaming form"
            )
        scale, shift = batch_norm_affine(m)
        return Norm("affine", _np(scale), _np(shift))
    w = None if m.weight is None else _np(m.weight)
    b = None if m.bias is None else _np(m.bias)
    return Norm("layer", w, b, float(m.eps))


def _np(t: torch.Tensor) -> np.ndarray:
    t = t.detach().cpu()
    return (t.to(torch.complex128) if t.is_complex() else t.double()).numpy()


def _real_pairs(z: torch.Tensor) -> torch.Tensor:
    return torch.view_as_real(z).flatten(-2) if z.is_complex() else z


def _linear_layer(layer, rate: float) -> LinearLayer:
    """Read the layer's discrete system as a real linear map by applying it to the basis vectors."""
    sys = layer.discrete(rate)
    conv = layer.conv
    H = layer.d_model
    complex_state = layer.ssm.complex_state
    n = sys.dB.shape[-1] if sys.diagonal else sys.N if sys.conj else sys.dB.shape[-1]
    m = 2 * n if complex_state else n
    eye = torch.eye(m, dtype=torch.float64)
    basis = eye[:, None, :].expand(m, H, m)  # (m, H, m): basis vector j in every channel
    if complex_state:
        basis = torch.view_as_complex(basis.reshape(m, H, n, 2).contiguous())
    zeros_u = torch.zeros(m, H, dtype=torch.float64)
    M = _real_pairs(sys.step(basis, zeros_u)).permute(1, 2, 0)  # (H, m_out, m_in)
    C = sys.output(basis).permute(1, 2, 0)  # (Ch, H, m)
    x0 = torch.zeros((1, H, n), dtype=basis.dtype)
    Bs = [_real_pairs(sys.step(x0, torch.ones(1, H, dtype=torch.float64)))[0]]
    P1 = conv.history_size
    kb = conv.liquid_kernel == "kb"
    if kb:
        for p in range(P1):
            v = torch.zeros(1, P1, H, dtype=torch.float64)
            v[:, p] = 1
            Bs.append(_real_pairs(sys.step(x0, torch.zeros(1, H, dtype=torch.float64), (sys.liquid_B, v)))[0])
    pb = _np(sys.liquid_coef) if conv.liquid_kernel == "pb" else None
    return LinearLayer(
        M=_np(M),
        Bs=np.stack([_np(b) for b in Bs]),
        C=_np(C),
        D=_np(conv.D),
        pb=pb,
        hist=P1,
        squash=conv.liquid_squash == "tanh",
        kb=kb,
        complex_state=complex_state,
    )


def _scan_layer(layer, rate: float) -> ScanLayer:
    coef = layer.ssm.scan_coefficients(rate, layer.conv.liquid_form)
    if coef.form not in ("affine", "ode"):
        raise ValueError(f"liquid_s4.deploy: unsupported scan form {coef.form!r}")
    d = None if coef.form == "affine" else _np(coef.dt * rate)
    return ScanLayer(
        form=coef.form,
        a=_np(coef.a),
        b=_np(coef.b),
        bt=_np(coef.bt),
        C=_np(coef.C[: layer.channels]),
        D=_np(layer.conv.D),
        d=d,
        squash=layer.conv.squash,
    )


def _block(block, rate: float | None) -> Block:
    layer = block.layer
    r = layer.rate if rate is None else layer._check_rate(rate)
    with torch.no_grad():
        core = _scan_layer(layer, r) if layer.liquid_kernel == "scan" else _linear_layer(layer, r)
    out = layer.output
    proj = out.projection
    if isinstance(proj, nn.Identity):
        w = b = None
        glu = False
    elif (
        isinstance(proj, nn.Sequential)
        and len(proj) == 2
        and isinstance(proj[0], nn.Linear)
        and isinstance(proj[1], (nn.GLU, nn.Identity))
    ):
        lin = proj[0]
        w = _np(lin.weight)
        b = np.zeros(w.shape[0]) if lin.bias is None else _np(lin.bias)
        glu = isinstance(proj[1], nn.GLU)
    else:
        raise ValueError(f"liquid_s4.deploy: unsupported output projection {type(proj).__name__}")
    return Block(core, _norm(block.norm), block.prenorm, _activation_name(out.activation), w, b, glu)


@dataclass
class StateSpec:
    name: str
    shape: tuple  # with "batch" for the batch axis


class RealProgram:
    """The streaming computation of an eval-mode `SequenceModel`, read once in float64 (see the module
    docstring). rate: the multiplier of every layer's dt (None: each layer's own `rate`, as
    `SequenceModel.step` uses); block: the block length of the chunked form of linear layers."""

    def __init__(self, model, rate: float | None = None, block: int = DEFAULT_BLOCK):
        check_streamable(model)
        c = model.config
        self.config = c
        self.block = int(block)
        self.d_model, self.d_output = c.d_model, c.d_output
        self.tokens = bool(c.vocab_size)
        self.d_input = None if self.tokens else c.d_input
        self.pool = c.pool
        m64 = copy.deepcopy(model).double().eval()
        enc = m64.encoder
        if self.tokens:
            self.embedding = _np(enc.weight)
        else:
            if not isinstance(enc, nn.Linear):
                raise ValueError(f"liquid_s4.deploy: unsupported encoder {type(enc).__name__}")
            self.enc_w = _np(enc.weight)
            self.enc_b = np.zeros(c.d_model) if enc.bias is None else _np(enc.bias)
        self.blocks = [_block(b, rate) for b in m64.blocks]
        self.final_norm = _norm(m64.final_norm) if c.prenorm else None
        self.dec_w = _np(m64.decoder.weight)
        self.dec_b = np.zeros(c.d_output) if m64.decoder.bias is None else _np(m64.decoder.bias)
        H = c.d_model
        self.state_specs = [
            StateSpec(f"layer{i}", ("batch", H, b.layer.state_size())) for i, b in enumerate(self.blocks)
        ]
        if self.pool == "mean":
            self.state_specs += [StateSpec("pool_sum", ("batch", H)), StateSpec("pool_count", ("batch", 1))]

    # ---- the computation ------------------------------------------------------------------------
    def run(self, ops, x, states: list, T: int):
        """x: (B, T, d_input) float, or (B, T) int64 tokens; states: as `state_specs`. Returns
        (y (B, T, d_output), next states)."""
        H = self.d_model
        if self.tokens:
            h = ops.transpose(ops.gather(ops.const("embedding", self.embedding), x), (0, 2, 1))
        else:
            xt = ops.transpose(x, (0, 2, 1))  # (B, d_in, T)
            h = ops.add(
                ops.matmul(ops.const("enc_w", self.enc_w), xt), ops.const("enc_b", self.enc_b[:, None])
            )
        new_states = []
        for i, (blk, st) in enumerate(zip(self.blocks, states, strict=False)):
            z = self._norm(ops, blk.norm, h, f"b{i}.norm") if blk.prenorm else h
            z, st = self._layer(ops, blk, z, st, T, f"b{i}")
            h = ops.add(h, z)
            if not blk.prenorm:
                h = self._norm(ops, blk.norm, h, f"b{i}.norm")
            new_states.append(st)
        if self.final_norm is not None:
            h = self._norm(ops, self.final_norm, h, "final_norm")
        if self.pool == "mean":
            s0, c0 = states[len(self.blocks)], states[len(self.blocks) + 1]
            cs = ops.add(ops.cumsum(h, 2), ops.reshape(s0, [-1, H, 1]))  # (B, H, T)
            steps = ops.const(f"steps{T}", np.arange(1, T + 1, dtype=np.float64)[None])  # (1, T)
            cnt = ops.add(c0, steps)  # (B, T)
            h = ops.div(cs, ops.reshape(cnt, [-1, 1, T]))
            new_states += [ops.reshape(ops.slice(cs, 2, T - 1, T), [-1, H]), ops.add(c0, float(T))]
        y = ops.matmul(ops.transpose(h, (0, 2, 1)), ops.const("dec_wt", self.dec_w.T.copy()))
        return ops.add(y, ops.const("dec_b", self.dec_b)), new_states

    def _norm(self, ops, norm: Norm, x, name: str):
        """x (B, H, T) normalized over H."""
        if norm.kind == "affine":
            x = ops.mul(x, ops.const(name + ".scale", norm.scale[:, None]))
            return ops.add(x, ops.const(name + ".shift", norm.shift[:, None]))
        H = self.d_model
        avg = ops.const("mean_over_channels", np.full((1, H), 1.0 / H))
        xc = ops.sub(x, ops.matmul(avg, x))
        var = ops.matmul(avg, ops.mul(xc, xc))
        x = ops.div(xc, ops.sqrt(ops.add(var, norm.eps)))
        if norm.scale is not None:
            x = ops.mul(x, ops.const(name + ".weight", norm.scale[:, None]))
        if norm.shift is not None:
            x = ops.add(x, ops.const(name + ".bias", norm.shift[:, None]))
        return x

    def _layer(self, ops, blk: Block, u, st, T: int, name: str):
        """u (B, H, T) -> (the layer's output (B, H, T), next state)."""
        if isinstance(blk.layer, ScanLayer):
            y, st = self._scan(ops, blk.layer, u, st, T, name)
        else:
            y, st = self._linear(ops, blk.layer, u, st, T, name)
        y = _activation(ops, blk.activation, y)  # (B, Ch H, T)
        if blk.proj_w is not None:
            y = ops.add(
                ops.matmul(ops.const(name + ".proj_w", blk.proj_w), y),
                ops.const(name + ".proj_b", blk.proj_b[:, None]),
            )
            if blk.glu:
                half = blk.proj_w.shape[0] // 2
                y = ops.mul(ops.slice(y, 1, 0, half), ops.sigmoid(ops.slice(y, 1, half, 2 * half)))
        return y, st

    def _linear(self, ops, lay: LinearLayer, u, st, T: int, name: str):
        H, m, n_h = self.d_model, lay.m, lay.hist
        Ch = lay.C.shape[0]
        x = ops.slice(st, 2, 0, m) if n_h else st
        signals, products = [u], []
        if n_h:
            hist = ops.slice(st, 2, m, m + 2 * n_h, 2)  # the real parts of the history entries
            ext = ops.concat([hist, u], 2)  # (B, H, P - 1 + T)
            v = u
            for i in range(n_h):
                v = ops.mul(v, ops.slice(ext, 2, n_h - 1 - i, n_h - 1 - i + T))
                products.append(ops.tanh(v) if lay.squash else v)
            if lay.kb:
                signals += products
            new_hist = ops.slice(ext, 2, T, T + n_h)  # (B, H, P - 1)
        S = len(signals)
        U = signals[0] if S == 1 else ops.concat([ops.reshape(s, [-1, H, 1, T]) for s in signals], 2)
        L = min(self.block, T)
        nf, r = T // L, T % L
        x = ops.reshape(x, [-1, H, 1, m])
        ys = []
        if nf:
            full = U if r == 0 else ops.slice(U, -1, 0, nf * L)
            if S == 1:
                Uf = ops.reshape(full, [-1, H, nf, L])
            else:
                Uf = ops.reshape(
                    ops.transpose(ops.reshape(full, [-1, H, S, nf, L]), (0, 1, 3, 2, 4)), [-1, H, nf, S * L]
                )
            mats = lay.block_matrices(L)
            c = _LazyConsts(ops, mats, f"{name}.", str(L))
            Y = ops.matmul(Uf, c["W"])  # (B, H, nf, Ch L)
            if nf == 1:
                Y = ops.add(Y, ops.matmul(x, c["O"]))
                x = ops.add(ops.matmul(x, c["MT"]), ops.matmul(Uf, c["Sm"]))
            elif H * ((nf + 1) * m) ** 2 <= _CARRY_LIMIT:  # the block starts in one product
                Z = ops.reshape(ops.matmul(Uf, c["Sm"]), [-1, H, 1, nf * m])
                G = ops.const(f"{name}.G{L}x{nf}", lay.carry_matrix(L, nf))
                X = ops.matmul(ops.concat([x, Z], 3), G)  # (B, H, 1, (nf + 1) m)
                starts = ops.reshape(ops.slice(X, 3, 0, nf * m), [-1, H, nf, m])
                Y = ops.add(Y, ops.matmul(starts, c["O"]))
                x = ops.slice(X, 3, nf * m, (nf + 1) * m)
            else:
                Z = ops.matmul(Uf, c["Sm"])  # (B, H, nf, m): each block's inputs' part of its end state
                starts = []
                for i in range(nf):
                    starts.append(x)
                    x = ops.add(ops.matmul(x, c["MT"]), ops.slice(Z, 2, i, i + 1))
                Y = ops.add(Y, ops.matmul(ops.concat(starts, 2), c["O"]))
            ys.append(self._channels_first(ops, Y, Ch, nf, L))
        if r:
            tail = ops.slice(U, -1, nf * L, T)
            Ur = ops.reshape(tail, [-1, H, 1, S * r])
            mats = lay.block_matrices(r)
            c = _LazyConsts(ops, mats, f"{name}.", str(r))
            Y = ops.add(ops.matmul(Ur, c["W"]), ops.matmul(x, c["O"]))
            x = ops.add(ops.matmul(x, c["MT"]), ops.matmul(Ur, c["Sm"]))
            ys.append(self._channels_first(ops, Y, Ch, 1, r))
        y = ys[0] if len(ys) == 1 else ops.concat(ys, 2)  # (B, Ch H, T)
        if lay.pb is not None:
            for p, v in enumerate(products):
                coef = ops.const(f"{name}.pb{p}", lay.pb[p].reshape(Ch * H, 1))
                y = ops.add(y, ops.mul(coef, v if Ch == 1 else ops.concat([v] * Ch, 1)))
        x = ops.reshape(x, [-1, H, m])
        if n_h:
            pairs = ops.concat(
                [
                    ops.reshape(new_hist, [-1, H, n_h, 1]),
                    ops.reshape(ops.mul(new_hist, 0.0), [-1, H, n_h, 1]),
                ],
                3,
            )
            x = ops.concat([x, ops.reshape(pairs, [-1, H, 2 * n_h])], 2)
        return y, x

    def _channels_first(self, ops, Y, Ch: int, nb: int, L: int):
        """(B, H, nb, Ch L) block outputs -> (B, Ch H, nb L)."""
        H = self.d_model
        if Ch == 1:
            return ops.reshape(Y, [-1, H, nb * L])
        Y = ops.transpose(ops.reshape(Y, [-1, H, nb, Ch, L]), (0, 3, 1, 2, 4))
        return ops.reshape(Y, [-1, Ch * H, nb * L])

    def _scan(self, ops, lay: ScanLayer, u, st, T: int, name: str):
        H, n = self.d_model, lay.a.shape[-1]
        Ch = lay.C.shape[0]

        def const(key, z):  # (H, n) complex -> real and imaginary parts
            return ops.const(f"{name}.{key}.re", z.real.copy()), ops.const(f"{name}.{key}.im", z.imag.copy())

        ut = ops.reshape(ops.transpose(u, (2, 0, 1)), [T, -1, H, 1])  # (T, B, H, 1)
        s = ops.tanh(ut) if lay.squash else ut
        ar, ai = const("a", lay.a)
        tr, ti = const("bt", lay.bt)
        if lay.form == "affine":
            br, bi = const("b", lay.b)
            fr, fi = ops.add(ar, ops.mul(tr, s)), ops.add(ai, ops.mul(ti, s))
            gr, gi = ops.mul(br, ut), ops.mul(bi, ut)
        else:  # ode: f = e^w, g = d phi(w) b u with w = d (a + bt s)
            d = ops.const(f"{name}.d", lay.d[:, None])
            wr = ops.mul(d, ops.add(ar, ops.mul(tr, s)))
            wi = ops.mul(d, ops.add(ai, ops.mul(ti, s)))
            e = ops.exp(wr)
            fr, fi = ops.mul(e, ops.cos(wi)), ops.mul(e, ops.sin(wi))
            pr, pi = _phi(ops, wr, wi, fr, fi)
            db = lay.d[:, None] * lay.b
            dbr, dbi = const("db", db)
            qr, qi = _cmul(ops, pr, pi, dbr, dbi)
            gr, gi = ops.mul(qr, ut), ops.mul(qi, ut)
        x0r = ops.slice(st, 2, 0, 2 * n, 2)  # (B, H, n)
        x0i = ops.slice(st, 2, 1, 2 * n, 2)
        if T == 1:  # one step: no loop
            endr, endi = _cmul(ops, ops.reshape(fr, [-1, H, n]), ops.reshape(fi, [-1, H, n]), x0r, x0i)
            endr = ops.add(endr, ops.reshape(gr, [-1, H, n]))
            endi = ops.add(endi, ops.reshape(gi, [-1, H, n]))
            xr, xi = ops.reshape(endr, [1, -1, H, n]), ops.reshape(endi, [1, -1, H, n])
        else:  # (T, B, H, n) each, and the last (B, H, n)
            xr, xi, endr, endi = ops.scan_complex(fr, fi, gr, gi, x0r, x0i, (H, n))
        # y_c = 2 Re(C_c x) = x_r . 2 Re C_c - x_i . 2 Im C_c
        cr = ops.const(
            f"{name}.C2re", np.ascontiguousarray((2 * lay.C.real).transpose(1, 2, 0))
        )  # (H, n, Ch)
        ci = ops.const(f"{name}.C2im", np.ascontiguousarray((-2 * lay.C.imag).transpose(1, 2, 0)))
        xr, xi = ops.transpose(xr, (1, 2, 0, 3)), ops.transpose(xi, (1, 2, 0, 3))  # (B, H, T, n)
        y = ops.add(ops.matmul(xr, cr), ops.matmul(xi, ci))  # (B, H, T, Ch)
        y = ops.reshape(ops.transpose(y, (0, 3, 1, 2)), [-1, Ch * H, T])
        Du = ops.mul(
            ops.const(f"{name}.D", lay.D.reshape(Ch * H, 1)), u if Ch == 1 else ops.concat([u] * Ch, 1)
        )
        y = ops.add(y, Du)
        pairs = ops.concat([ops.reshape(endr, [-1, H, n, 1]), ops.reshape(endi, [-1, H, n, 1])], 3)
        return y, ops.reshape(pairs, [-1, H, 2 * n])


class _LazyConsts:
    """c[key]: the constant `arrays[key]` of `ops`, registered on first use (unused ones stay out of
    the graph)."""

    def __init__(self, ops, arrays: dict, prefix: str, suffix: str):
        self.ops, self.arrays, self.prefix, self.suffix = ops, arrays, prefix, suffix

    def __getitem__(self, key: str):
        return self.ops.const(f"{self.prefix}{key}{self.suffix}", self.arrays[key])


def _cmul(ops, ar, ai, br, bi):
    return ops.sub(ops.mul(ar, br), ops.mul(ai, bi)), ops.add(ops.mul(ar, bi), ops.mul(ai, br))


_PHI_SMALL = 0.5  # |w| below which phi(w) = (e^w - 1)/w is a Taylor polynomial
_PHI_TERMS = 10  # terms of that polynomial: error below 0.5^10 / 11! ~ 2.4e-11


def _phi(ops, wr, wi, er, ei):
    """phi(w) = (e^w - 1)/w for complex w = wr + i wi, e^w = er + i ei given: a Taylor polynomial
    sum_k w^k / (k + 1)! for |w| < 1/2 (no cancellation), the quotient elsewhere."""
    pr, pi = ops.add(ops.mul(wr, 0.0), 1.0 / math.factorial(_PHI_TERMS)), ops.mul(wi, 0.0)
    for k in range(_PHI_TERMS - 1, 0, -1):  # Horner: p <- 1/k! + w p
        qr, qi = _cmul(ops, wr, wi, pr, pi)
        pr, pi = ops.add(qr, 1.0 / math.factorial(k)), qi
    # (e - 1) / w = (e - 1) conj(w) / |w|^2
    mod2 = ops.add(ops.mul(wr, wr), ops.mul(wi, wi))
    small = ops.less(mod2, _PHI_SMALL**2)
    safe = ops.where(small, ops.add(ops.mul(mod2, 0.0), 1.0), mod2)  # no division by 0 where unused
    nr, ni = _cmul(ops, ops.sub(er, 1.0), ei, wr, ops.neg(wi))
    return ops.where(small, pr, ops.div(nr, safe)), ops.where(small, pi, ops.div(ni, safe))


def _activation(ops, name: str, y):
    if name == "identity":
        return y
    if name == "gelu":
        return ops.mul(ops.mul(y, 0.5), ops.add(ops.erf(ops.mul(y, 1 / math.sqrt(2))), 1.0))
    if name == "gelu_tanh":
        inner = ops.mul(ops.add(y, ops.mul(ops.mul(ops.mul(y, y), y), 0.044715)), math.sqrt(2 / math.pi))
        return ops.mul(ops.mul(y, 0.5), ops.add(ops.tanh(inner), 1.0))
    if name == "relu":
        return ops.relu(y)
    if name == "silu":
        return ops.mul(y, ops.sigmoid(y))
    if name == "tanh":
        return ops.tanh(y)
    if name == "sigmoid":
        return ops.sigmoid(y)
    raise ValueError(f"liquid_s4.deploy: unsupported activation {name!r}")


# ---- the PyTorch backend ------------------------------------------------------------------------
class TorchOps:
    """The operations of `RealProgram.run` on torch tensors; constants come from `module`'s buffers
    (registered on first use)."""

    def __init__(self, module: nn.Module, dtype: torch.dtype):
        self.module, self.dtype = module, dtype

    def const(self, name: str, arr: np.ndarray) -> torch.Tensor:
        key = "c_" + name.replace(".", "_")
        buf = self.module._buffers.get(key)
        if buf is None:
            buf = torch.as_tensor(np.asarray(arr), dtype=self.dtype)
            self.module.register_buffer(key, buf)
        return buf

    add, sub, mul, div = torch.add, torch.sub, torch.mul, torch.div
    matmul, tanh, sigmoid, relu, exp, sin, cos, sqrt, neg = (
        torch.matmul,
        torch.tanh,
        torch.sigmoid,
        torch.relu,
        torch.exp,
        torch.sin,
        torch.cos,
        torch.sqrt,
        torch.neg,
    )
    erf = torch.special.erf

    def less(self, x, value: float):
        return x < value

    def where(self, cond, x, y):
        return torch.where(cond, x, y)

    def concat(self, xs, axis: int):
        return torch.cat(xs, axis)

    def slice(self, x, axis: int, start: int, end: int, step: int = 1):
        idx = [slice(None)] * x.dim()
        idx[axis] = slice(start, end, step)
        return x[tuple(idx)]

    def reshape(self, x, shape):
        return x.reshape(shape)

    def transpose(self, x, perm):
        return x.permute(perm)

    def gather(self, table, ids):
        return table[ids]

    def cumsum(self, x, axis: int):
        return torch.cumsum(x, axis)

    def scan_complex(self, fr, fi, gr, gi, xr, xi, shape=None):
        outr, outi = [], []
        for k in range(fr.shape[0]):
            xr, xi = fr[k] * xr - fi[k] * xi + gr[k], fr[k] * xi + fi[k] * xr + gi[k]
            outr.append(xr)
            outi.append(xi)
        return torch.stack(outr), torch.stack(outi), xr, xi


class RealStreamModule(nn.Module):
    """A PyTorch module of `RealProgram` for chunks of `chunk_size` steps (other lengths run one step at a
    time): forward(x, *states) -> (y (B, L, d_output), *next_states), in real arithmetic, with every
    constant a buffer in `dtype`. Build it from a model in eval mode; it does not follow later changes
    of the model's parameters."""

    def __init__(
        self,
        model,
        chunk_size: int,
        rate: float | None = None,
        block: int = DEFAULT_BLOCK,
        dtype=torch.float32,
    ):
        super().__init__()
        self.program = RealProgram(model, rate, block)
        self.chunk_size, self.dtype = int(chunk_size), dtype
        self._ops = TorchOps(self, dtype)
        with torch.no_grad():  # register the constants of both paths
            states = self.default_state(1)
            if self.program.tokens:
                x = torch.zeros(1, self.chunk_size, dtype=torch.long)
            else:
                x = torch.zeros(1, self.chunk_size, self.program.d_input)
            self(x, *states)
            self(x[:, :1], *states)

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.program.state_specs]

    def default_state(self, batch_size: int) -> list[torch.Tensor]:
        return [
            torch.zeros([batch_size if d == "batch" else d for d in s.shape], dtype=self.dtype)
            for s in self.program.state_specs
        ]

    def forward(self, x: torch.Tensor, *states: torch.Tensor):
        if not self.program.tokens:
            x = x.to(self.dtype)
        L = x.shape[1]
        if L == self.chunk_size:
            y, states = self.program.run(self._ops, x, list(states), L)
            return (y, *states)
        ys = []
        for k in range(L):
            y, states = self.program.run(self._ops, x[:, k : k + 1], list(states), 1)
            ys.append(y)
        return (torch.cat(ys, 1), *states)
