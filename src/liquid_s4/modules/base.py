"""Shared interface of the SSM layers: input checks, FFT convolution with state passing,
recurrent stepping with cached setup, and the S4 output block."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from ..ops.fftconv import anticausal_kernel, bidirectional_kernel, fftconv_sum
from ..ops.liquid import SQUASHES, anticorrelations, correlations, delayed, last_inputs, product_skip
from ..ops.recurrence import DiagonalRecurrence, _real
from ..ops.state import DiscreteSSM
from ..utils import has_forward_hooks, is_positive_int, lengths_mask
from .snapshot import TensorSnapshot

_NO_CONTEXT = contextlib.nullcontext()


def _activation_step(act: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """`act(y)` for one step's small (B, H) tensor. PyTorch sends exact GELU of a contiguous float
    CPU tensor to oneDNN, whose per-call setup (~10-30 us) dominates at this size, and its own
    vectorized kernel otherwise. Called on a non-contiguous view of y (the (2, B*H/2) reshape,
    transposed) it runs that kernel: the same function, `nn.functional.gelu(y)` itself, ~3x faster
    at batch 1. Nothing process-wide is touched (other threads' oneDNN use is unaffected). Other
    activations, and sizes without such a view, are called as they are."""
    if (
        type(act) is nn.GELU
        and y.device.type == "cpu"
        and y.is_contiguous()
        and y.numel() % 2 == 0
        and y.numel() >= 4
    ):
        return nn.functional.gelu(y.view(2, -1).t(), approximate=act.approximate).t().reshape(y.shape)
    return act(y)


A_REAL_BOUND = 1e-4  # every mode decays: Re A <= -A_REAL_BOUND for any parameter value


def real_part(gap: torch.Tensor) -> torch.Tensor:
    """Re A = -(1e-4 + exp(gap)) from the parameter `log_A_real_gap`: smooth and below -1e-4 for any
    gap. d Re A / d gap = -(distance to the bound) is never zero (a clamp at the bound gave exactly
    zero and froze every mode that reached it); it shrinks as a mode approaches the bound, as for
    the usual log parametrization of -Re A at 0."""
    return -(A_REAL_BOUND + torch.exp(gap))


def real_part_parameter(re: torch.Tensor) -> torch.Tensor:
    """The initial `log_A_real_gap` (float64) for real parts `re`: log(-re - 1e-4), so that
    `real_part` gives back `re` up to rounding wherever re <= -2e-4 (LegS, all S4D inits). Modes on
    or near the imaginary axis (Re = 0: every mode of LegT, LagT and FouT) start at Re A = -2e-4."""
    return torch.log((-re.double() - A_REAL_BOUND).clamp(min=A_REAL_BOUND))


def upgrade_A_real(state_dict: dict, prefix: str) -> None:
    """Convert the `log_A_real` of layers saved before `log_A_real_gap` (Re A = -max(exp(x), 1e-4))
    in place: gap = log(exp(x) - 1e-4), with modes that sat on the bound (or within 1e-7 of it) put
    at Re A = -(1e-4 + 1e-7). The converted layer computes what the saved one did, to ~1e-7 in Re A."""
    old, new = prefix + "log_A_real", prefix + "log_A_real_gap"
    if old in state_dict and new not in state_dict:
        x = state_dict.pop(old)
        gap = torch.log((torch.exp(x.double()) - A_REAL_BOUND).clamp(min=1e-7))
        state_dict[new] = gap.to(x.dtype)


def upgrade_state_dict(state_dict: dict, prefix: str) -> None:
    """Convert, in place, the entries of an SSM layer saved by an earlier version of the library
    (under `prefix`) to the current layout; entries already current are left as they are."""
    upgrade_A_real(state_dict, prefix)


ACTIVATIONS = {
    None: nn.Identity,
    "identity": nn.Identity,
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}
POSTACTS = (None, "linear", "glu")
LIQUID_KERNELS = (None, "pb", "kb")


class SSMLayer(nn.Module):
    """Base class of S4D, S4 and LSSL (see those for the arguments).

    Subclasses define the SSM parameters (`_init_ssm`), the convolution kernels (`_kernels`) and
    the discrete system used for stepping and state passing (`discrete`).

    Liquid terms (S4 and S4D; see `liquid_s4.modules.liquid_s4` for the definitions):
    liquid_kernel None, "pb" or "kb"; liquid_degree P >= 2; liquid_squash None or "tanh".
    """

    inits: tuple[str, ...] = ()
    discs: tuple[str, ...] = ()
    even_state: bool = True  # conjugate-pair storage needs an even d_state
    supports_liquid: bool = True

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        l_max: int | None = None,
        channels: int = 1,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        init: str = "legs",
        disc: str = "bilinear",
        bidirectional: bool = False,
        dropout: float = 0.0,
        activation: str | None = "gelu",
        postact: str | None = "glu",
        transposed: bool = False,
        lr: float | None = 1e-3,
        freeze: tuple[str, ...] | list[str] = (),
        liquid_kernel: str | None = None,
        liquid_degree: int = 2,
        liquid_squash: str | None = None,
    ):
        super().__init__()
        name = type(self).__name__
        for arg, val in (("d_model", d_model), ("d_state", d_state), ("channels", channels)):
            if not is_positive_int(val):
                raise ValueError(f"{name}: {arg} must be a positive integer, got {val!r}")
        if self.even_state and d_state % 2:
            raise ValueError(
                f"{name}: d_state must be even (modes are stored as N/2 conjugate pairs), got {d_state}; "
                f"use {d_state + 1} or {d_state - 1}"
            )
        if l_max is not None and (not isinstance(l_max, int) or l_max < 1):
            raise ValueError(f"{name}: l_max must be a positive integer or None (any length), got {l_max!r}")
        if not (0 < dt_min <= dt_max):
            raise ValueError(f"{name}: need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        if init not in self.inits:
            raise ValueError(f"{name}: unknown init {init!r}; expected one of {self.inits}")
        if disc not in self.discs:
            raise ValueError(f"{name}: unsupported disc {disc!r}; expected one of {self.discs}")
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"{name}: unknown activation {activation!r}; expected one of {list(ACTIVATIONS)}"
            )
        if postact not in POSTACTS:
            raise ValueError(f"{name}: unknown postact {postact!r}; expected one of {POSTACTS}")
        if postact is None and channels != 1:
            raise ValueError(
                f"{name}: channels={channels} needs an output projection; set postact='linear' or 'glu'"
            )
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be in [0, 1), got {dropout}")
        if liquid_kernel not in LIQUID_KERNELS:
            raise ValueError(
                f"{name}: unknown liquid_kernel {liquid_kernel!r}; expected one of {LIQUID_KERNELS}"
            )
        if liquid_kernel is not None and not self.supports_liquid:
            raise ValueError(
                f"{name}: liquid kernels are defined for S4 and S4D (state in diagonal coordinates); use one of those"
            )
        if not isinstance(liquid_degree, int) or isinstance(liquid_degree, bool) or liquid_degree < 2:
            raise ValueError(
                f"{name}: liquid_degree must be an integer >= 2 (the highest input product), got {liquid_degree!r}"
            )
        if liquid_squash not in SQUASHES:
            raise ValueError(f"{name}: unknown liquid_squash {liquid_squash!r}; expected one of {SQUASHES}")
        self.liquid_kernel, self.liquid_degree, self.liquid_squash = (
            liquid_kernel,
            liquid_degree,
            liquid_squash,
        )
        self.d_model, self.d_state, self.l_max, self.channels = d_model, d_state, l_max, channels
        self.dt_min, self.dt_max, self.init, self.disc = dt_min, dt_max, init, disc
        self.bidirectional, self.transposed, self.lr = bidirectional, transposed, lr
        self.freeze = tuple(freeze)
        self._rate = 1.0
        self._step_cache = None
        self._kernel_cache = None

        self._init_ssm()
        unknown = set(self.freeze) - set(self.ssm_parameter_names)
        if unknown:
            raise ValueError(
                f"{name}: cannot freeze {sorted(unknown)}; freezable: {self.ssm_parameter_names}"
            )

        self.D = nn.Parameter(torch.randn(channels, d_model))
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if postact is None:
            self.output_linear = nn.Identity()
        else:
            out = 2 * d_model if postact == "glu" else d_model
            self.output_linear = nn.Sequential(
                nn.Linear(channels * d_model, out), nn.GLU(-1) if postact == "glu" else nn.Identity()
            )
        # the plain output block, for `_output_step` (a tuple: not registered as submodules)
        self._out_plain = (
            (self.output_linear, self.output_linear[0], postact == "glu") if postact else (None, None, False)
        )

    def clear_cache(self) -> None:
        """Free the cached step setup and inference kernels (rebuilt on the next use). The kernel
        cache holds one (channels, H, L) kernel per layer after an evaluation pass."""
        self._step_cache = self._kernel_cache = None

    def __getstate__(self):
        """Copies and pickles leave the step and kernel caches behind (they are rebuilt on use)."""
        state = super().__getstate__()
        return {**state, "_step_cache": None, "_kernel_cache": None}

    def __setstate__(self, state):
        if "rate" in state:  # pickled before `rate` was checked
            state["_rate"] = state.pop("rate")
        super().__setstate__(state)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Also loads weights saved before the parameter `log_A_real` became `log_A_real_gap`
        (converted, see `upgrade_A_real`)."""
        upgrade_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- rate --------------------------------------------------------------------------------
    @property
    def rate(self) -> float:
        """Default `rate` of forward and step (a multiplier of every dt): a finite number > 0."""
        return self._rate

    @rate.setter
    def rate(self, value) -> None:
        self._rate = self._check_rate(value)

    def _check_rate(self, rate) -> float:
        """rate as a float, or a ValueError unless it is a finite number > 0."""
        try:
            r = float(rate)
        except (TypeError, ValueError, RuntimeError):
            r = None
        if r is None or isinstance(rate, bool) or not (math.isfinite(r) and r > 0):
            raise ValueError(
                f"{type(self).__name__}: rate must be a finite number > 0 (it multiplies the step size dt), got {rate!r}"
            )
        return r

    # ---- precision ---------------------------------------------------------------------------
    def _apply(self, fn, *args, **kwargs):
        """Module conversions (`.to`, `.half()`, `.bfloat16()`, `.cuda()`, ...) apply to the layer as
        usual, except that the SSM tensors (every own parameter and buffer but D) are never stored
        below float32: converting the layer to float16 or bfloat16 keeps them in float32 (moved to the
        new device), and the SSM part (kernels, FFT convolution, state) runs in float32 while D, the
        output block and the outputs take the new dtype. Half-precision complex FFTs and discretization
        would lose the SSM's long memory, and are not implemented on CPU."""
        before = {
            n: t.detach() for n, t in self._ssm_tensors() if t.is_floating_point()
        }  # the values, not the objects
        out = super()._apply(fn, *args, **kwargs)
        for name, old in before.items():
            t = getattr(self, name)
            if t.dtype not in (torch.float16, torch.bfloat16):
                continue
            keep = old.to(device=t.device, dtype=torch.float32)
            if name in self._buffers:
                self._buffers[name] = keep
                continue
            t.data = keep
            if t.grad is not None:
                t.grad = t.grad.to(torch.float32)
        return out

    def _ssm_tensors(self):
        """(name, tensor) of the layer's own parameters and buffers except D."""
        own = (*self._parameters.items(), *self._buffers.items())
        return [(n, t) for n, t in own if n != "D" and t is not None]

    # ---- parameters ------------------------------------------------------------------------
    ssm_parameter_names: tuple[str, ...] = ()

    def _register(self, name: str, value: torch.Tensor, group: str, ssm_lr: bool = True) -> None:
        """Register value as a parameter (or a buffer if `group` is frozen) with optimizer hints.

        group is the user-facing name ("A", "B", "C", "dt", "P") used by `freeze`."""
        if group in self.freeze:
            self.register_buffer(name, value)
            return
        p = nn.Parameter(value)
        if ssm_lr and self.lr is not None:
            p._optim = {"lr": self.lr, "weight_decay": 0.0}
        self.register_parameter(name, p)

    def _init_log_dt(self) -> torch.Tensor:
        u = torch.rand(self.d_model, dtype=torch.float64)
        return (math.log(self.dt_min) + u * (math.log(self.dt_max) - math.log(self.dt_min))).float()

    def _dt(self, rate: float) -> torch.Tensor:
        return torch.exp(self.log_dt) * rate  # (H,)

    @property
    def _dtype(self) -> torch.dtype:
        """The precision of the SSM part (float32 or float64; see `_apply`)."""
        return self.log_dt.dtype

    # ---- subclass API ------------------------------------------------------------------------
    def _init_ssm(self) -> None:
        raise NotImplementedError

    def _kernels(self, L: int, rate: float = 1.0, powers: tuple[int, ...] = (), L_powers: int = 0):
        """(K, K_p): K (n_c, H, L) the kernel C A_bar^l B_bar, and for each p in `powers` the kernel
        C A_bar^l B_bar^p for l < L_powers, stacked (len(powers), n_c, H, L_powers) (None if no powers).
        n_c = channels * (2 if bidirectional else 1)."""
        raise NotImplementedError

    def kernel(self, L: int, rate: float = 1.0) -> torch.Tensor:
        """Convolution kernel (channels * (2 if bidirectional else 1), H, L)."""
        return self._kernels(L, rate)[0]

    def _own_tensors(self) -> tuple:
        return (*self._parameters.values(), *self._buffers.values())

    def _tensor_key(self) -> TensorSnapshot:
        """A snapshot of the layer's own tensors (not the output layers'): which tensors, their storage,
        layout and version counter, and a bitwise copy of their values. Keys the step and kernel caches
        (`_same_tensors`), so that no way of changing a value (in place, through `.data` or a numpy
        view, `load_state_dict`, an EMA update, moving or converting the layer) leaves a stale entry."""
        return TensorSnapshot(self._own_tensors())

    def _same_tensors(self, key: TensorSnapshot) -> bool:
        """Whether `key` (from `_tensor_key`) still describes the layer's tensors, values included."""
        return key.matches(self._own_tensors())

    def _needs_graph(self) -> bool:
        """Whether a gradient can reach the layer's parameters from this call."""
        return torch.is_grad_enabled() and any(p.requires_grad for p in self._parameters.values())

    def _cached_kernels(self, L: int, rate: float, powers: tuple[int, ...] = (), L_powers: int = 0):
        """`_kernels` for forward. When no gradient can reach the parameters (evaluation under
        torch.no_grad() or inference_mode, or frozen layers) the last result is kept and reused while
        the arguments and every SSM tensor are unchanged: evaluating a test set computes each layer's
        kernel (S4's Cauchy sums, S4D's Vandermonde product) once. Training calls never use or fill
        the cache. One entry per layer (the kernels of the last length), freed when it is replaced."""
        if self._needs_graph():
            return self._kernels(L, rate, powers, L_powers)
        args = (L, rate, powers, L_powers, torch.is_inference_mode_enabled())
        cache = self._kernel_cache
        if cache is not None and cache[0] == args and self._same_tensors(cache[1]):
            return cache[2]
        self._kernel_cache = None  # free the old kernels before computing new ones
        out = self._kernels(L, rate, powers, L_powers)
        self._kernel_cache = (
            args,
            self._tensor_key(),
            out,
        )  # keyed after the call: S4 may rescale C~ on a longer L
        return out

    def discrete(self, rate: float = 1.0) -> DiscreteSSM:
        """The discrete causal system (forward direction) for stepping and state passing."""
        raise NotImplementedError

    # ---- input checks ------------------------------------------------------------------------
    def _check_input(self, u: torch.Tensor) -> torch.Tensor:
        name = type(self).__name__
        layout = "(B, H, L)" if self.transposed else "(B, L, H)"
        if not isinstance(u, torch.Tensor):
            raise TypeError(f"{name}: expected a torch.Tensor of shape {layout}, got {type(u).__name__}")
        if not u.is_floating_point():
            raise TypeError(
                f"{name}: expected a floating-point input, got dtype {u.dtype}; convert it with u.float()"
            )
        if u.dim() != 3:
            raise ValueError(
                f"{name}: expected a 3-d input {layout} (transposed={self.transposed}), got shape {tuple(u.shape)}"
            )
        H = u.shape[1] if self.transposed else u.shape[2]
        if H != self.d_model:
            hint = (
                " (is `transposed` set right?)"
                if (u.shape[2] if self.transposed else u.shape[1]) == self.d_model
                else ""
            )
            raise ValueError(
                f"{name}: expected {self.d_model} channels in input of layout {layout}, got shape {tuple(u.shape)}{hint}"
            )
        # (B, L, H) inputs are copied to (B, H, L) rows once: the FFT reads them as rows anyway, and the
        # liquid terms read them again (strided passes cost 2-4x more than contiguous ones)
        u = u if self.transposed else u.transpose(1, 2).contiguous()
        L = u.shape[-1]
        if L < 1:
            raise ValueError(f"{name}: empty sequence (L = 0)")
        if self.l_max is not None and L > self.l_max:
            raise ValueError(
                f"{name}: sequence length {L} exceeds l_max={self.l_max}; build the layer with a larger l_max or l_max=None"
            )
        return u.to(self._dtype)  # (B, H, L)

    def _state_size(self) -> int:
        n = self.d_state // 2 if self.even_state else self.d_state
        return n + (self.liquid_degree - 1 if self.liquid_kernel is not None else 0)

    def _check_state(self, state: torch.Tensor, batch: int) -> None:
        shape = (batch, self.d_model, self._state_size())
        if (
            not isinstance(state, torch.Tensor)
            or tuple(state.shape) != shape
            or state.is_complex() != self.even_state
        ):
            got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
            kind = "complex" if self.even_state else "real"
            raise ValueError(
                f"{type(self).__name__}: expected a {kind} state of shape {shape} (from default_state or a previous call), got {got}"
            )

    def _check_lengths(self, lengths, B: int, L: int) -> torch.Tensor:
        lengths = torch.as_tensor(lengths)
        if lengths.shape != (B,) or lengths.is_floating_point() or lengths.is_complex():
            raise ValueError(
                f"{type(self).__name__}: lengths must be an integer tensor of shape ({B},), "
                f"got {lengths.dtype} {tuple(lengths.shape)}"
            )
        if bool((lengths < 0).any()) or bool((lengths > L).any()):
            raise ValueError(f"{type(self).__name__}: lengths must lie in [0, {L}], got {lengths.tolist()}")
        return lengths.to(torch.long)

    # ---- convolution mode --------------------------------------------------------------------
    def forward(
        self, u: torch.Tensor, state: torch.Tensor | None = None, lengths=None, rate: float | None = None
    ):
        """u: (B, L, H), or (B, H, L) if transposed. Returns (y, next_state), y shaped like u.

        state: continue from a previous chunk (start a stream with `default_state`); next_state is
        returned only when a state is passed, else None. lengths: (B,) valid lengths of
        right-padded sequences; padded inputs are ignored, outputs there are zero, and
        next_state is each sequence's state after its own last input.
        rate: multiplies dt (rate=2 runs a layer trained at 16 kHz on 8 kHz input); a finite
        number > 0 (else a ValueError), default `self.rate`.

        Non-finite inputs: the convolution runs through FFTs over the whole sequence, so one NaN or
        inf input makes every output of that sequence NaN, earlier steps included (the FFT mixes
        all positions of its channel, the output projection all channels); the next state is NaN
        in that channel. Other sequences of the batch are unaffected. `step` affects only the
        current and later steps. An empty batch (B = 0) gives empty outputs.
        """
        rate = self._rate if rate is None else self._check_rate(rate)
        x = self._check_input(u)  # (B, H, L)
        B, H, L = x.shape
        mask = None
        if lengths is not None:
            lengths = self._check_lengths(lengths, B, L)
            mask = lengths_mask(lengths.to(x.device), L)  # (B, L)
            x = x * mask[:, None]
        hist = None
        if state is not None:
            if self.bidirectional:
                raise ValueError(
                    f"{type(self).__name__}: state passing needs a causal layer; this one is bidirectional"
                )
            self._check_state(state, B)
            state, hist = self._split_state(state)
        # the SSM part (kernels, FFTs, complex math, state) always runs in the layer's own precision,
        # also under torch.autocast; the output projection below follows autocast
        with torch.autocast(device_type=x.device.type, enabled=False):
            v = skip = (
                None  # KB correlation signals (for the next state); input-dependent skip of the PB kernel
            )
            if self.liquid_kernel is None:
                k = self._cached_kernels(L, rate)[0]  # (C or 2C, H, L)
                y = fftconv_sum([x], [self._main_kernel(self._with_skip(k))])  # (B, C, H, L), D u included
            else:
                y, v, skip = self._liquid_conv(x, hist, L, rate)
            next_state = None
            if state is not None:
                sys = self._system(rate)
                y = y + sys.state_output(state, L)
                extra = (sys.liquid_B, v) if v is not None else None
                next_state = sys.next_state(x, state, lengths, extra)
                if self.liquid_kernel is not None:
                    next_state = self._join_state(
                        next_state, last_inputs(x, self.liquid_degree - 1, hist, lengths)
                    )
        y = self._output(y, x, skip)  # (B, L, H), or (B, H, L) if transposed
        if mask is not None:
            y = y * (mask[:, None] if self.transposed else mask[..., None])
        return y, next_state

    def _main_kernel(self, k: torch.Tensor) -> torch.Tensor:
        return bidirectional_kernel(*k.chunk(2, dim=0)) if self.bidirectional else k

    def _with_skip(self, k: torch.Tensor) -> torch.Tensor:
        """k (n_c, H, L) with D added at lag 0 of the forward kernels: conv(u, k) + D u as one
        convolution, so the skip costs no (B, C, H, L) pass forward or backward."""
        return k + nn.functional.pad(
            self.D.to(k.dtype)[..., None], (0, k.shape[-1] - 1, 0, 0, 0, k.shape[0] - self.channels)
        )

    def _liquid_conv(self, x: torch.Tensor, hist: torch.Tensor | None, L: int, rate: float):
        """Convolution (with the D skip) plus liquid terms. x (B, H, L) -> (y (B, C, H, L), v, g): v the
        causal correlation signals [(B, H, L)] * (P-1) when the next state needs them (KB), else None;
        g (B, C, H, L) an input-dependent skip carrying the causal PB terms (y + g u), or None."""
        P, C, kb = self.liquid_degree, self.channels, self.liquid_kernel == "kb"
        k, kp = self._cached_kernels(
            L, rate, tuple(range(2, P + 1)), L if kb else 1
        )  # (n_c, H, L), (P-1, n_c, H, .)
        w = anticorrelations(x, P, self.liquid_squash) if self.bidirectional else None
        if kb:  # every liquid signal gets its own kernel; all are summed before one inverse FFT
            v = correlations(x, P, hist, self.liquid_squash)
            kf = kp[:, :C] if not self.bidirectional else nn.functional.pad(kp[:, :C], (0, L))
            signals, kernels = [x, *v], [self._main_kernel(self._with_skip(k)), *kf.unbind(0)]
            if self.bidirectional:
                signals += w
                kernels += anticausal_kernel(kp[:, C:]).unbind(0)
            return fftconv_sum(signals, kernels), v, None
        y = fftconv_sum([x], [self._main_kernel(self._with_skip(k))])
        coef = kp[..., 0, None]  # (P-1, n_c, H, 1): C B_bar^p
        if self.bidirectional:  # anti-causal: C_b B_bar^p times the product of the p following inputs
            for p in range(P - 1):
                y = y + coef[p, C:] * delayed(w[p], -1)[:, None]
        if self.liquid_squash is None and P == 2:  # y + c_2 u_k u_{k-1}, fused (ops.liquid.product_skip)
            return product_skip(y, x, coef[0, :C, :, 0], hist), None, None
        if self.liquid_squash is None:
            # sum_p c_p u_k u_{k-1}..u_{k-p+1} = u_k g_k with g_k = u_{k-1}(c_2 + u_{k-2}(c_3 + ...)) (Horner),
            # so the causal PB terms are one more skip: y + g u, no (B, P-1, H, L) signals needed
            c = coef[:, :C]  # c[p - 2] = c_p
            g = delayed(x, P - 1, hist)[:, None] * c[P - 2]
            for i in range(P - 2, 0, -1):
                g = delayed(x, i, hist)[:, None] * (c[i - 1] + g)
            return y, None, g
        for p, v_p in enumerate(correlations(x, P, hist, self.liquid_squash)):
            y = y + coef[p, :C] * v_p[:, None]
        return y, None, None

    def _output(self, y: torch.Tensor, u: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        """[y + skip u,] activation, dropout, position-wise linear (+GLU); y already holds the D skip
        (see `_with_skip`). y (B, C, H, L), u (B, H, L) -> (B, L, H), or (B, H, L) if transposed."""
        if skip is not None:
            y = torch.addcmul(y, skip, u[:, None])
        y = self.dropout(self.activation(y.flatten(1, 2)))  # (B, C*H, L)
        if y.dtype != self.D.dtype:  # a float16/bfloat16 layer (float32 SSM part, see `_apply`)
            y = y.to(self.D.dtype)
        if not self.transposed:
            return self.output_linear(y.transpose(1, 2))
        return self._output_channels_first(y)

    def _output_channels_first(self, y: torch.Tensor) -> torch.Tensor:
        """`output_linear` for transposed layers, (B, C*H, L) -> (B, H, L) without leaving the
        channels-first layout: the layer's own Linear is one batched product W y + b (a transposed
        round trip would make every element-wise op around it strided, several times slower on CPU).
        A replaced or hooked output block is called as a module on (B, L, C*H)."""
        plain = self._plain_output()
        if plain is None:
            return self.output_linear(y.transpose(1, 2)).transpose(1, 2)
        lin, glu = plain
        z = torch.baddbmm(lin.bias[:, None], lin.weight.expand(y.shape[0], -1, -1), y)  # (B, 2H or H, L)
        return nn.functional.glu(z, 1) if glu else z

    def _plain_output(self):
        """(Linear, glu) of the layer's own output block, to apply functionally; None when there is
        none (postact=None), or it was replaced or has forward hooks (then it is called as a module)."""
        seq, lin, glu = self._out_plain
        if seq is None or self._modules["output_linear"] is not seq or has_forward_hooks(seq, lin):
            return None
        return lin, glu

    # ---- recurrent mode ----------------------------------------------------------------------
    def default_state(self, batch_size: int) -> torch.Tensor:
        """Zero state (batch_size, H, N') where N' = N/2 complex entries (the stored half of conjugate
        pairs) for S4/S4D, N real entries for LSSL. Liquid layers append the last P-1 inputs (as real
        parts): N' = N/2 + P - 1."""
        dtype = (
            {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(self._dtype)
            if self.even_state
            else self._dtype
        )
        return torch.zeros(batch_size, self.d_model, self._state_size(), dtype=dtype, device=self.D.device)

    def _split_state(self, state: torch.Tensor):
        """(SSM state, input history (B, H, P-1) real, oldest first, or None)."""
        if self.liquid_kernel is None:
            return state, None
        n = self.d_state // 2
        return state[..., :n], state[..., n:].real

    def _join_state(self, x: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, hist.to(x.dtype)], -1)

    def _system(self, rate: float) -> DiscreteSSM:
        """`discrete(rate)` with the liquid input vectors B_bar^p (liquid_B) and read-out
        coefficients C B_bar^p (liquid_coef, (P-1, channels, H)) attached."""
        sys = self.discrete(rate)
        if self.liquid_kernel is not None:
            sys.liquid_B = sys.powers_of_B(self.liquid_degree)
            sys.liquid_coef = sys.output(sys._stored(sys.liquid_B))
        return sys

    def _recurrence(self, sys: DiscreteSSM, rate: float):
        """The fast inference step for `sys` (see `liquid_s4.ops.recurrence`), or None to step with
        the reference `sys.step`. Diagonal conjugate-pair systems get `DiagonalRecurrence`."""
        if not (sys.diagonal and sys.conj):
            return None
        extra = sys._stored(sys.liquid_B) if self.liquid_kernel == "kb" else None
        return DiagonalRecurrence(sys.dA, sys.dB, sys.C, extra)

    def _stepper(self, rate: float):
        """(discrete system, fast recurrence or None, D flattened (C*H,), PB read-out coefficients, the
        SSM dtype) for stepping without gradients, recomputed whenever the layer's own tensors change
        in any way (cached otherwise, see `_tensor_key`). The PB coefficients are a list of P-1
        flattened (C*H,) tensors C B_bar^p, or None."""
        cache = self._step_cache
        if cache is None or cache[0][0] != rate or not self._same_tensors(cache[0][1]):
            key = (rate, self._tensor_key())
            with torch.no_grad():
                sys = self._system(rate)
                pb = [c.reshape(-1) for c in sys.liquid_coef] if self.liquid_kernel == "pb" else None
                dtype = self._dtype
                self._step_cache = (
                    key,
                    (sys, self._recurrence(sys, rate), self.D.reshape(-1).to(dtype), pb, dtype),
                )
        return self._step_cache[1]

    def step(self, u_t: torch.Tensor, state: torch.Tensor, rate: float | None = None):
        """One recurrent step. u_t: (B, H), state: (B, H, N') (see `default_state`).
        Returns (y_t (B, H), next_state).

        Without gradients (torch.no_grad(), or frozen SSM parameters) S4D and S4 run a fast O(N)
        step (`liquid_s4.ops.recurrence`) from a cached setup; otherwise the differentiable
        reference `DiscreteSSM.step` is used. Both give the same result to rounding. From batch
        `advance_from_batch` of the recurrence on (S4D: 16, S4: 32), next_state is a (B, H, N') view
        of an (H, B, N') buffer, the layout the batched step reads fastest: pass it back as it is
        (`.contiguous()` gives the usual layout)."""
        name = type(self).__name__
        if self.bidirectional:
            raise RuntimeError(f"{name}: a bidirectional layer sees the future and cannot run step by step")
        if not isinstance(u_t, torch.Tensor) or u_t.dim() != 2 or u_t.shape[1] != self.d_model:
            got = tuple(u_t.shape) if isinstance(u_t, torch.Tensor) else type(u_t).__name__
            raise ValueError(f"{name}.step: expected input of shape (B, {self.d_model}), got {got}")
        if not u_t.is_floating_point():
            raise TypeError(f"{name}.step: expected a floating-point input, got dtype {u_t.dtype}")
        self._check_state(state, u_t.shape[0])
        D = self.D
        rate = self._rate if rate is None else self._check_rate(rate)
        # the SSM part runs in the SSM tensors' precision, also under autocast (as in forward)
        with (
            torch.autocast(device_type=u_t.device.type, enabled=False)
            if torch.is_autocast_enabled(u_t.device.type)
            else _NO_CONTEXT
        ):
            if self._needs_graph():
                sys, rec, dtype = self._system(rate), None, self._dtype  # differentiable, not cached
            else:
                sys, rec, D_flat, pb, dtype = self._stepper(rate)
            if u_t.dtype != dtype:
                u_t = u_t.to(dtype)
            if rec is None:
                y, state = self._step_ref(sys, u_t, state)
                y = torch.addcmul(y, D.to(dtype), u_t[:, None]).flatten(1)  # (B, C*H): the D skip
            else:
                y, state = self._step_fast(rec, pb, u_t, state)
                y.addcmul_(D_flat, u_t if self.channels == 1 else u_t.repeat(1, self.channels))
        # then as `_output` for one step
        y = _activation_step(self.activation, y)
        if self.training and type(self.dropout) is not nn.Identity:
            y = self.dropout(y)
        if y.dtype != D.dtype:  # a float16/bfloat16 layer: its output block and outputs
            y = y.to(D.dtype)
        return self._output_step(y), state

    def _output_step(self, y: torch.Tensor) -> torch.Tensor:
        """`output_linear(y)` for one step. The layer's own Linear (+GLU) is applied functionally
        (the same ops without three module calls) unless it was replaced or has hooks."""
        plain = self._plain_output()
        if plain is None:
            return self.output_linear(y)
        lin, glu = plain
        y = nn.functional.linear(y, lin.weight, lin.bias)
        return nn.functional.glu(y, -1) if glu else y

    def _liquid_inputs(self, u_t: torch.Tensor, hist: torch.Tensor) -> torch.Tensor:
        """v^(p)_t = u_t u_{t-1} ... u_{t-p+1} for p = 2..P from u_t (B, H) and the history
        (B, H, P-1) (oldest first): (B, P-1, H), squashed if liquid_squash is set."""
        if self.liquid_degree == 2:
            v = torch.mul(u_t, hist[..., 0]).unsqueeze_(1)
        else:
            v, prev = [], u_t
            for i in range(self.liquid_degree - 1):
                prev = prev * hist[..., -1 - i]
                v.append(prev)
            v = torch.stack(v, 1)
        return torch.tanh(v) if self.liquid_squash == "tanh" else v

    def _step_ref(self, sys: DiscreteSSM, u_t: torch.Tensor, state: torch.Tensor):
        """Reference step through `DiscreteSSM.step` (differentiable): (y (B, C, H) without D, next state)."""
        if self.liquid_kernel is None:
            state = sys.step(state, u_t)
            return sys.output(state), state
        x, hist = self._split_state(state)
        v = self._liquid_inputs(u_t, hist.to(u_t.dtype))  # (B, P-1, H)
        x = sys.step(x, u_t, (sys.liquid_B, v) if self.liquid_kernel == "kb" else None)
        y = sys.output(x)
        if self.liquid_kernel == "pb":
            y = y + torch.einsum("pch,bph->bch", sys.liquid_coef, v)
        return y, self._join_state(x, torch.cat([hist[..., 1:], u_t[..., None]], -1))

    def _step_fast(self, rec, pb, u_t: torch.Tensor, state: torch.Tensor):
        """`_step_ref` through the fast recurrence `rec` (no autograd), with `pb` the flattened PB
        read-out coefficients from `_stepper`: (y (B, C*H) without D, next state)."""
        B = u_t.shape[0]
        fused = rec.advance_from_batch is not None and B >= rec.advance_from_batch
        if self.liquid_kernel is None:
            if fused:
                state, y = rec.advance(state, u_t)
                return y, state
            state = rec.step(state, u_t)
            return rec.output(state), state
        P1 = self.liquid_degree - 1
        n = state.shape[-1] - P1
        hist = _real(state)[..., 2 * n :: 2]  # (B, H, P-1): real parts, oldest first
        v = self._liquid_inputs(u_t, hist)
        v_kb = v if self.liquid_kernel == "kb" else None
        if fused:  # keep the (H, B, .) layout `advance` reads and writes fastest
            new_hb = state.new_empty(state.shape[1], B, state.shape[2])
            _, y = rec.advance(state[..., :n], u_t, v_kb, out=new_hb[..., :n])
            new = new_hb.transpose(0, 1)
        else:
            new = torch.empty_like(state)
            x = rec.step(state[..., :n], u_t, v_kb, out=new[..., :n])
            y = rec.output(x)
        if P1 > 1:
            new[..., n:-1] = state[..., n + 1 :]
        new[..., -1] = u_t
        if pb is not None:
            for p, c in enumerate(pb):
                y.addcmul_(c, v[:, p] if self.channels == 1 else v[:, p].repeat(1, self.channels))
        return y, new

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, l_max={self.l_max}, channels={self.channels}, "
            f"init={self.init!r}, disc={self.disc!r}, bidirectional={self.bidirectional}"
            + (
                f", liquid_kernel={self.liquid_kernel!r}, liquid_degree={self.liquid_degree}"
                if self.liquid_kernel
                else ""
            )
            + (f", liquid_squash={self.liquid_squash!r}" if self.liquid_squash else "")
        )
