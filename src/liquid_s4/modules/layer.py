"""The SSM layer: an SSM kernel module (S4D, S4 or LSSL), the convolution around it (D skip, liquid
terms, state passing) and the output block, with the checks of the user-facing arguments and the
two caches that make inference cheap."""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn as nn

from ..utils import lengths_mask
from .block import OutputBlock
from .cache import TensorCache
from .checks import check_layer_arguments
from .conv import SSMConvolution, StepSetup
from .kernel import SSMKernel, upgrade_A_real

_NO_CONTEXT = contextlib.nullcontext()

# state-dict entries of layers saved before the layer was built from parts: old name -> new name
_MOVED = {"D": "conv.D", "output_linear.": "output.projection."}


def upgrade_state_dict(state_dict: dict, prefix: str) -> None:
    """Convert, in place, the entries of an SSM layer saved by an earlier version of the library (under
    `prefix`) to the current layout: the SSM parameters moved into `ssm.`, D into `conv.`, the output
    projection into `output.projection.`, and `log_A_real` became `log_A_real_gap` (see
    `upgrade_A_real`). Entries already current are left as they are."""
    if any(k.startswith(prefix + "ssm.") for k in state_dict):
        upgrade_A_real(state_dict, prefix + "ssm.")
        return
    own = [k for k in state_dict if k.startswith(prefix) and "." not in k[len(prefix) :]]
    moved = [k for k in state_dict if k.startswith(prefix + "output_linear.")]
    if not own and not moved:
        return
    for k in own:
        name = k[len(prefix) :]
        state_dict[prefix + (_MOVED["D"] if name == "D" else "ssm." + name)] = state_dict.pop(k)
    for k in moved:
        state_dict[prefix + _MOVED["output_linear."] + k[len(prefix + "output_linear.") :]] = state_dict.pop(
            k
        )
    upgrade_A_real(state_dict, prefix + "ssm.")


class SSMLayer(nn.Module):
    """Base class of S4D, S4 and LSSL (see those for the arguments), made of three parts:

        ssm     the kernel module (`kernel_class`): the SSM parameters, the kernels K, the discrete system
        conv    `SSMConvolution`: y = K * u + D u (+ liquid terms), with state passing, and its step
        output  `OutputBlock`: activation, dropout, output projection (+ GLU)

    Liquid terms (S4 and S4D; see `liquid_s4.ops.liquid` for the definitions):
    liquid_kernel None, "pb" or "kb"; liquid_degree P >= 2; liquid_squash None or "tanh".
    The exact liquid recurrence (S4D only; see `liquid_s4.ops.scan`): liquid_kernel "scan", with
    liquid_form "discrete" (x_k = (A_bar + B_bar s_k) x_{k-1} + B_bar u_k, every term, in the
    coordinates of the PB/KB terms; s_k = tanh(u_k) with liquid_squash "tanh", else u_k; |A_bar +
    B_bar s_k| > 1 is possible, and then the state grows), "split" (x_k = e^{dt A} (1 + dt B~ tanh(u_k))
    x_{k-1} + B_bar u_k with |B~| < -Re A: stable by construction, as fast as "discrete") or "ode" (the
    zero-order-hold solution of dx/dt = (A + B~ tanh(u)) x + B u: stable by construction, exact for
    the ODE, slower). The scan also takes per-step step sizes: `rate` a (B, L) tensor (irregular
    sampling).

    Inference caches: when no gradient can reach the parameters (evaluation under torch.no_grad() or
    inference_mode, or frozen layers), the kernels of the last call (`forward`) and the step set-up
    (`step`) are kept and reused while the arguments and every tensor they were computed from are
    unchanged (see `TensorCache`); training calls never use or fill them. `clear_cache()` frees them.
    """

    kernel_class: type[SSMKernel] = SSMKernel
    inits: tuple[str, ...] = ()  # the kernel's initializations, discretizations and freezable groups
    discs: tuple[str, ...] = ()
    ssm_parameter_names: tuple[str, ...] = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        k = cls.kernel_class
        cls.inits, cls.discs, cls.ssm_parameter_names = k.inits, k.discs, k.parameter_groups

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
        liquid_form: str = "discrete",
    ):
        super().__init__()
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}  # the arguments above
        check_layer_arguments(type(self).__name__, self.kernel_class, **args)
        self.d_model, self.d_state, self.l_max, self.channels = d_model, d_state, l_max, channels
        self.init, self.disc, self.bidirectional, self.transposed = init, disc, bidirectional, transposed
        self._rate = 1.0
        self.ssm = self.kernel_class(
            d_model,
            d_state,
            init=init,
            disc=disc,
            channels=channels,
            bidirectional=bidirectional,
            l_max=l_max,
            dt_min=dt_min,
            dt_max=dt_max,
            lr=lr,
            freeze=tuple(freeze),
        )
        self.conv = SSMConvolution(
            d_model, channels, bidirectional, liquid_kernel, liquid_degree, liquid_squash, liquid_form
        )
        self.output = OutputBlock(channels * d_model, d_model, activation, dropout, postact)
        self._kernel_cache, self._step_cache, self._chunk_cache = TensorCache(), TensorCache(), TensorCache()

    # ---- parts and caches ----------------------------------------------------------------------
    @property
    def freeze(self) -> tuple[str, ...]:
        return self.ssm.freeze

    @property
    def lr(self) -> float | None:
        return self.ssm.lr

    @property
    def liquid_kernel(self) -> str | None:
        """The liquid terms (None, "pb" or "kb"); with liquid_degree and liquid_squash, kept by `conv`."""
        return self.conv.liquid_kernel

    @liquid_kernel.setter
    def liquid_kernel(self, value: str | None) -> None:
        self.conv.liquid_kernel = value

    @property
    def liquid_degree(self) -> int:
        return self.conv.liquid_degree

    @property
    def liquid_squash(self) -> str | None:
        return self.conv.liquid_squash

    @property
    def liquid_form(self) -> str:
        """The form of the exact scan ("discrete", "split" or "ode"; see `liquid_s4.ops.scan`)."""
        return self.conv.liquid_form

    @property
    def D(self) -> torch.Tensor:
        """The skip D (channels, H)."""
        return self.conv.D

    def cached_tensors(self) -> tuple[torch.Tensor, ...]:
        """What the inference caches (and a `CUDAGraphStep`'s graph) are computed from: the SSM
        tensors and D."""
        parts = self._modules  # see `step`
        return (*parts["ssm"].tensors(), parts["conv"].D)

    def clear_cache(self) -> None:
        """Free the cached step setup and inference kernels (rebuilt on the next use). The kernel
        cache holds one (channels, H, L) kernel per layer after an evaluation pass."""
        self._kernel_cache.clear()
        self._step_cache.clear()
        self._chunk_cache.clear()

    def __getstate__(self):
        """Copies and pickles leave the step and kernel caches behind (they are rebuilt on use)."""
        state = super().__getstate__()
        return {**state, "_kernel_cache": None, "_step_cache": None, "_chunk_cache": None}

    def __setstate__(self, state):
        if "ssm" not in state.get("_modules", {}):
            raise TypeError(
                f"{type(self).__name__}: this layer was pickled by an earlier version of liquid_s4, whose "
                "layers had another structure; load its state_dict instead (earlier state dicts load)"
            )
        super().__setstate__(state)
        self._kernel_cache, self._step_cache, self._chunk_cache = TensorCache(), TensorCache(), TensorCache()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        """Also loads the state dicts of earlier versions (converted, see `upgrade_state_dict`)."""
        upgrade_state_dict(state_dict, prefix)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def _needs_graph(self) -> bool:
        """Whether a gradient can reach the layer's parameters from this call."""
        return torch.is_grad_enabled() and any(t.requires_grad for t in self.cached_tensors())

    def _kernels(self, L: int, rate: float):
        """(K, K_p) of `SSMKernel.kernels` with the liquid powers this layer needs; from the kernel
        cache when no gradient can reach the parameters (the cache key: the arguments, the inference
        mode, and a snapshot of the tensors)."""
        powers, L_powers = self.conv.kernel_request(L)
        if self._needs_graph():
            return self.ssm.kernels(L, rate, powers, L_powers)
        args = (L, rate, powers, L_powers, torch.is_inference_mode_enabled())
        return self._kernel_cache.get(
            args, self.cached_tensors, lambda: self.ssm.kernels(L, rate, powers, L_powers)
        )

    # chunks whose state maps (`_chunk_operators`: (channels + inputs) x H x L x S real entries) stay within
    # this many entries pass their state through them (2**24: 64 MiB in float32); longer chunks, or
    # larger layers, use the closed forms of `DiscreteSSM` on each chunk
    chunk_cache_max_entries: int = 2**24

    def _chunk_cacheable(self, L: int, lengths) -> bool:
        """Whether a chunk with state passes it through the cached `ChunkOperators`: inference (no
        gradient can reach the parameters), whole chunks (no lengths), maps of at most
        `chunk_cache_max_entries` entries."""
        if lengths is not None or self._needs_graph():
            return False
        ssm, conv = self._modules["ssm"], self._modules["conv"]
        S = 2 * ssm.state_size if ssm.complex_state else ssm.state_size
        inputs = 1 + (conv.liquid_degree - 1 if conv.liquid_kernel == "kb" else 0)
        return (self.channels + inputs) * self.d_model * L * S <= self.chunk_cache_max_entries

    def _chunk_operators(self, L: int, rate: float):
        """The state maps of chunks of L steps (`DiscreteSSM.chunk_operators`, with a KB layer's liquid
        input vectors), computed without gradients."""
        with torch.no_grad():
            sys = self.discrete(rate)
            return sys.chunk_operators(L, sys.liquid_B if self.liquid_kernel == "kb" else None)

    def kernel(self, L: int, rate: float = 1.0) -> torch.Tensor:
        """Convolution kernel (channels * (2 if bidirectional else 1), H, L), without D."""
        return self.ssm.kernels(L, rate)[0]

    def discrete(self, rate: float = 1.0):
        """The discrete causal system (forward direction) for stepping and state passing, with the
        liquid vectors of a liquid layer (see `DiscreteSSM`)."""
        return self.ssm.discrete(rate, self.conv.system_degree)

    # ---- rate --------------------------------------------------------------------------------
    @property
    def rate(self) -> float:
        """Default `rate` of forward and step (a multiplier of every dt): a finite number > 0."""
        return self._rate

    @rate.setter
    def rate(self, value) -> None:
        self._rate = self._check_rate(value)

    def _check_rate(self, rate, shape: tuple[int, ...] | None = None):
        """rate as a float, or a ValueError unless it is a finite number > 0. With `shape` ((B, L) in
        forward, (B,) in step), a tensor of that shape of finite values > 0 is also accepted (per-step
        step sizes) by layers with liquid_kernel="scan"."""
        if isinstance(rate, torch.Tensor) and rate.dim() > 0:
            return self._check_rate_tensor(rate, shape)
        try:
            r = float(rate)
        except (TypeError, ValueError, RuntimeError):
            r = None
        if r is None or isinstance(rate, bool) or not (math.isfinite(r) and r > 0):
            raise ValueError(
                f"{type(self).__name__}: rate must be a finite number > 0 (it multiplies the step size dt), "
                f"got {rate!r}"
            )
        return r

    def _check_rate_tensor(self, rate: torch.Tensor, shape) -> torch.Tensor:
        name = type(self).__name__
        if self.liquid_kernel != "scan" or shape is None:
            raise ValueError(
                f"{name}: a per-step rate tensor needs liquid_kernel='scan' (S4D): the convolution "
                "kernels use one step size for the whole sequence; pass a number"
            )
        if tuple(rate.shape) != tuple(shape) or not rate.is_floating_point():
            raise ValueError(
                f"{name}: a per-step rate must be a floating-point tensor of shape {tuple(shape)} "
                f"(one positive multiplier of dt per step), got {rate.dtype} {tuple(rate.shape)}"
            )
        if not bool(torch.isfinite(rate).all()) or bool((rate <= 0).any()):
            raise ValueError(
                f"{name}: a per-step rate must be finite and > 0 at every step (the time since the previous "
                "sample in units of the nominal step; give padded steps 1)"
            )
        return rate

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
                f"{name}: expected a 3-d input {layout} (transposed={self.transposed}), "
                f"got shape {tuple(u.shape)}"
            )
        H = u.shape[1] if self.transposed else u.shape[2]
        if H != self.d_model:
            other = u.shape[2] if self.transposed else u.shape[1]
            hint = " (is `transposed` set right?)" if other == self.d_model else ""
            raise ValueError(
                f"{name}: expected {self.d_model} channels in input of layout {layout}, "
                f"got shape {tuple(u.shape)}{hint}"
            )
        # (B, L, H) inputs are copied to (B, H, L) rows once: the FFT reads them as rows anyway, and the
        # liquid terms read them again (strided passes cost more than contiguous ones)
        u = u if self.transposed else u.transpose(1, 2).contiguous()
        L = u.shape[-1]
        if L < 1:
            raise ValueError(f"{name}: empty sequence (L = 0)")
        if self.l_max is not None and L > self.l_max:
            raise ValueError(
                f"{name}: sequence length {L} exceeds l_max={self.l_max}; "
                "build the layer with a larger l_max or l_max=None"
            )
        return u.to(self.ssm.dtype)  # (B, H, L)

    def check_state(self, state: torch.Tensor, batch: int) -> None:
        """A ValueError unless `state` is a state of this layer for `batch` sequences."""
        ssm, conv = self._modules["ssm"], self._modules["conv"]  # see `step`
        shape = (batch, self.d_model, ssm.state_size + conv.history_size)
        complex_state = ssm.complex_state
        if (
            not isinstance(state, torch.Tensor)
            or tuple(state.shape) != shape
            or state.is_complex() != complex_state
        ):
            got = tuple(state.shape) if isinstance(state, torch.Tensor) else type(state).__name__
            kind = "complex" if complex_state else "real"
            raise ValueError(
                f"{type(self).__name__}: expected a {kind} state of shape {shape} "
                f"(from default_state or a previous call), got {got}"
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
        number > 0 (else a ValueError), default `self.rate`. Layers with liquid_kernel="scan" also
        take a (B, L) tensor: the step size of each step (irregular sampling: the time since the
        previous sample, in units of the nominal step); the other layers raise a ValueError for it.

        Non-finite inputs: the convolution runs through FFTs over the whole sequence, so one NaN or
        inf input makes every output of that sequence NaN, earlier steps included (the FFT mixes
        all positions of its channel, the output projection all channels); the next state is NaN
        in that channel. Other sequences of the batch are unaffected. `step` affects only the
        current and later steps. An empty batch (B = 0) gives empty outputs.
        """
        x = self._check_input(u)  # (B, H, L)
        B, H, L = x.shape
        rate = self._rate if rate is None else self._check_rate(rate, (B, L))
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
            self.check_state(state, B)
            state, hist = self.conv.split_state(state)
        # the SSM part (kernels, FFTs, complex math, state) always runs in the layer's own precision,
        # also under torch.autocast; the output projection below follows autocast
        with torch.autocast(device_type=x.device.type, enabled=False):
            next_state = None
            if self.conv.liquid_kernel == "scan":  # the exact recurrence: the state comes with it
                rate = rate.to(x.device) if isinstance(rate, torch.Tensor) else rate
                coef = self.ssm.scan_coefficients(rate, self.conv.liquid_form)
                y, x_end = self.conv.scan(coef, x, rate, state, lengths)
                next_state = x_end if state is not None else None
            else:
                k, kp = self._kernels(L, rate)
                y, v = self.conv(x, k, kp, hist)  # (B, C, H, L), D u and the liquid terms included
                if state is not None and self._chunk_cacheable(L, lengths):
                    ops = self._chunk_cache.get(
                        (
                            L,
                            rate,
                            self.conv.liquid_kernel,
                            self.conv.liquid_degree,
                            torch.is_inference_mode_enabled(),
                        ),
                        self.cached_tensors,
                        lambda: self._chunk_operators(L, rate),
                    )
                    y, next_state = self.conv.pass_state_cached(ops, y, x, state, hist, v)
                elif state is not None:
                    y, next_state = self.conv.pass_state(self.discrete(rate), y, x, state, hist, v, lengths)
        y = self.output(y.flatten(1, 2), self.conv.D.dtype, self.transposed)  # (B, L, H), or (B, H, L)
        if mask is not None:
            y = y * (mask[:, None] if self.transposed else mask[..., None])
        return y, next_state

    # ---- recurrent mode ----------------------------------------------------------------------
    def default_state(self, batch_size: int) -> torch.Tensor:
        """Zero state (batch_size, H, N') where N' = N/2 complex entries (the stored half of conjugate
        pairs) for S4/S4D, N real entries for LSSL. Liquid layers append the last P-1 inputs (as real
        parts): N' = N/2 + P - 1."""
        dtype = self.ssm.dtype
        if self.ssm.complex_state:
            dtype = {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(dtype)
        size = self.ssm.state_size + self.conv.history_size
        return torch.zeros(batch_size, self.d_model, size, dtype=dtype, device=self.conv.D.device)

    def _step_setup(self, rate: float) -> StepSetup:
        """The discrete system, its fast recurrence and D, computed without gradients (cached by `step`)."""
        with torch.no_grad():
            sys = self.discrete(rate)
            extra = sys.stored(sys.liquid_B) if self.liquid_kernel == "kb" else None
            rec = self.ssm.recurrence(sys, rate, extra)
            pb_coef = ()
            if self.liquid_kernel == "pb":  # one channel: (H,) each, for the step's (B, H) outputs
                pb_coef = tuple(sys.liquid_coef[:, 0] if self.channels == 1 else sys.liquid_coef)
            D = self.conv.D
            return StepSetup(sys, rec, D.reshape(-1).to(self.ssm.dtype), pb_coef, D.dtype)

    def step(self, u_t: torch.Tensor, state: torch.Tensor, rate: float | None = None):
        """One recurrent step. u_t: (B, H), state: (B, H, N') (see `default_state`).
        Returns (y_t (B, H), next_state).

        Two paths, chosen here: when no gradient can reach the parameters (torch.no_grad(), or frozen
        SSM parameters), S4D and S4 run the fast O(N) step of `liquid_s4.ops.recurrence` from a cached
        set-up (`use_fast_path`); otherwise, and for LSSL, the differentiable reference
        `DiscreteSSM.step`. Both give the same result to rounding. From batch `advance_from_batch` of
        the recurrence on (S4D: 16, S4: 32) the fast step advances all streams with batched products
        (`batched`), and next_state is a (B, H, N') view of an (H, B, N') buffer, the layout that step
        reads fastest: pass it back as it is (`.contiguous()` gives the usual layout)."""
        name = type(self).__name__
        if self.bidirectional:
            raise RuntimeError(f"{name}: a bidirectional layer sees the future and cannot run step by step")
        if not isinstance(u_t, torch.Tensor) or u_t.dim() != 2 or u_t.shape[1] != self.d_model:
            got = tuple(u_t.shape) if isinstance(u_t, torch.Tensor) else type(u_t).__name__
            raise ValueError(f"{name}.step: expected input of shape (B, {self.d_model}), got {got}")
        if not u_t.is_floating_point():
            raise TypeError(f"{name}.step: expected a floating-point input, got dtype {u_t.dtype}")
        self.check_state(state, u_t.shape[0])
        rate = self._rate if rate is None else self._check_rate(rate, (u_t.shape[0],))
        # the parts, read once: nn.Module finds submodules through a Python-level __getattr__, whose
        # cost adds up at batch 1, where a step is a few dozen small tensor ops
        parts = self._modules
        ssm, conv, output = parts["ssm"], parts["conv"], parts["output"]
        # the SSM part runs in the SSM tensors' precision, also under autocast (as in forward)
        autocast = torch.is_autocast_enabled(u_t.device.type)
        with torch.autocast(device_type=u_t.device.type, enabled=False) if autocast else _NO_CONTEXT:
            if conv.liquid_kernel == "scan":
                return self._step_scan(u_t, state, rate)
            setup = None  # the differentiable reference step builds its system in the graph
            if not self._needs_graph():
                key = (rate, conv.liquid_kernel, conv.liquid_degree)
                setup = self._step_cache.get(key, self.cached_tensors, lambda: self._step_setup(rate))
            # the SSM precision, and the outputs' (D's; they differ in float16/bfloat16 layers)
            if setup is None:
                dtype, out_dtype = ssm.dtype, conv.D.dtype
            else:
                dtype, out_dtype = setup.D.dtype, setup.out_dtype
            if u_t.dtype != dtype:
                u_t = u_t.to(dtype)
            use_fast_path = setup is not None and setup.recurrence is not None
            if use_fast_path:
                advance_from = setup.recurrence.advance_from_batch
                batched = advance_from is not None and u_t.shape[0] >= advance_from
                y, state = conv.step_fast(setup, u_t, state, batched)
            else:
                sys = self.discrete(rate) if setup is None else setup.sys  # differentiable, not cached
                y, state = conv.step(sys, u_t, state)
        return output.step(y, out_dtype), state

    def _step_scan(self, u_t: torch.Tensor, state: torch.Tensor, rate):
        """`step` of a liquid_kernel="scan" layer: the coefficients are cached like the step set-up when
        no gradient can reach the parameters and the rate is a number."""
        ssm, conv = self._modules["ssm"], self._modules["conv"]
        if isinstance(rate, torch.Tensor):
            rate = rate.to(u_t.device)
        if self._needs_graph() or isinstance(rate, torch.Tensor):
            coef = ssm.scan_coefficients(rate, conv.liquid_form)
        else:
            key = ("scan", rate, conv.liquid_form)

            def build():
                with torch.no_grad():
                    return ssm.scan_coefficients(rate, conv.liquid_form)

            coef = self._step_cache.get(key, self.cached_tensors, build)
        y, state = conv.step_scan(coef, u_t.to(ssm.dtype), state, rate)
        return self._modules["output"].step(y, conv.D.dtype), state

    def extra_repr(self) -> str:
        return (
            f"d_model={self.d_model}, d_state={self.d_state}, l_max={self.l_max}, channels={self.channels}, "
            f"init={self.init!r}, disc={self.disc!r}, bidirectional={self.bidirectional}"
            + (
                f", liquid_kernel={self.liquid_kernel!r}, liquid_degree={self.liquid_degree}"
                if self.liquid_kernel in ("pb", "kb")
                else ""
            )
            + (
                f", liquid_kernel='scan', liquid_form={self.liquid_form!r}"
                if self.liquid_kernel == "scan"
                else ""
            )
            + (f", liquid_squash={self.liquid_squash!r}" if self.liquid_squash else "")
        )
