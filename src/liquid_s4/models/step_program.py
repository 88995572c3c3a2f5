"""The whole model's inference step with the per-call work taken out: `SequenceModel.step`'s fast path.

At batch 1 a step of a deep model is a few hundred tensor operations on vectors of d_model entries,
and their launch costs, not their arithmetic, set the speed. `StepProgram` is built once from a model
in inference (no gradients, eval mode) and keeps, for every block, what a step needs, computed ahead:

- the norm: an eval-mode BatchNorm as one scale and shift (LayerNorm is called as it is);
- the SSM layer, when its state is small (S4/Liquid-S4 with N <= 16, LSSL with N <= 16, small S4D):
  the whole step of the layer (the state update, the liquid inputs of its history, the read-out C,
  the D skip and the PB read-outs) as one real matrix per channel acting on

      z = [the state in real coordinates (with the history), u, v^(2) .. v^(P)]
      [next state, y] = M z                              (M: (H, R, K), applied as one product-and-sum)

  with v^(p) the liquid products of `step_correlations`; the next state is a view of the product;
- other layers (large diagonal states, the liquid scan): the layer's own fast step from its set-up
  (`SSMConvolution.step_fast`), without the per-call argument checks and cache lookups of
  `SSMLayer.step`; the liquid scan layers call `SSMLayer.step`;
- the output block, the residual, the final norm, pooling and the decoder as functional calls.

The program is kept in a `TensorCache` over every tensor it was computed from (the SSM tensors, D, the
norms), so every change of a parameter rebuilds it; the output projections, encoder and decoder are
read live. `SequenceModel.step` uses it only when the call is inference (no gradient mode, the model
and all its parts in eval mode, no autocast, no forward hooks, a number or no rate, float32 or
float64); the layer-by-layer path stays the reference it is tested against
(tests/models/test_step_program.py).
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn

from ..ops.liquid import step_correlations
from ..ops.recurrence import real_view
from ..utils import has_forward_hooks

FOLD_MAX_ENTRIES = 512  # the largest R x K matrix per channel folded (above: the layer's own step)


def _fold_layer(layer, rate: float, dtype: torch.dtype):
    """(Mt (H, K, R) in `dtype`, S_full, R) for the folded step of `layer` (see the module docstring),
    computed in float64."""
    lay = copy.deepcopy(layer).double()
    conv, ssm = lay.conv, lay.ssm
    sys = lay.discrete(rate)
    H, C, P1 = lay.d_model, lay.channels, conv.history_size
    n = ssm.state_size
    cplx = ssm.complex_state
    S_ssm = 2 * n if cplx else n
    S_full = S_ssm + (2 * P1 if cplx else P1)
    K = S_full + 1 + P1
    R = S_full + C
    R += R % 2  # an even row count, so the next state is a complex view of the product
    device = conv.D.device
    M = torch.zeros(H, R, K, dtype=torch.float64, device=device)
    kb, pb = conv.liquid_kernel == "kb", conv.liquid_kernel == "pb"
    D = conv.D.detach().double()  # (C, H)
    state_dtype = torch.complex128 if cplx else torch.float64

    def probe(x, u, v):
        """(next SSM state in real coordinates (H, S_ssm), y (H, C)) for one stream: x (H, n), u (H,),
        v (P1, H)."""
        extra = (sys.liquid_B, v[None]) if kb else None
        x1 = sys.step(x[None], u[None], extra)
        y = sys.output(x1)  # (1, C, H)
        if pb:
            y = y + (sys.liquid_coef * v[:, None]).sum(0)[None]
        y = y + D * u
        xr = torch.view_as_real(x1[0]).flatten(-2) if cplx else x1[0]
        return xr, y[0].t()

    zero_x = torch.zeros(H, n, dtype=state_dtype, device=device)
    zero_u = torch.zeros(H, dtype=torch.float64, device=device)
    zero_v = torch.zeros(P1, H, dtype=torch.float64, device=device)
    for j in range(S_ssm):  # columns of the SSM state
        x = zero_x.clone()
        x[:, j // 2 if cplx else j] = (1j if j % 2 else 1) if cplx else 1
        xr, y = probe(x, zero_u, zero_v)
        M[:, :S_ssm, j], M[:, S_full : S_full + C, j] = xr, y
    xr, y = probe(zero_x, zero_u + 1, zero_v)  # the input u
    M[:, :S_ssm, S_full], M[:, S_full : S_full + C, S_full] = xr, y
    for p in range(P1):  # the liquid products
        v = zero_v.clone()
        v[p] = 1
        xr, y = probe(zero_x, zero_u, v)
        M[:, :S_ssm, S_full + 1 + p], M[:, S_full : S_full + C, S_full + 1 + p] = xr, y
    # the history (real parts of the last P - 1 entries, oldest first): shifted, the input appended
    step = 2 if cplx else 1
    for i in range(P1):
        row = S_ssm + step * i
        col = S_ssm + step * (i + 1) if i + 1 < P1 else S_full  # the next older entry, or u
        M[:, row, col] = 1
    return M.transpose(1, 2).contiguous().to(dtype), S_full, R


class _NormStep:
    """A norm for (B, H) steps: an eval BatchNorm as x * scale + shift (computed in float64), a
    LayerNorm as it is."""

    __slots__ = ("ln", "scale", "shift")

    def __init__(self, norm: nn.Module, dtype: torch.dtype):
        self.ln = norm if isinstance(norm, nn.LayerNorm) else None
        self.scale = self.shift = None
        if self.ln is None:  # (x - mean) / sqrt(var + eps) * w + b
            if norm.running_var is None:
                raise NotImplementedError("BatchNorm without running statistics")
            from .sequence import batch_norm_affine  # sequence imports this module

            scale, shift = batch_norm_affine(norm)
            self.scale, self.shift = scale.to(dtype), shift.to(dtype)

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        if self.ln is not None:
            ln = self.ln
            return nn.functional.layer_norm(h, ln.normalized_shape, ln.weight, ln.bias, ln.eps)
        return torch.addcmul(self.shift, h, self.scale)


def norm_tensors(norm: nn.Module) -> list[torch.Tensor]:
    """The tensors a norm's step is computed from (parameters and running statistics)."""
    names = ("weight", "bias", "running_mean", "running_var")
    return [t for t in (getattr(norm, k, None) for k in names) if t is not None]


class _Block:
    """What one block's step needs (see `StepProgram`)."""

    __slots__ = ("norm", "prenorm", "kind", "Mt", "S_full", "R", "setup", "layer", "out")

    def __init__(self, block, rate: float, dtype: torch.dtype):
        self.norm = _NormStep(block.norm.norm, dtype)
        self.prenorm = block.prenorm
        layer = block.layer
        self.layer, self.out = layer, layer.output
        conv, ssm = layer.conv, layer.ssm
        self.Mt = self.setup = None
        self.S_full = self.R = 0
        if conv.liquid_kernel == "scan":
            self.kind = "layer"
            return
        n = ssm.state_size
        S = (2 * n + 2 * conv.history_size) if ssm.complex_state else n + conv.history_size
        if (S + layer.channels + 1) * (S + 1 + conv.history_size) <= FOLD_MAX_ENTRIES:
            self.kind = "fold"
            self.Mt, self.S_full, self.R = _fold_layer(layer, rate, dtype)
        else:
            self.kind = "fast"
            self.setup = layer._step_setup(rate)
            if self.setup.recurrence is None:  # no fast recurrence (LSSL): the layer's step
                self.kind, self.setup = "layer", None

    def layer_step(self, u: torch.Tensor, state: torch.Tensor, rate):
        """(y (B, C H) before the output block, next state)."""
        if self.kind == "fold":
            conv = self.layer.conv
            sr = real_view(state) if state.is_complex() else state  # (B, H, S_full)
            parts = [sr, u[..., None]]
            if conv.history_size:
                hist = sr[..., self.S_full - 2 * conv.history_size :: 2]  # real parts, oldest first
                v = step_correlations(u, hist, conv.liquid_degree, conv.liquid_squash)  # (B, P - 1, H)
                parts.append(v.transpose(1, 2))
            z = torch.cat(parts, -1)  # (B, H, K)
            out = (z[..., None] * self.Mt).sum(-2)  # (B, H, R)
            nxt = out[..., : self.S_full]
            if state.is_complex():
                nxt = torch.view_as_complex(nxt.unflatten(-1, (-1, 2)))
            y = out[..., self.S_full : self.S_full + self.layer.channels]  # (B, H, C)
            y = y[..., 0] if self.layer.channels == 1 else y.transpose(1, 2).flatten(1)
            return y, nxt
        if self.kind == "fast":
            rec = self.setup.recurrence
            batched = rec.advance_from_batch is not None and u.shape[0] >= rec.advance_from_batch
            return self.layer.conv.step_fast(self.setup, u, state, batched)
        return None

    def step(self, h: torch.Tensor, state: torch.Tensor, rate):
        z = self.norm(h) if self.prenorm else h
        res = self.layer_step(z, state, rate)
        if res is None:  # the layer's own step (output block included)
            z, state = self.layer.step(z, state, rate=rate)
        else:
            y, state = res
            z = self.out.step(y, h.dtype)
        h = h + z
        return (h if self.prenorm else self.norm(h)), state


class StepProgram:
    """The inference step of a `SequenceModel` for one rate (None: each layer's own), built once; see
    the module docstring. `tensors(model)` lists what it is computed from (its cache key)."""

    def __init__(self, model, rate, dtype: torch.dtype):
        with torch.no_grad():
            self.blocks = [_Block(b, b.layer.rate if rate is None else rate, dtype) for b in model.blocks]
            fn = model.final_norm
            self.final = _NormStep(fn.norm, dtype) if hasattr(fn, "norm") else None
        self.modules = fast_path_modules(model)

    @staticmethod
    def tensors(model) -> tuple[torch.Tensor, ...]:
        """The tensors a program is computed from: every layer's SSM tensors and D (its
        `cached_tensors`), and the norms' parameters and running statistics. Read from the modules'
        own dictionaries: this runs on every step."""
        out = []
        norms = [b._modules["norm"]._modules["norm"] for b in model._modules["blocks"]._modules.values()]
        for b in model._modules["blocks"]._modules.values():
            parts = b._modules["layer"]._modules
            ssm = parts["ssm"]
            out += (*ssm._parameters.values(), *ssm._buffers.values(), parts["conv"]._parameters["D"])
        final = model._modules["final_norm"]._modules.get("norm")
        for norm in norms + ([] if final is None else [final]):
            out += (t for t in (*norm._parameters.values(), *norm._buffers.values()) if t is not None)
        return tuple(out)

    def usable(self) -> bool:
        """Whether no module the program replaces is in training mode or has forward hooks."""
        return not has_forward_hooks(*self.modules) and not any(m.training for m in self.modules)

    def features(self, h: torch.Tensor, layers: list, rate) -> tuple[torch.Tensor, list]:
        """The final features (B, H) of one step from the encoded input h (B, H), and the next layer
        states."""
        new = []
        for blk, s in zip(self.blocks, layers, strict=True):
            h, s = blk.step(h, s, rate)
            new.append(s)
        if self.final is not None:
            h = self.final(h)
        return h, new


def fast_path_modules(model) -> list[nn.Module]:
    """The modules whose calls the program replaces (their hooks and training flags send a step to the
    reference path)."""
    mods = [model, model.encoder, model.decoder, model.final_norm]
    for b in model.blocks:
        mods += [b, b.norm, b.norm.norm, b.layer, b.layer.output, b.layer.output.projection]
        mods += list(b.layer.output.projection.children())
    return mods
