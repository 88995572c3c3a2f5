"""A fast per-sample CPU path for trained `SequenceModel`s: `FastStream`.

`SequenceModel.step` runs a step as a few dozen small PyTorch ops per layer, and at batch 1 their
dispatch costs far more than their arithmetic. `FastStream` extracts, once, the model's computation
in real arithmetic (the encoder, per block the norm, the layer's discrete system at the stream's
rate, the D skip, the liquid terms, the activation, the output projection and its GLU, the
residual; the pooling and the decoder) and runs every layer of a step, or of many steps, in one
compiled numba call (`pip install liquid-s4[fast]`; the kernel is compiled on first use and cached
on disk). Nothing is approximated: the eval-mode BatchNorms become per-channel affine maps, the
final norm's affine map (BatchNorm, or LayerNorm's weight and bias) is folded into the decoder, and
the rest is the same arithmetic as `step` in another order (float64 models agree with `step` to
about 1e-12, float32 models to about 1e-6).

`FastStream.step` advances every layer for one sample. `FastStream.run` on a chunk goes layer by
layer over pieces of up to `tile` steps: each layer's recurrence steps through the piece, then its
output block (activation, projection, GLU, residual) runs on the whole piece as a small matrix
product, so a layer's weights are read once per piece rather than once per sample (the whole model's
weights do not fit in a core's cache). Both give the same numbers, bit for bit, for any chunking.

Every layer family steps: S4D (plain, liquid "pb"/"kb", and the exact liquid scan in its three
forms), S4 and Liquid-S4 (the O(N) Woodbury step of `DPLRRecurrence`), LSSL (dense); LayerNorm and
BatchNorm, prenorm and postnorm, the three pools and the continuous-stream options of
`SequenceModel.default_state` (pool_window, pool_decay, reset_every); linear and token encoders;
float32 and float64 models. Bidirectional layers and the retrieval head have no step mode.

The stream's state converts to and from the model's state dict (`state`, `set_state`), so one
stream can move between `FastStream` and `SequenceModel.step` / `SequenceModel.stream`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn as nn

from ..models.sequence import batch_norm_affine
from . import _fast_kernels as K

_INSTALL = "the fast per-sample path needs numba: pip install 'liquid-s4[fast]'"
_NP_DTYPES = {torch.float32: np.float32, torch.float64: np.float64}
_COMPLEX = {torch.float32: torch.complex64, torch.float64: torch.complex128}
TILE = 64  # `FastStream.run`'s piece: the steps each layer advances before the next layer runs


def available() -> bool:
    """Whether numba is installed (`FastStream` can run)."""
    return K.numba is not None


class _Packer:
    """Concatenates the plan's parameters into one flat array; `add` returns an array's offset."""

    def __init__(self, dtype):
        self.dtype, self.parts, self.size = dtype, [], 0

    def add(self, t) -> int:
        if isinstance(t, torch.Tensor):
            t = t.detach().cpu().to(torch.float64).numpy()
        a = np.ascontiguousarray(t, dtype=np.float64).ravel()
        off = self.size
        self.parts.append(a)
        self.size += a.size
        return off

    def add_complex(self, t: torch.Tensor) -> tuple[int, int]:
        """Complex (..., H, n) as real and imaginary parts (..., n, H)."""
        t = t.detach().cpu().to(torch.complex128).transpose(-1, -2)
        return self.add(t.real), self.add(t.imag)

    def add_interleaved(self, t: torch.Tensor) -> tuple[int, int]:
        """A real view (..., H, 2n) of complex numbers (Re, Im interleaved), as real and imaginary parts
        (..., n, H)."""
        t = t.detach().cpu().to(torch.float64).transpose(-1, -2)
        return self.add(t[..., 0::2, :]), self.add(t[..., 1::2, :])

    def array(self) -> np.ndarray:
        if not self.parts:
            return np.zeros(1, self.dtype)
        return np.concatenate(self.parts).astype(self.dtype)


_ACTIVATIONS = {
    nn.Identity: K.ACT_IDENTITY,
    nn.ReLU: K.ACT_RELU,
    nn.SiLU: K.ACT_SILU,
    nn.Tanh: K.ACT_TANH,
    nn.Sigmoid: K.ACT_SIGMOID,
}


def _activation_code(act: nn.Module, name: str) -> int:
    if type(act) is nn.GELU:
        return K.ACT_GELU if act.approximate == "none" else K.ACT_GELU_TANH
    code = _ACTIVATIONS.get(type(act))
    if code is None:
        raise NotImplementedError(
            f"FastStream: {name} has the activation {act!r}, which it does not implement"
        )
    return code


def _batch_norm_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """(s, t) with BatchNorm(x) = s x + t in eval mode, in float64."""
    if bn.running_mean is None or bn.running_var is None:
        raise NotImplementedError(
            "FastStream: a BatchNorm without running statistics normalizes with the statistics of each "
            "batch; the fast path needs eval-mode BatchNorm with running statistics"
        )
    return batch_norm_affine(bn)


def _layer_norm_affine(ln: nn.LayerNorm, H: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(w, b) of LayerNorm's affine map (ones and zeros without one), in float64."""
    w = torch.ones(H, dtype=torch.float64) if ln.weight is None else ln.weight.double()
    b = torch.zeros(H, dtype=torch.float64) if ln.bias is None else ln.bias.double()
    return w, b


def _norm_affine(norm: nn.Module, H: int) -> tuple[int, torch.Tensor, torch.Tensor]:
    """(kind, s, t) of a model `Norm`: NORM_LAYER with LayerNorm's affine map, or NORM_BATCH with the
    eval-mode BatchNorm as the affine map s x + t."""
    inner = norm.norm
    if isinstance(inner, nn.LayerNorm):
        if tuple(inner.normalized_shape) != (H,):
            raise NotImplementedError(f"FastStream: a LayerNorm over {inner.normalized_shape}")
        return K.NORM_LAYER, *_layer_norm_affine(inner, H)
    return K.NORM_BATCH, *_batch_norm_affine(inner)


def _layer_plan(lay: np.ndarray, layer, rate, pk: _Packer, H: int) -> tuple[int, dict]:
    """Fill the row `lay` for the SSM layer `layer`; returns (state size, how to convert its state)."""
    name = type(layer).__name__
    if layer.bidirectional:
        raise RuntimeError(
            f"FastStream: a bidirectional {name} layer sees the future and cannot run step by step"
        )
    conv, out = layer.conv, layer.output
    r = layer.rate if rate is None else layer._check_rate(rate)
    Ch = layer.channels
    lay[K.K_CH] = Ch
    lay[K.K_ACT] = _activation_code(out.activation, name)
    if type(out.projection) is nn.Identity:
        if Ch != 1:
            raise NotImplementedError(f"FastStream: {name} with channels={Ch} and postact=None")
        lay[K.K_POST] = K.POST_NONE
    else:
        plain = out._plain()
        if plain is None:
            raise NotImplementedError(
                f"FastStream: {name}'s output projection was replaced or has forward hooks; the fast path "
                "runs the layer's own projection only"
            )
        lin, glu = plain
        lay[K.K_POST] = K.POST_GLU if glu else K.POST_LINEAR
        lay[K.K_HOUT] = lin.out_features
        lay[K.K_PW] = pk.add(lin.weight.detach().double().t())
        lay[K.K_PB] = pk.add(lin.bias)
    lay[K.K_D] = pk.add(conv.D)
    with torch.no_grad():
        if conv.liquid_kernel == "scan":
            coef = layer.ssm.scan_coefficients(r, conv.liquid_form)
            n = coef.a.shape[-1]
            if coef.form == "affine":
                lay[K.K_KIND] = K.SCAN_AFFINE
                lay[K.K_SQUASH] = int(conv.squash)
            elif coef.form == "ode":
                lay[K.K_KIND] = K.SCAN_ODE
                lay[K.K_DT] = pk.add(coef.dt.double() * r)
            else:  # pragma: no cover - the other forms come only with per-step rates
                raise NotImplementedError(f"FastStream: the liquid scan form {coef.form!r}")
            lay[K.K_AR], lay[K.K_AI] = pk.add_complex(coef.a)
            lay[K.K_BR], lay[K.K_BI] = pk.add_complex(coef.b)
            lay[K.K_BTR], lay[K.K_BTI] = pk.add_complex(coef.bt)
            C = coef.C[:Ch].to(torch.complex128).transpose(-1, -2)
            lay[K.K_WR], lay[K.K_WI] = pk.add(2 * C.real), pk.add(-2 * C.imag)  # <W, x> = 2 Re(C x)
            lay[K.K_N] = n
            return 2 * H * n, {"complex": True, "n": n, "P1": 0}
        setup = layer._step_setup(r)
        rec, P1 = setup.recurrence, conv.history_size
        lay[K.K_P1] = P1
        lay[K.K_LIQ] = {None: K.LIQ_NONE, "pb": K.LIQ_PB, "kb": K.LIQ_KB}[conv.liquid_kernel]
        lay[K.K_SQUASH] = int(conv.liquid_squash == "tanh")
        if rec is None:  # LSSL: the dense real system
            sys = setup.sys
            if sys.diagonal or sys.conj:  # pragma: no cover - every such layer has a recurrence
                raise NotImplementedError(f"FastStream: {name} without a fast recurrence")
            n = sys.dA.shape[-1]
            lay[K.K_KIND], lay[K.K_N] = K.DENSE, n
            lay[K.K_DA] = pk.add(sys.dA.permute(1, 2, 0))  # (N, N, H)
            lay[K.K_BR], lay[K.K_WR] = pk.add(sys.dB.t()), pk.add(sys.C.transpose(-1, -2))
            return H * n, {"complex": False, "n": n, "P1": 0}
        n = rec.dA.shape[-1]
        lay[K.K_N] = n
        lay[K.K_AR], lay[K.K_AI] = pk.add_complex(rec.dA)
        lay[K.K_BR], lay[K.K_BI] = pk.add_interleaved(rec.dB)
        lay[K.K_WR], lay[K.K_WI] = pk.add_interleaved(rec.W.reshape(Ch, H, 2 * n))
        if hasattr(rec, "P"):  # DPLRRecurrence
            lay[K.K_KIND], lay[K.K_R] = K.DPLR, len(rec.P)
            lay[K.K_PR], lay[K.K_PI] = pk.add_interleaved(torch.stack(rec.P))
            lay[K.K_BETR], lay[K.K_BETI] = pk.add_interleaved(torch.stack(rec.beta))
            lay[K.K_DELR], lay[K.K_DELI] = pk.add_interleaved(torch.stack(rec.delta))
        else:
            lay[K.K_KIND] = K.DIAG
        if rec.extra_B is not None:
            lay[K.K_EBR], lay[K.K_EBI] = pk.add_interleaved(rec.extra_B)
        if conv.liquid_kernel == "pb":
            pb = torch.stack([c.reshape(-1) for c in setup.pb_coef])  # (P - 1, Ch * H)
            lay[K.K_PBC] = pk.add(pb)
        return 2 * H * n + H * P1, {"complex": True, "n": n, "P1": P1}


class FastStream:
    """A `SequenceModel` streamed one sample at a time (or many samples per call) on the CPU, by one
    compiled numba kernel for the whole model (see the module docstring).

    FastStream(model, batch_size=1, rate=None, pool_window=None, pool_decay=None, reset_every=None):
    the model in eval mode (its parameters are read once, here: build a new FastStream after changing
    them). batch_size: the number of streams advanced together. rate: the step-size multiplier of
    every layer (a number; None: each layer's own `rate`), as in `SequenceModel.step`; per-step gaps
    are not supported. pool_window, pool_decay, reset_every: the continuous-stream options of
    `SequenceModel.default_state`.

    step(x_t) -> y_t: x_t (B, d_input) (or (B,) scalars when d_input == 1, or (B,) token ids) as a
      torch tensor or numpy array; y_t a torch tensor (B, d_output) in the model's dtype: what
      `model.step` returns.
    run(x) -> y: x (B, L, d_input) (or (B, L)), y (B, L, d_output): L steps in one call, identical
      to calling `step` L times (layer by layer over pieces of `tile` steps, see the module docstring).
    tile: the steps per piece of `run` (default TILE); any value >= 1 gives the same outputs.
    reset(): back to the zero state. state() / set_state(state): the model's state dict (see
      `SequenceModel.default_state`), to continue a stream with `model.step` / `model.stream` or
      take one over from them.
    """

    def __init__(
        self,
        model,
        batch_size: int = 1,
        rate: float | None = None,
        pool_window: int | None = None,
        pool_decay: float | None = None,
        reset_every: int | None = None,
    ):
        if not available():
            raise ImportError(_INSTALL)
        from ..models.streaming import StreamOptions
        from ..utils import is_positive_int

        if not is_positive_int(batch_size):
            raise ValueError(f"FastStream: batch_size must be a positive integer, got {batch_size!r}")
        if model.training:
            raise RuntimeError("FastStream: the model is in training mode; call model.eval() first")
        c = model.config
        if c.head == "retrieval":
            raise RuntimeError(
                "FastStream: the retrieval head compares two whole sequences; it has no step mode"
            )
        if isinstance(rate, torch.Tensor) and rate.dim() > 0:
            raise NotImplementedError(
                "FastStream: per-step rates (a tensor of time gaps) are not supported; pass a number, or "
                "stream with model.step"
            )
        options = StreamOptions(pool_window, pool_decay, reset_every)
        options.check(c.pool)
        dtype = model.decoder.weight.dtype
        if dtype not in _NP_DTYPES or model.encoder.weight.dtype != dtype:
            raise NotImplementedError(f"FastStream: models in float32 or float64 only, got {dtype}")
        self.model_config, self.options, self.batch_size = c, options, batch_size
        self.dtype, self._np_dtype = dtype, _NP_DTYPES[dtype]
        self.tile = TILE
        with torch.no_grad():
            self._build(model, rate)
        self.reset()

    # ---- the plan -----------------------------------------------------------------------------------
    def _build(self, model, rate) -> None:
        c, o = self.model_config, self.options
        H, blocks = c.d_model, list(model.blocks)
        pk = _Packer(self._np_dtype)
        g = np.zeros(K.G_SIZE, np.int64)
        lm = np.zeros((len(blocks), K.K_SIZE), np.int64)
        g[K.G_H], g[K.G_DOUT], g[K.G_NL] = H, c.d_output, len(blocks)
        g[K.G_PRENORM] = int(c.prenorm)
        if c.vocab_size:
            g[K.G_TOK], g[K.G_VOCAB], g[K.G_DIN] = 1, c.vocab_size, 1
            g[K.G_ENC_W] = pk.add(model.encoder.weight)
        else:
            enc = model.encoder
            if type(enc) is not nn.Linear:
                raise NotImplementedError("FastStream: the encoder was replaced; it runs nn.Linear only")
            g[K.G_DIN] = c.d_input
            g[K.G_ENC_W], g[K.G_ENC_B] = pk.add(enc.weight.detach().double().t()), pk.add(enc.bias)
        size, work, rows, self._layers = 0, H, 1, []
        for i, blk in enumerate(blocks):
            lay = lm[i]
            n_state, conv = _layer_plan(lay, blk.layer, rate, pk, H)
            lay[K.K_ST] = size
            size += n_state
            self._layers.append(conv)
            kind, s, t = _norm_affine(blk.norm, H)
            lay[K.K_NORM] = kind
            lay[K.K_NORM_W], lay[K.K_NORM_B] = pk.add(s), pk.add(t)
            lay[K.K_EPS] = pk.add(np.array([blk.norm.norm.eps]))
            work = max(work, lay[K.K_CH] * H, lay[K.K_HOUT])
            rows = max(rows, 2 * lay[K.K_R], lay[K.K_P1], lay[K.K_N] if lay[K.K_KIND] == K.DENSE else 1)
        # the last norm before the pool: its affine map (s, t) goes into the decoder
        last = model.final_norm if c.prenorm else blocks[-1].norm
        kind, s, t = _norm_affine(last, H)
        g[K.G_FIN] = K.FIN_LAYER if kind == K.NORM_LAYER else K.FIN_NONE
        g[K.G_FIN_EPS] = pk.add(np.array([last.norm.eps]))
        Wd, bd = model.decoder.weight.detach().double().cpu(), model.decoder.bias.detach().double().cpu()
        g[K.G_DEC_W] = pk.add((Wd * s[None]).t())
        g[K.G_DEC_B] = pk.add(bd + Wd @ t)
        self._s, self._t = s, t  # model features = s * (the kernel's features) + t
        g[K.G_POOL] = {"mean": K.POOL_MEAN, "last": K.POOL_LAST, "none": K.POOL_NONE}[c.pool]
        g[K.G_WIN] = o.pool_window or 0
        g[K.G_DECAY] = int(o.pool_decay is not None)
        g[K.G_RESET] = o.reset_every or 0
        g[K.G_SUM] = size
        g[K.G_BUF] = size + H
        g[K.G_WORK], g[K.G_ROWS] = work, rows
        self._size = size + H + (o.pool_window or 0) * H
        self._g, self._lm, self._F = g, lm, pk.array()
        self._gf = np.array([1.0 if o.pool_decay is None else float(o.pool_decay)], np.float64)
        self._no_tokens = np.zeros((1, 1), np.int64)
        self._no_inputs = np.zeros((1, 1, 1), self._np_dtype)
        # step's fast path: dtype -> (shape, other accepted shape, kernel shape, tokens?)
        B, din = self.batch_size, c.d_input
        if c.vocab_size:
            self._fast_step = {dt: ((B,), (B,), (B, 1), True) for dt in (torch.int64, np.dtype(np.int64))}
        else:
            shapes = ((B, din), (B,) if din == 1 else (B, din), (B, 1, din), False)
            self._fast_step = {self.dtype: shapes, np.dtype(self._np_dtype): shapes}

    # ---- stepping -----------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the zero state (of `SequenceModel.default_state` with this stream's options)."""
        self._state = np.zeros((self.batch_size, self._size), self._np_dtype)
        self._aux = np.zeros(3, np.float64)

    def _inputs(self, x, steps: bool, check_tokens: bool = False):
        """(xin (B, L, d_input), tokens (B, L)) from x: (B, L, d_input) / (B, L) if `steps`, else
        (B, d_input) / (B,); a clear error for anything else. Token ids are range-checked by the
        kernel (before it changes anything), here only with `check_tokens`."""
        c, B = self.model_config, self.batch_size
        what = "run" if steps else "step"
        if isinstance(x, torch.Tensor):
            if x.device.type != "cpu" or x.requires_grad:
                x = x.detach().cpu()
            floating, integer = x.is_floating_point(), not (x.is_floating_point() or x.is_complex())
            arr = x.numpy() if x.dtype != torch.bfloat16 else x.float().numpy()
        elif isinstance(x, np.ndarray):
            arr = x
            floating, integer = arr.dtype.kind == "f", arr.dtype.kind in "iu"
        else:
            raise TypeError(
                f"FastStream.{what}: expected a torch.Tensor or numpy array, got {type(x).__name__}"
            )
        lead = (B, arr.shape[1]) if steps and arr.ndim >= 2 else (B,)
        if c.vocab_size:
            if not integer or arr.ndim != len(lead) or arr.shape[0] != B:
                shape = "(B, L)" if steps else "(B,)"
                raise ValueError(
                    f"FastStream.{what}: token inputs must be integers of shape {shape} with B = {B}, got "
                    f"{arr.dtype} {tuple(arr.shape)}"
                )
            if check_tokens and arr.size and (int(arr.min()) < 0 or int(arr.max()) >= c.vocab_size):
                raise ValueError(
                    f"FastStream.{what}: token ids must lie in [0, {c.vocab_size}), got [{int(arr.min())}, "
                    f"{int(arr.max())}]"
                )
            tok = np.ascontiguousarray(arr, np.int64)
            return self._no_inputs, (tok if steps else tok[:, None])
        if not floating:
            raise TypeError(
                f"FastStream.{what}: expected float inputs, got {arr.dtype}; for tokens the model needs "
                "vocab_size"
            )
        din = c.d_input
        if arr.ndim == len(lead) and din == 1:
            arr = arr[..., None]
        if arr.ndim != len(lead) + 1 or arr.shape[0] != B or arr.shape[-1] != din:
            shape = f"(B, L, {din})" if steps else f"(B, {din})"
            raise ValueError(
                f"FastStream.{what}: expected inputs {shape} with B = {B}, got {tuple(arr.shape)}"
            )
        xin = np.ascontiguousarray(arr, self._np_dtype)
        return (xin if steps else xin[:, None]), self._no_tokens

    def _advance(self, xin, tok, L: int, x) -> np.ndarray:
        out = np.empty((self.batch_size, L, self.model_config.d_output), self._np_dtype)
        args = (self._g, self._lm, self._F, self._gf, self._aux, self._state, xin, tok, out)
        if L == 1:
            err = K.run_model(*args)
        else:
            err = K.run_model_chunked(*args, max(1, int(self.tile)))
        if err:
            self._inputs(x, L > 1 or x.ndim == 2, check_tokens=True)  # raises the error
        return out

    def step(self, x_t) -> torch.Tensor:
        """One step of every stream: x_t (B, d_input) or (B,) -> y_t (B, d_output), as `model.step`."""
        # the common case (a CPU tensor or array of the right dtype and shape) without the checks of
        # `_inputs`: at batch 1 they would cost several times the kernel call
        fast = self._fast_step
        if (type(x_t) is torch.Tensor or type(x_t) is np.ndarray) and x_t.dtype in fast:
            want = fast[x_t.dtype]
            if x_t.shape == want[0] or x_t.shape == want[1]:
                try:
                    arr = x_t.numpy() if type(x_t) is torch.Tensor else x_t
                except (RuntimeError, TypeError):  # on another device, or needing a gradient
                    arr = None
                if arr is not None and arr.flags.c_contiguous:
                    step_in = arr.reshape(want[2])
                    xin, tok = (self._no_inputs, step_in) if want[3] else (step_in, self._no_tokens)
                    out = self._advance(xin, tok, 1, x_t)
                    return torch.from_numpy(out.reshape(out.shape[0], out.shape[2]))
        xin, tok = self._inputs(x_t, steps=False)
        return torch.from_numpy(self._advance(xin, tok, 1, x_t)[:, 0])

    def run(self, x) -> torch.Tensor:
        """L steps in one call: x (B, L, d_input) or (B, L) -> y (B, L, d_output)."""
        xin, tok = self._inputs(x, steps=True)
        L = tok.shape[1] if self.model_config.vocab_size else xin.shape[1]
        if L == 0:
            return torch.empty(self.batch_size, 0, self.model_config.d_output, dtype=self.dtype)
        return torch.from_numpy(self._advance(xin, tok, L, x))

    # ---- conversion to and from the model's state ---------------------------------------------------
    def _written_slots(self, count: int, pos: int, W: int) -> np.ndarray:
        """The window slots that hold features: the `count` slots before `pos`, cyclically."""
        return (pos - 1 - np.arange(count)) % W

    def state(self) -> dict[str, Any]:
        """The stream's state as the model's state dict (what `model.step` would hold now)."""
        H, B, o = self.model_config.d_model, self.batch_size, self.options
        st = torch.from_numpy(self._state.copy()).to(self.dtype)
        count, pos, t = self._aux
        layers = []
        for lay, conv in zip(self._lm, self._layers, strict=True):
            off, n, P1 = int(lay[K.K_ST]), conv["n"], conv["P1"]
            if not conv["complex"]:  # (N, H) per stream
                layers.append(st[:, off : off + n * H].reshape(B, n, H).transpose(1, 2).contiguous())
                continue
            X = st[:, off : off + 2 * n * H].reshape(B, 2, n, H).transpose(2, 3)  # (B, 2, H, n)
            hist = st[:, off + 2 * n * H : off + (2 * n + P1) * H].reshape(B, P1, H).transpose(1, 2)
            x = torch.complex(
                torch.cat([X[:, 0], hist], -1), torch.cat([X[:, 1], torch.zeros_like(hist)], -1)
            )
            layers.append(x.to(_COMPLEX[self.dtype]))
        s, tt = self._s.to(self.dtype), self._t.to(self.dtype)
        S0 = int(self._g[K.G_SUM])
        decay = o.pool_decay is not None
        state: dict[str, Any] = {
            "layers": layers,
            "sum": (st[:, S0 : S0 + H] * s + float(count) * tt).contiguous(),
            "count": float(count) if decay else int(count),
        }
        if o.pool_window is not None:
            W = o.pool_window
            buf = st[:, S0 + H : S0 + H + W * H].reshape(B, W, H).transpose(1, 2)  # (B, H, W)
            window = torch.zeros(B, H, W, dtype=self.dtype)
            slots = torch.from_numpy(self._written_slots(int(count), int(pos), W))
            window[..., slots] = buf[..., slots] * s[:, None] + tt[:, None]
            state["window"], state["pos"] = window, int(pos)
        if o != type(o)():
            state["options"], state["t"] = o, int(t)
        return state

    def set_state(self, state: dict[str, Any]) -> None:
        """Continue from the model's state dict `state` (from `model.default_state`, `model.step` or
        `model.stream`, with this stream's batch size and options)."""
        from ..models.streaming import StreamOptions

        H, B, o = self.model_config.d_model, self.batch_size, self.options
        if not isinstance(state, dict) or not {"layers", "sum", "count"} <= set(state):
            raise ValueError(
                "FastStream.set_state: expected the model's state dict ('layers', 'sum', 'count'), got "
                f"{type(state).__name__}"
            )
        got = state.get("options", StreamOptions())
        if got != o:
            raise ValueError(f"FastStream.set_state: the state has the stream options {got}, this stream {o}")
        if len(state["layers"]) != len(self._layers):
            raise ValueError(
                f"FastStream.set_state: the state has {len(state['layers'])} layer states, the model "
                f"{len(self._layers)}"
            )
        new = np.zeros_like(self._state)
        for i, (lay, conv, x) in enumerate(zip(self._lm, self._layers, state["layers"], strict=True)):
            off, n, P1 = int(lay[K.K_ST]), conv["n"], conv["P1"]
            shape = (B, H, n + P1)
            if (
                not isinstance(x, torch.Tensor)
                or tuple(x.shape) != shape
                or x.is_complex() != conv["complex"]
            ):
                got_shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
                raise ValueError(
                    f"FastStream.set_state: layer {i}: expected a state {shape}, got {got_shape}"
                )
            x = x.detach().cpu()
            if not conv["complex"]:
                new[:, off : off + n * H] = x.double().transpose(1, 2).reshape(B, -1).numpy()
                continue
            x = x.to(torch.complex128).transpose(1, 2)  # (B, n + P1, H)
            new[:, off : off + n * H] = x[:, :n].real.reshape(B, -1).numpy()
            new[:, off + n * H : off + 2 * n * H] = x[:, :n].imag.reshape(B, -1).numpy()
            new[:, off + 2 * n * H : off + (2 * n + P1) * H] = x[:, n:].real.reshape(B, -1).numpy()
        total = state["sum"]
        if not isinstance(total, torch.Tensor) or tuple(total.shape) != (B, H):
            raise ValueError(f"FastStream.set_state: expected a pooled sum ({B}, {H}) for batch size {B}")
        count = float(state["count"])
        s, t = self._s, self._t
        inv = torch.where(s != 0, 1.0 / torch.where(s != 0, s, torch.ones_like(s)), torch.zeros_like(s))
        S0 = int(self._g[K.G_SUM])
        new[:, S0 : S0 + H] = ((total.detach().cpu().double() - count * t) * inv).numpy()
        pos = 0
        if o.pool_window is not None:
            W, pos = o.pool_window, int(state["pos"])
            window = state["window"].detach().cpu().double()  # (B, H, W)
            buf = torch.zeros(B, W, H, dtype=torch.float64)
            slots = torch.from_numpy(self._written_slots(int(count), pos, W))
            buf[:, slots] = ((window[..., slots] - t[:, None]) * inv[:, None]).transpose(1, 2)
            new[:, S0 + H : S0 + H + W * H] = buf.reshape(B, -1).numpy()
        self._state = new
        self._aux = np.array([count, float(pos), float(state.get("t", 0))], np.float64)
