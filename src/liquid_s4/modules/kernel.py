"""The SSM kernel family: the module that holds an SSM's parameters and turns them into what the
layer computes with, the convolution kernels K (`kernels`) and the discrete system for stepping and
state passing (`discrete`, `recurrence`). S4D (`DiagonalKernel`), S4 (`DPLRKernel`) and LSSL
(`DenseKernel`) are its members; the layers (`liquid_s4.modules.layer.SSMLayer`) add the
convolution, the liquid terms and the output block around one of them.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn as nn

from ..ops.state import DiscreteSSM
from ..optim import set_optim_hint

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
    """Convert the `log_A_real` of an SSM saved before `log_A_real_gap` (Re A = -max(exp(x), 1e-4))
    in place: gap = log(exp(x) - 1e-4), with modes that sat on the bound (or within 1e-7 of it) put
    at Re A = -(1e-4 + 1e-7). The converted SSM computes what the saved one did, to ~1e-7 in Re A."""
    old, new = prefix + "log_A_real", prefix + "log_A_real_gap"
    if old in state_dict and new not in state_dict:
        x = state_dict.pop(old)
        gap = torch.log((torch.exp(x.double()) - A_REAL_BOUND).clamp(min=1e-7))
        state_dict[new] = gap.to(x.dtype)


class SSMKernel(nn.Module):
    """Base of the kernel family. A kernel module holds one SSM per model channel h = 1..H (its own
    parameters and buffers, all of them SSM tensors) and computes from them:

        kernels(L, rate, powers, L_powers)  the convolution kernels C A_bar^l B_bar (and C A_bar^l B_bar^p)
        discrete(rate, liquid_degree)       the discrete system (`DiscreteSSM`) for stepping and state passing
        recurrence(sys, rate, extra_B)      a fast inference step for that system, or None

    `rate` multiplies every step size dt = exp(log_dt). Parameters are registered with
    `register_ssm_parameter`, which carries the optimizer hints and the `freeze` option.

    Precision: the SSM tensors are never stored below float32 (see `_apply`).
    """

    inits: tuple[str, ...] = ()
    discs: tuple[str, ...] = ()
    parameter_groups: tuple[str, ...] = ()  # the names `freeze` takes
    complex_state: bool = True  # N/2 complex modes (conjugate pairs implied) or N real entries
    modal: bool = True  # the state is in diagonal coordinates (what the liquid terms need)
    diagonal: bool = False  # A itself is diagonal (the exact liquid scan needs it)

    def __init__(
        self,
        d_model: int,
        d_state: int,
        init: str,
        disc: str,
        channels: int = 1,
        bidirectional: bool = False,
        l_max: int | None = None,
        dt_min: float = 1e-3,
        dt_max: float = 1e-1,
        lr: float | None = 1e-3,
        freeze: tuple[str, ...] = (),
    ):
        super().__init__()
        self.d_model, self.d_state, self.channels, self.bidirectional = (
            d_model,
            d_state,
            channels,
            bidirectional,
        )
        self.l_max = l_max
        self.init, self.disc, self.dt_min, self.dt_max, self.lr = init, disc, dt_min, dt_max, lr
        self.freeze = tuple(freeze)

    @property
    def out_channels(self) -> int:
        """Output vectors C per channel: `channels`, twice that for a bidirectional layer (the second
        half reads out the anti-causal system)."""
        return self.channels * (2 if self.bidirectional else 1)

    @property
    def state_size(self) -> int:
        """Entries of the stored state per channel: N/2 complex modes, or N real entries."""
        return self.d_state // 2 if self.complex_state else self.d_state

    @property
    def dtype(self) -> torch.dtype:
        """The precision of the SSM computation (float32 or float64)."""
        return self.log_dt.dtype

    def register_ssm_parameter(self, name: str, value: torch.Tensor, group: str, ssm_lr: bool = True) -> None:
        """Register value as a parameter (or a buffer if `group` is frozen) with optimizer hints.

        group is the user-facing name ("A", "B", "C", "dt", "P") used by `freeze`; ssm_lr: the
        parameter takes the layer's `lr` and no weight decay (see `liquid_s4.param_groups`)."""
        if group in self.freeze:
            self.register_buffer(name, value)
            return
        p = nn.Parameter(value)
        if ssm_lr and self.lr is not None:
            set_optim_hint(p, lr=self.lr, weight_decay=0.0)
        self.register_parameter(name, p)

    def initial_log_dt(self) -> torch.Tensor:
        """log dt, log-uniform in [dt_min, dt_max] per channel: (H,) float32."""
        u = torch.rand(self.d_model, dtype=torch.float64)
        lo, hi = math.log(self.dt_min), math.log(self.dt_max)
        return (lo + u * (hi - lo)).float()

    def dt(self, rate: float = 1.0) -> torch.Tensor:
        """The step sizes exp(log_dt) * rate: (H,)."""
        return torch.exp(self.log_dt) * rate

    def tensors(self) -> tuple[torch.Tensor, ...]:
        """The kernel's own parameters and buffers: everything its outputs are computed from."""
        return (*self._parameters.values(), *self._buffers.values())

    def _apply(self, fn, *args, **kwargs):
        """Module conversions (`.to`, `.half()`, `.bfloat16()`, `.cuda()`, ...) apply as usual, except
        that no SSM tensor is stored below float32: converting to float16 or bfloat16 keeps them in
        float32 (moved to the new device), so the SSM part (kernels, FFT convolution, state) runs in
        float32 while the rest of the layer takes the new dtype. Half-precision complex FFTs and
        discretization would lose the SSM's long memory, and are not implemented on CPU."""
        own = (*self._parameters.items(), *self._buffers.items())
        before = {n: t.detach() for n, t in own if t is not None and t.is_floating_point()}
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

    def kernels(self, L: int, rate: float = 1.0, powers: tuple[int, ...] = (), L_powers: int = 0):
        """(K, K_p): K (C', H, L) the kernel C A_bar^l B_bar for each of the C' = `out_channels` output
        vectors, and for each p in `powers` the kernel C A_bar^l B_bar^p for l < L_powers, stacked
        (len(powers), C', H, L_powers) (None if no powers)."""
        raise NotImplementedError

    def discrete(self, rate: float = 1.0, liquid_degree: int | None = None) -> DiscreteSSM:
        """The discrete causal system (the first `channels` output vectors: the forward direction of a
        bidirectional layer), with the liquid input vectors B_bar^p for p <= liquid_degree if given."""
        raise NotImplementedError

    def scan_coefficients(self, rate, form: str = "discrete") -> ScanCoefficients:
        """The coefficients of the exact liquid scan (`liquid_s4.ops.scan`); diagonal kernels only."""
        raise NotImplementedError(f"{type(self).__name__} has no diagonal A: the liquid scan needs S4D")

    def recurrence(self, sys: DiscreteSSM, rate: float, extra_B: torch.Tensor | None = None):
        """A fast inference step for `sys` (see `liquid_s4.ops.recurrence`; extra_B: the vectors of
        extra inputs, e.g. the KB liquid terms'), or None to step with the reference `sys.step`."""
        return None


class ScanCoefficients(NamedTuple):
    """The parameters of `liquid_s4.ops.scan.liquid_scan` for a diagonal SSM: form ("affine": a, b
    are A_bar, B_bar and bt the transition's input vector for one fixed step; "zoh"/"bilinear"/"ode"/
    "split": a = A, b = B continuous (bt the bounded transition vector of "ode" and "split"), discretized at
    each step with step size dt * rate_k), a, b, bt (H, N/2) complex, C (C', H, N/2) complex, and
    dt (H,) the nominal step sizes (None for "affine")."""

    form: str
    a: torch.Tensor
    b: torch.Tensor
    bt: torch.Tensor
    C: torch.Tensor
    dt: torch.Tensor | None


class ModalKernel(SSMKernel):
    """Kernels whose state lives in the eigenbasis of (the normal part of) A: N/2 complex modes per
    channel, conjugate pairs implied, with

        Lambda = -(1e-4 + exp(log_A_real_gap)) + i A_imag     (Re Lambda < -1e-4 for any parameter value)

    and input vector B. S4D uses Lambda itself; S4 adds a low-rank term P (A = Lambda - P P^*)."""

    def __init__(self, Lambda, B, P=None, **kwargs):
        """Lambda, B: (N/2,) complex (shared initial values for every channel); P: (r, N/2) or None."""
        super().__init__(**kwargs)
        H, N2 = self.d_model, self.d_state // 2
        Lambda, B = Lambda.expand(H, N2), B.expand(H, N2)
        self.register_ssm_parameter("log_A_real_gap", real_part_parameter(Lambda.real).float(), "A")
        self.register_ssm_parameter("A_imag", Lambda.imag.float(), "A")
        if P is not None:
            P = torch.view_as_real(P[:, None].expand(-1, H, N2).to(torch.complex64))
            self.register_ssm_parameter("P", P.contiguous().clone(), "P")
        self.register_ssm_parameter("B", torch.view_as_real(B.to(torch.complex64)).clone(), "B")
        C = torch.randn(self.out_channels, H, N2, dtype=torch.complex64)  # variance 1/2 per component
        self.register_ssm_parameter("C", torch.view_as_real(C).clone(), "C", ssm_lr=False)
        self.register_ssm_parameter("log_dt", self.initial_log_dt(), "dt")

    def Lambda(self) -> torch.Tensor:
        """The diagonal (H, N/2) complex: A for S4D, the normal part of A for S4."""
        return torch.complex(real_part(self.log_A_real_gap), self.A_imag)
