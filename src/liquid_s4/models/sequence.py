"""Deep sequence models built from the SSM layers:

    encoder (linear or embedding) -> n_layers x [norm, SSM layer, dropout, residual] -> final norm
    -> pooling (mean / last / none, respecting lengths) -> decoder (or the two-sequence retrieval head)

with whole-model recurrent inference (`step`) and `save_pretrained` / `from_pretrained`
(config as JSON, weights as safetensors).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

from ..fileio import atomic_write, atomic_write_json
from ..modules import LSSL, S4, S4D, LiquidS4, SSMLayer, upgrade_state_dict
from ..modules.cache import TensorCache
from ..utils import has_forward_hooks, is_positive_int, lengths_mask
from .step_program import StepProgram
from .streaming import StreamOptions, init_pool, pool_chunk, pool_step

LAYERS = {"s4": S4, "s4d": S4D, "lssl": LSSL, "liquid_s4": LiquidS4}
NORMS = ("layer", "batch")
POOLS = ("mean", "last", "none")
HEADS = ("linear", "retrieval")
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"
FORMAT_VERSION = 1
DATA_FIELDS = ("d_input", "d_output", "vocab_size")  # the sizes a dataset decides (see ModelConfig)


@dataclass
class ModelConfig:
    """Everything needed to rebuild a `SequenceModel` (saved as config.json).

    d_input: features per step of real-valued inputs (ignored when vocab_size is set: token inputs).
    d_output: classes (classification), targets (regression) or per-step outputs (pool="none").
    layer: one of "s4", "s4d", "lssl", "liquid_s4"; layer_args: keyword arguments of that layer
    (d_state, init, disc, dt_min, dt_max, bidirectional, liquid_kernel, liquid_degree, ...).
    norm: "layer" or "batch"; prenorm: norm before (True) or after (False) each residual block.
    dropout: after each SSM layer; tie_dropout: one mask per sequence and channel, shared across length.
    pool: "mean", "last" or "none"; head: "linear", or "retrieval" for two-sequence inputs
    (the pooled vectors a, b are combined as [a, b, a*b, a-b] and passed through an MLP).

    In a training run the dataset decides d_input, d_output and vocab_size (`DATA_FIELDS`): the run's
    configuration leaves d_input and d_output None, and `with_data_sizes` returns the completed copy
    a model is built from. Building a `SequenceModel` from a config without them is an error.
    """

    d_input: int | None = 1
    d_output: int | None = 10
    vocab_size: int | None = None
    d_model: int = 128
    n_layers: int = 4
    layer: str = "liquid_s4"
    layer_args: dict[str, Any] = field(default_factory=dict)
    norm: str = "layer"
    prenorm: bool = True
    dropout: float = 0.0
    tie_dropout: bool = False
    pool: str = "mean"
    head: str = "linear"

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        """Raise a ValueError naming the first invalid entry (run at construction; again by
        `RunConfig.validate`, since the fields may be edited afterwards)."""

        def positive(name):
            v = getattr(self, name)
            if not is_positive_int(v):
                raise ValueError(f"ModelConfig: {name} must be a positive integer, got {v!r}")

        for name in ("d_input", "d_output", "vocab_size"):
            if getattr(self, name) is not None:
                positive(name)
        for name in ("d_model", "n_layers"):
            positive(name)
        for name, allowed in (("layer", tuple(LAYERS)), ("norm", NORMS), ("pool", POOLS), ("head", HEADS)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"ModelConfig: unknown {name} {getattr(self, name)!r}; expected one of {allowed}"
                )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"ModelConfig: dropout must be in [0, 1), got {self.dropout}")
        if self.head == "retrieval" and self.pool == "none":
            raise ValueError(
                "ModelConfig: the retrieval head compares pooled vectors; use pool='mean' or 'last'"
            )
        for key in ("d_model", "transposed"):
            if key in self.layer_args:
                raise ValueError(f"ModelConfig: layer_args may not set {key!r} (the model sets it)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def with_data_sizes(self, d_input: int, d_output: int, vocab_size: int | None = None) -> ModelConfig:
        """A copy with the sizes a dataset decides (`DATA_FIELDS`) filled in; the rest unchanged."""
        return dataclasses.replace(
            self, d_input=d_input, d_output=d_output, vocab_size=vocab_size, layer_args=dict(self.layer_args)
        )

    def check_complete(self) -> None:
        """Raise a ValueError if d_input or d_output is not set (a run's configuration before the
        dataset filled them in)."""
        unset = [name for name in ("d_input", "d_output") if getattr(self, name) is None]
        if unset:
            raise ValueError(
                f"ModelConfig: {' and '.join(unset)} not set; in a run's configuration they come from the "
                "dataset: build the model from config.with_data_sizes(d_input, d_output, vocab_size)"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelConfig:
        valid = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(d) - set(valid))
        if unknown:
            raise ValueError(f"ModelConfig: unknown keys {unknown}; valid keys: {valid}")
        return cls(**d)


class Norm(nn.Module):
    """LayerNorm or BatchNorm over the channels of (B, H, L) inputs (the model's channels-first
    layout) or of (B, H) steps. BatchNorm statistics use only the valid (unpadded) positions when a
    mask (B, L) is given, and padded positions come out zero."""

    def __init__(self, kind: str, d_model: int):
        super().__init__()
        self.kind = kind
        self.norm = nn.LayerNorm(d_model) if kind == "layer" else nn.BatchNorm1d(d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 2:
            return self.norm(x)
        if self.kind == "layer":  # per position, over the channels: LayerNorm wants them last
            return self.norm(x.transpose(1, 2)).transpose(1, 2).contiguous()
        if mask is None:
            return self.norm(x)  # BatchNorm1d takes (B, H, L) as it is
        return masked_batch_norm(self.norm, x, mask)


def masked_batch_norm(bn: nn.BatchNorm1d, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`bn` applied to the valid positions of x (B, H, L) only, zero at the others: the same result,
    gradients and running-statistics update as gathering the valid positions into (n_valid, H) and
    calling `bn` there, without leaving the channels-first layout (the gather and scatter are strided
    copies). mask (B, L) is True at valid positions."""
    m = mask[:, None, :].to(x.dtype)  # (B, 1, L)
    if not (bn.training or bn.running_mean is None):  # eval: the running statistics, position-wise
        return bn(x) * m
    n = mask.sum()
    if int(n) <= 1:
        raise ValueError(
            f"BatchNorm needs more than 1 valid position per channel when training, got {int(n)}; train with "
            "longer or more sequences per batch, or call model.eval()"
        )
    mean = (x * m).sum((0, 2)) / n  # (H,)
    xc = (x - mean[:, None]) * m
    var = (xc * xc).sum((0, 2)) / n  # biased, as BatchNorm normalizes with
    if bn.training and bn.track_running_stats:
        with torch.no_grad():
            bn.num_batches_tracked.add_(1)
            f = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
            bn.running_mean.lerp_(mean.to(bn.running_mean.dtype), f)
            bn.running_var.lerp_(
                (var * n / (n - 1)).to(bn.running_var.dtype), f
            )  # unbiased, as BatchNorm stores
    scale = torch.rsqrt(var + bn.eps)
    if not bn.affine:
        return xc * scale[:, None]
    return (xc * (scale * bn.weight)[:, None] + bn.bias[:, None]) * m


def batch_norm_affine(bn: nn.BatchNorm1d) -> tuple[torch.Tensor, torch.Tensor]:
    """(scale, shift) in float64 with bn(x) = scale * x + shift in eval mode: the map that the
    streaming paths fold an eval-mode BatchNorm into. bn must keep running statistics."""
    scale = 1.0 / torch.sqrt(bn.running_var.double() + bn.eps)
    shift = -bn.running_mean.double() * scale
    if bn.affine:
        scale, shift = scale * bn.weight.double(), shift * bn.weight.double() + bn.bias.double()
    return scale, shift


class ResidualBlock(nn.Module):
    """[norm] -> SSM layer -> dropout -> residual add -> [norm], on channels-first (B, H, L)
    (steps: (B, H)). Channels-first keeps every element-wise op of the layer contiguous."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        cls = LAYERS[config.layer]
        try:
            self.layer = cls(config.d_model, transposed=True, **config.layer_args)
        except TypeError as e:
            raise ValueError(
                f"ModelConfig: bad layer_args for layer {config.layer!r} ({cls.__name__}): {e}"
            ) from e
        self.norm = Norm(config.norm, config.d_model)
        self.prenorm, self.p, self.tie = config.prenorm, config.dropout, config.tie_dropout

    def _dropout(self, z: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0:
            return z
        if not self.tie:
            return nn.functional.dropout(z, self.p, True)
        keep = torch.bernoulli(torch.full((*z.shape[:2], 1), 1 - self.p, dtype=z.dtype, device=z.device))
        return z * keep / (1 - self.p)  # one mask per sequence and channel, shared across length

    def forward(
        self, x: torch.Tensor, lengths=None, mask=None, rate: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        z = self.norm(x, mask) if self.prenorm else x
        z, _ = self.layer(z, lengths=lengths, rate=rate)
        x = x + self._dropout(z)
        return x if self.prenorm else self.norm(x, mask)

    def stream(self, x: torch.Tensor, state: torch.Tensor, rate=None):
        """`forward` on a chunk x (B, H, L) that continues from the layer state `state`: (x, next state)."""
        z = self.norm(x) if self.prenorm else x
        z, state = self.layer(z, state=state, rate=rate)
        x = x + self._dropout(z)
        return (x if self.prenorm else self.norm(x)), state

    def step(self, x_t: torch.Tensor, state: torch.Tensor, rate=None):
        z = self.norm(x_t) if self.prenorm else x_t
        z, state = self.layer.step(z, state, rate=rate)
        x_t = x_t + z
        return (x_t if self.prenorm else self.norm(x_t)), state


class SequenceModel(nn.Module):
    """A deep SSM sequence model (see `ModelConfig` for the options).

    forward(x, lengths=None, x2=None, lengths2=None, rate=None):
      x: (B, L, d_input) float (or (B, L) when d_input == 1), or (B, L) integer tokens with vocab_size.
      lengths: (B,) valid lengths of right-padded sequences. x2/lengths2: the second sequence of the
      retrieval head. rate: run every SSM layer at step size rate*dt (e.g. 2.0 for audio at half the
      training sampling rate); or a floating (B, L) tensor of per-step multipliers of dt for irregularly
      sampled sequences (rate[b, k]: the time since the previous sample in units of the nominal step),
      finite and > 0 at every valid step (padded steps beyond `lengths` are not checked and, where
      they are not a positive number, are passed to the layers as 1). Only S4D layers with
      liquid_kernel="scan" accept a per-step rate (the convolution kernels need one step size for
      the whole sequence and raise a ValueError); the retrieval head takes only a number.
      Returns (B, d_output) for pool "mean"/"last", (B, L, d_output) for "none".
    step(x_t, state, rate=None) -> (y_t, state): recurrent inference, one step for the whole model; y_t
      is what forward would return for the sequence seen so far (start from `default_state(B)`). rate:
      a number, or a (B,) tensor of this step's multipliers of dt (the column rate[:, t] of forward's
      per-step rate; liquid_kernel="scan" layers only). In inference (no gradients, eval mode) it runs
      through a cached `StepProgram` (`use_step_program`), the same step with the per-call work done
      ahead; otherwise layer by layer (the reference).
    stream(x, state=None, rate=None) -> (y, state): a chunk of any length at a time; y (B, Lc, d_output)
      holds what `step` returns at each step, for every pool (see `stream`). Continuous streams:
      `default_state(B, pool_window=, pool_decay=, reset_every=)`. Other runtimes (a compiled per-sample
      path, ONNX export) are in `liquid_s4.deploy`.
    """

    def __init__(self, config: ModelConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = ModelConfig(**kwargs)
        elif kwargs:
            raise TypeError("SequenceModel: pass either a ModelConfig or keyword arguments, not both")
        config.check_complete()
        self.config = c = config
        self.encoder = (
            nn.Embedding(c.vocab_size, c.d_model) if c.vocab_size else nn.Linear(c.d_input, c.d_model)
        )
        self.blocks = nn.ModuleList(ResidualBlock(c) for _ in range(c.n_layers))
        self.final_norm = Norm(c.norm, c.d_model) if c.prenorm else nn.Identity()
        if c.head == "retrieval":
            self.decoder = nn.Sequential(
                nn.Linear(4 * c.d_model, c.d_model), nn.GELU(), nn.Linear(c.d_model, c.d_output)
            )
        else:
            self.decoder = nn.Linear(c.d_model, c.d_output)

    # ---- convolution mode --------------------------------------------------------------------
    def _check_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Token ids (B, L), or float inputs (B, L, d_input) ((B, L) when d_input == 1) in the
        encoder's dtype; a clear error otherwise."""
        c = self.config
        if c.vocab_size:
            if x.dim() != 2 or x.is_floating_point() or x.is_complex():
                raise ValueError(
                    f"SequenceModel: token inputs must be an integer tensor (B, L), got {x.dtype} "
                    f"{tuple(x.shape)}"
                )
            if x.numel() and (int(x.min()) < 0 or int(x.max()) >= c.vocab_size):
                raise ValueError(
                    f"SequenceModel: token ids must lie in [0, {c.vocab_size}), got [{int(x.min())}, "
                    f"{int(x.max())}]"
                )
            return x
        if not x.is_floating_point():
            raise TypeError(
                f"SequenceModel: expected float inputs (B, L, {c.d_input}), got {x.dtype}; for tokens set "
                "vocab_size"
            )
        if x.dim() == 2 and c.d_input == 1:
            x = x[..., None]
        if x.dim() != 3 or x.shape[-1] != c.d_input:
            raise ValueError(f"SequenceModel: expected inputs (B, L, {c.d_input}), got {tuple(x.shape)}")
        return x.to(self.encoder.weight.dtype)

    def _encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(self._check_inputs(x))  # (B, L, d_model)

    def _encode_channels_first(self, x: torch.Tensor) -> torch.Tensor:
        """`_encode` in the blocks' layout (B, d_model, L). The plain linear encoder is one batched
        product W x^T + b, which writes channels-first directly."""
        x, enc = self._check_inputs(x), self.encoder
        if self.config.vocab_size or type(enc) is not nn.Linear or has_forward_hooks(enc):
            return enc(x).transpose(1, 2).contiguous()
        return torch.baddbmm(enc.bias[:, None], enc.weight.expand(x.shape[0], -1, -1), x.transpose(1, 2))

    def _features(
        self, x: torch.Tensor, lengths=None, rate: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Backbone features before pooling, channels-first (B, d_model, L), zero at padded positions."""
        h = self._encode_channels_first(x)  # (B, H, L)
        B, _, L = h.shape
        mask = None
        if lengths is not None:
            lengths = torch.as_tensor(lengths, device=h.device)
            if lengths.shape != (B,) or lengths.is_floating_point():
                raise ValueError(
                    f"SequenceModel: lengths must be an integer tensor of shape ({B},), got "
                    f"{tuple(lengths.shape)}"
                )
            mask = lengths_mask(lengths, L)  # (B, L)
            h = h * mask[:, None]
        if isinstance(rate, torch.Tensor) and rate.dim() > 0:
            rate = _per_step_rate(rate, B, L, mask, h.device)
        for block in self.blocks:
            h = block(h, lengths=lengths, mask=mask, rate=rate)
        h = self.final_norm(h, mask) if isinstance(self.final_norm, Norm) else h
        return h if mask is None else h * mask[:, None]

    def features(
        self, x: torch.Tensor, lengths=None, rate: float | torch.Tensor | None = None
    ) -> torch.Tensor:
        """Backbone features before pooling: (B, L, d_model), zero at padded positions (the model
        computes them channels-first; this returns a contiguous copy in the (B, L, H) layout). `rate`
        as in `forward`."""
        return self._features(x, lengths, rate).transpose(1, 2).contiguous()

    def _pool(self, h: torch.Tensor, lengths) -> torch.Tensor:
        """h: channels-first features (B, H, L) -> (B, H), or (B, L, H) for pool 'none'."""
        B, _, L = h.shape
        if self.config.pool == "none":
            return h.transpose(1, 2)
        n = (
            torch.full((B,), L, device=h.device)
            if lengths is None
            else torch.as_tensor(lengths, device=h.device)
        )
        if self.config.pool == "mean":
            # a product with ones, not sum(2): its backward is a contiguous (B, H, L) gradient instead
            # of an expanded one, which the final norm's backward reads much more slowly
            return (h @ h.new_ones(L)) / n.clamp(min=1)[:, None].to(h.dtype)
        return h[torch.arange(B, device=h.device), :, (n - 1).clamp(min=0)]  # last valid step

    def forward(
        self,
        x: torch.Tensor,
        lengths=None,
        x2: torch.Tensor | None = None,
        lengths2=None,
        rate: float | torch.Tensor | None = None,
    ) -> torch.Tensor:
        if x2 is not None and isinstance(rate, torch.Tensor) and rate.dim() > 0:
            raise ValueError(
                "SequenceModel: a per-step rate (a (B, L) tensor) describes the steps of x only; with a "
                "second sequence x2 (the retrieval head) pass rate as a number"
            )
        a = self._pool(self._features(x, lengths, rate), lengths)
        if self.config.head == "retrieval":
            if x2 is None:
                raise ValueError("SequenceModel: the retrieval head needs a second sequence x2")
            b = self._pool(self._features(x2, lengths2, rate), lengths2)
            a = torch.cat([a, b, a * b, a - b], -1)
        elif x2 is not None:
            raise ValueError("SequenceModel: x2 is only used by the retrieval head")
        return self.decoder(a)

    # ---- recurrent mode ----------------------------------------------------------------------
    def default_state(
        self,
        batch_size: int,
        pool_window: int | None = None,
        pool_decay: float | None = None,
        reset_every: int | None = None,
    ) -> dict[str, Any]:
        """The zero state of `step` and `stream` for `batch_size` streams: the per-layer states and the
        running sum and count of mean pooling.

        Continuous streams (see `liquid_s4.models.streaming`): pool_window W (steps) pools the last W
        features only; pool_decay lam in (0, 1] pools with weights lam^age; reset_every R (steps)
        returns the whole state to zero after every R steps, so every output is that of the model on
        the inputs since the last reset (a model trained on clips of R steps, run on a long stream).
        The options travel in the state (`options`)."""
        if self.config.head == "retrieval":
            raise RuntimeError(
                "SequenceModel: the retrieval head compares two whole sequences; it has no step mode"
            )
        options = StreamOptions(pool_window, pool_decay, reset_every)
        options.check(self.config.pool)
        p = self.decoder.weight
        state = {"layers": [blk.layer.default_state(batch_size) for blk in self.blocks]}
        init_pool(
            state, options, torch.zeros(batch_size, self.config.d_model, dtype=p.dtype, device=p.device)
        )
        if options != StreamOptions():
            state["options"], state["t"] = options, 0
        return state

    def _check_stream_state(self, state: dict[str, Any], batch: int) -> StreamOptions:
        """The state's options; a ValueError unless `state` is a state of this model for `batch` streams."""
        if (
            not isinstance(state, dict)
            or not {"layers", "sum", "count"} <= set(state)
            or len(state["layers"]) != len(self.blocks)
        ):
            raise ValueError(
                "SequenceModel: expected a state from model.default_state(batch_size) or a previous step or "
                f"stream call (a dict with 'layers' ({len(self.blocks)} layer states), 'sum', 'count'), got "
                f"{type(state).__name__}" + (f" with keys {sorted(state)}" if isinstance(state, dict) else "")
            )
        if not isinstance(state["sum"], torch.Tensor) or tuple(state["sum"].shape) != (
            batch,
            self.config.d_model,
        ):
            got = tuple(state["sum"].shape) if isinstance(state["sum"], torch.Tensor) else state["sum"]
            raise ValueError(
                f"SequenceModel: the state is for another batch size: its pooled sum is {got}, the inputs "
                f"have {batch} sequences; start from default_state({batch})"
            )
        return state.get("options", StreamOptions())

    def _check_step_mode(self, name: str) -> None:
        if self.training and self.config.norm == "batch":
            raise RuntimeError(
                f"SequenceModel.{name}: BatchNorm needs eval mode for stepping; call model.eval()"
            )

    def _restart(self, state: dict[str, Any], options: StreamOptions, batch: int) -> dict[str, Any]:
        """`state`, or the zero state when `reset_every` steps have passed since the last reset."""
        if options.reset_every is None or state["t"] < options.reset_every:
            return state
        return self.default_state(batch, options.pool_window, options.pool_decay, options.reset_every)

    def step(self, x_t: torch.Tensor, state: dict[str, Any], rate=None):
        """x_t: (B, d_input) (or (B,) tokens / scalars); rate: None, a number, or a (B,) tensor (this
        step's time gap, see the class docstring). Returns (y_t, state). With a pool window the state's
        ring buffer is updated in place (the state passed in is consumed)."""
        self._check_step_mode("step")
        if not isinstance(x_t, torch.Tensor) or x_t.dim() == 0:
            got = tuple(x_t.shape) if isinstance(x_t, torch.Tensor) else type(x_t).__name__
            raise TypeError(
                "SequenceModel.step: expected one step of inputs as a tensor (B, d_input), or (B,) for "
                f"scalar or token inputs, got {got}"
            )
        options = self._check_stream_state(state, x_t.shape[0])
        state = self._restart(state, options, x_t.shape[0])
        h = self._encode(x_t[:, None])[:, 0]  # (B, d_model)
        program = self._step_program(rate, h)
        if program is not None:  # inference: the same step with the per-call work done ahead
            h, layers = program.features(h, state["layers"], rate)
        else:  # the reference, layer by layer
            layers = []
            for block, s in zip(self.blocks, state["layers"], strict=True):
                h, s = block.step(h, s, rate)
                layers.append(s)
            h = self.final_norm(h) if isinstance(self.final_norm, Norm) else h
        new = {**state, "layers": layers}
        if "t" in state:
            new["t"] = state["t"] + 1
        pooled = pool_step(new, options, h)
        return self.decoder(pooled if self.config.pool == "mean" else h), new

    # `step` runs through a `StepProgram` in inference (set False to always take the reference path)
    use_step_program: bool = True

    def _step_program(self, rate, h: torch.Tensor) -> StepProgram | None:
        """The cached `StepProgram` for this step, or None when the step must take the reference path:
        gradients enabled, a per-step rate tensor, autocast, a dtype other than float32/float64, a part
        in training mode or with forward hooks, or a part the program does not cover."""
        if (
            not self.use_step_program
            or torch.is_grad_enabled()
            or isinstance(rate, torch.Tensor)
            or h.dtype not in (torch.float32, torch.float64)
            or torch.is_autocast_enabled(h.device.type)
        ):
            return None
        if rate is not None:
            rate = self.blocks[0].layer._check_rate(rate)
        # without a rate each layer steps at its own (`SSMLayer.rate`): part of the key
        rates = rate if rate is not None else tuple(b._modules["layer"]._rate for b in self.blocks)
        key = (rates, h.dtype, h.device, torch.is_inference_mode_enabled())

        def build():
            try:
                return StepProgram(self, rate, h.dtype)
            except NotImplementedError:
                return None

        cache = self.__dict__.setdefault("_program_cache", TensorCache())
        program = cache.get(key, lambda: StepProgram.tensors(self), build)
        return program if program is not None and program.usable() else None

    def __getstate__(self):
        """Copies and pickles leave the cached step program behind (it is rebuilt on use)."""
        state = super().__getstate__()
        state.pop("_program_cache", None)
        return state

    def stream(self, x: torch.Tensor, state: dict[str, Any] | None = None, rate=None):
        """Run a chunk of a stream: x (B, Lc, d_input) (or (B, Lc) tokens / scalars), any Lc >= 1,
        continuing from `state` (None: the zero state, `default_state(B)`). Returns (y, state) with y
        (B, Lc, d_output) for every pool: y[:, k] is what `step` returns at that step (pool "none": the
        step's output; "mean": the prediction from the features pooled so far; "last": from the
        current step's features), and the state `step` would hold after the chunk (the two modes can
        be mixed on one stream).

        The chunk runs in convolution mode with state passing (one FFT convolution per layer and
        chunk, the liquid terms included), so long chunks cost little more per step than a full
        forward. rate: a number, or a (B, Lc) tensor of per-step multipliers of dt (liquid_kernel="scan"
        layers only). Gradients flow through a chunk and its state when the model is in training mode
        (truncated backpropagation through time); in eval mode it is inference.
        """
        self._check_step_mode("stream")
        x = self._check_inputs(x)
        B, L = x.shape[:2]
        if state is None:
            state = self.default_state(B)
        options = self._check_stream_state(state, B)
        if isinstance(rate, torch.Tensor) and rate.dim() > 0:
            rate = _per_step_rate(rate, B, L, None, x.device)
        outputs, start = [], 0
        while start < L:  # split at the resets
            state = self._restart(state, options, B)
            end = L if options.reset_every is None else min(L, start + options.reset_every - state["t"])
            r = rate[:, start:end] if isinstance(rate, torch.Tensor) and rate.dim() > 0 else rate
            y, state = self._stream_segment(x[:, start:end], state, options, r)
            outputs.append(y)
            start = end
        return (outputs[0] if len(outputs) == 1 else torch.cat(outputs, 1)), state

    def _stream_segment(self, x, state, options: StreamOptions, rate):
        """`stream` on a part of a chunk without a reset inside."""
        h = self._encode_channels_first(x)  # (B, H, L)
        layers = []
        for block, s in zip(self.blocks, state["layers"], strict=True):
            h, s = block.stream(h, s, rate)
            layers.append(s)
        h = self.final_norm(h) if isinstance(self.final_norm, Norm) else h
        new = {**state, "layers": layers}
        if "t" in state:
            new["t"] = state["t"] + x.shape[1]
        pooled = pool_chunk(new, options, h)
        return self.decoder((pooled if self.config.pool == "mean" else h).transpose(1, 2)), new

    def export_onnx(self, path: str | os.PathLike, chunk_size: int, **kwargs) -> None:
        """Write this model (in eval mode) as an ONNX streaming graph: the input chunk and the states
        in, the per-step outputs and the next states out, in real arithmetic. See
        `liquid_s4.deploy.onnx.export_onnx` for the options (batch_size, rate, opset, metadata,
        overwrite) and `liquid_s4.deploy.onnx.OnnxStream` to run it. Needs the `deploy` extra."""
        from ..deploy.onnx import export_onnx

        export_onnx(self, path, chunk_size, **kwargs)

    # ---- checkpoints -------------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write config.json and model.safetensors into `directory`, each atomically. The safetensors
        header holds checksums that `from_pretrained` verifies: `weights_sha256` (`weights_sha256()` of
        the tensors) and `config_sha256` (sha256 of the model config as canonical JSON)."""
        from safetensors.torch import save_file

        from .. import __version__

        os.makedirs(directory, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "liquid_s4_version": __version__,
            "model": self.config.to_dict(),
        }
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        sums = {"weights_sha256": weights_sha256(tensors), "config_sha256": config_sha256(meta["model"])}
        atomic_write(
            os.path.join(directory, WEIGHTS_NAME), lambda path: save_file(tensors, path, metadata=sums)
        )
        atomic_write_json(os.path.join(directory, CONFIG_NAME), meta)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, map_location: str | torch.device = "cpu", **overrides
    ) -> SequenceModel:
        """Rebuild a model saved by `save_pretrained`, in the dtype it was saved in. `overrides` replace
        config entries (e.g. dropout); the weights must still fit, else a ValueError names the
        mismatching tensors. The checksums in the safetensors header are verified (a ValueError when the
        weights or config.json changed after saving); files saved without them (liquid_s4 before the
        checksums, or written by other tools) load unchecked."""
        from safetensors import SafetensorError, safe_open
        from safetensors.torch import load_file

        cfg_path, w_path = os.path.join(directory, CONFIG_NAME), os.path.join(directory, WEIGHTS_NAME)
        for path in (cfg_path, w_path):
            if not os.path.isfile(path):
                raise FileNotFoundError(
                    f"{path} not found: a pretrained directory holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                    "(written by save_pretrained)"
                )
        try:
            with open(cfg_path) as f:
                meta = json.load(f)
            model_cfg = meta["model"]
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise ValueError(f"{cfg_path} is not a liquid_s4 model config ({e})") from e
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(
                f"{cfg_path} has format version {meta['format_version']}; this liquid_s4 reads <= "
                f"{FORMAT_VERSION}: upgrade liquid_s4"
            )
        try:
            weights = load_file(w_path, device="cpu")
            with safe_open(w_path, "pt") as f:
                sums = f.metadata() or {}
        except (SafetensorError, OSError) as e:
            raise ValueError(
                f"{w_path} is not a readable safetensors file ({e}); it may be truncated or corrupt"
            ) from e
        _check_sums(sums, weights, model_cfg, w_path, cfg_path)
        model = cls(ModelConfig.from_dict({**model_cfg, **overrides}))
        dtype = _saved_dtype(weights)
        if dtype is not None:
            model = model.to(dtype)
        model.load_weights(weights, source=str(w_path))
        return model.to(map_location)

    def load_weights(self, weights: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
        """load_state_dict with an error that lists missing, unexpected and mis-shaped tensors. Weights
        saved by earlier versions are converted first (see `upgrade_state_dict`)."""
        weights = dict(weights)
        for name, m in self.named_modules():
            if isinstance(m, SSMLayer):
                upgrade_state_dict(weights, f"{name}." if name else "")
        own = self.state_dict()
        missing = sorted(set(own) - set(weights))
        unexpected = sorted(set(weights) - set(own))
        shapes = [
            f"{k}: checkpoint {tuple(weights[k].shape)} vs model {tuple(own[k].shape)}"
            for k in own
            if k in weights and weights[k].shape != own[k].shape
        ]
        if missing or unexpected or shapes:
            parts = [
                f"missing {missing[:8]}{' ...' if len(missing) > 8 else ''}" if missing else "",
                f"unexpected {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}" if unexpected else "",
                f"shape mismatch {shapes[:8]}" if shapes else "",
            ]
            raise ValueError(
                f"{source} does not fit this model config ({'; '.join(p for p in parts if p)}). Build the "
                "model with the config the checkpoint was saved with (from_pretrained does this)."
            )
        self.load_state_dict(weights)


def weights_sha256(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over the tensors in name order: each name, dtype, shape and the raw bytes."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}:{t.dtype}{tuple(tensors[name].shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().data)
    return h.hexdigest()


def config_sha256(model_config: dict[str, Any]) -> str:
    """sha256 of a model config as canonical JSON (sorted keys; floats written exactly)."""
    return hashlib.sha256(json.dumps(model_config, sort_keys=True).encode()).hexdigest()


def _check_sums(
    sums: dict[str, str],
    weights: dict[str, torch.Tensor],
    model_cfg: dict[str, Any],
    w_path: str,
    cfg_path: str,
) -> None:
    """Compare the checksums save_pretrained stored in the safetensors header (absent: not checked)."""
    if "weights_sha256" in sums and sums["weights_sha256"] != weights_sha256(weights):
        raise ValueError(
            f"{w_path} is corrupt: its tensors do not match the sha256 stored when it was saved (bytes were "
            "changed after saving). Save the model again from its training checkpoint, or use another copy"
        )
    if "config_sha256" in sums and sums["config_sha256"] != config_sha256(model_cfg):
        raise ValueError(
            f"{cfg_path} does not match the model config saved with the weights in {w_path} (the file was "
            "changed or damaged after saving); restore it, or save the model again. To change settings such "
            "as dropout when loading, pass them to from_pretrained(directory, key=value) instead"
        )


def _per_step_rate(rate: torch.Tensor, B: int, L: int, mask: torch.Tensor | None, device) -> torch.Tensor:
    """A per-step rate checked for the inputs (B, L): floating, finite and > 0 at every valid step (mask
    (B, L) True, or every step without one); padded steps that are not a finite number > 0 become 1."""
    if tuple(rate.shape) != (B, L) or not rate.is_floating_point():
        raise ValueError(
            f"SequenceModel: a per-step rate must be a floating tensor of shape (B, L) = ({B}, {L}) like "
            f"the inputs (the time gap before each step, in units of the nominal step), got {rate.dtype} "
            f"{tuple(rate.shape)}"
        )
    rate = rate.to(device)
    good = torch.isfinite(rate) & (rate > 0)
    bad = ~good if mask is None else mask & ~good
    if bool(bad.any()):
        b, k = (int(i) for i in bad.nonzero()[0])
        raise ValueError(
            "SequenceModel: a per-step rate must be finite and > 0 at every valid step (it multiplies the "
            f"step size dt), got {rate[b, k].item()!r} at sequence {b}, step {k}"
        )
    if mask is not None and not bool(good.all()):
        rate = torch.where(good, rate, torch.ones((), dtype=rate.dtype, device=device))
    return rate


def _saved_dtype(weights: dict[str, torch.Tensor]) -> torch.dtype | None:
    """The dtype a saved model was used in: that of its floating-point weights, where float16 or
    bfloat16 models keep their SSM parameters in float32 (see SSMLayer); None if it is ambiguous."""
    dtypes = {t.dtype for t in weights.values() if t.is_floating_point()}
    half = dtypes & {torch.float16, torch.bfloat16}
    if len(dtypes) == 1:
        return dtypes.pop()
    if len(half) == 1 and dtypes - half == {torch.float32}:
        return half.pop()
    return None
