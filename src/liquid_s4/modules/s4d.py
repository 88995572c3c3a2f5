"""S4D: the diagonal state-space layer (Gu et al. 2022, "On the Parameterization and
Initialization of Diagonal State Space Models")."""

from __future__ import annotations

import math

import torch

from ..ops.discretize import discretize_diag
from ..ops.hippo import nplr
from ..ops.kernels import vandermonde
from ..ops.recurrence import DiagonalRecurrence
from ..ops.scan import bounded_liquid_b, stable_liquid_b
from ..ops.state import DiscreteSSM
from .kernel import ModalKernel, ScanCoefficients
from .layer import SSMLayer

S4D_INITS = ("lin", "inv", "legs", "real", "random")


def s4d_init(
    init: str, N: int, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Diagonal A and B (each (N/2,) complex128) for d_state N, mode n = 0..N/2-1.

    lin: A_n = -1/2 + i pi n        inv: A_n = -1/2 + i (N/pi)(N/(2n+1) - 1)
    legs: the diagonal Lambda of the LegS NPLR form, with B = V^* B_LegS
    real: A_n = -(n+1)              random: A_n = -1/2 + i pi N/2 U(0, 1)
    B = 1 except for legs.
    """
    n = torch.arange(N // 2, dtype=torch.float64)
    B = torch.ones(N // 2, dtype=torch.complex128)
    if init == "legs":
        Lambda, _, B, _ = nplr("legs", N)
        return Lambda, B
    if init == "lin":
        A = -0.5 + 1j * math.pi * n
    elif init == "inv":
        A = -0.5 + 1j * (N / math.pi) * (N / (2 * n + 1) - 1)
    elif init == "real":
        A = -(n + 1) + 0j
    elif init == "random":
        A = -0.5 + 1j * math.pi * (N / 2) * torch.rand(N // 2, dtype=torch.float64, generator=generator)
    else:
        raise ValueError(f"unknown S4D init {init!r}; expected one of {S4D_INITS}")
    return A.to(torch.complex128), B


class DiagonalKernel(ModalKernel):
    """The S4D kernel: per channel h, N/2 complex modes A = Lambda (conjugate pairs implied),

        x_k = A_bar x_{k-1} + B_bar u_k,  y_k = 2 Re(C x_k),  K_bar[l] = 2 Re(C A_bar^l B_bar)

    discretized by `disc` (zoh or bilinear); K by a blocked Vandermonde product (`vandermonde`)."""

    inits = S4D_INITS
    discs = ("zoh", "bilinear")
    diagonal = True
    parameter_groups = ("A", "B", "C", "dt")

    def __init__(self, d_model: int, d_state: int, init: str = "lin", **kwargs):
        A, B = s4d_init(init, d_state)
        super().__init__(A, B, d_model=d_model, d_state=d_state, init=init, **kwargs)

    def _discretize(self, rate: float):
        A, B = self.Lambda(), torch.view_as_complex(self.B)
        dt = self.dt(rate)[:, None]
        dA, dB = discretize_diag(self.disc, A, B, dt)
        log_dA = dt * A if self.disc == "zoh" else torch.log(dA)
        return dA, log_dA, dB

    def kernels(self, L: int, rate: float = 1.0, powers: tuple[int, ...] = (), L_powers: int = 0):
        _, log_dA, dB = self._discretize(rate)
        C = torch.view_as_complex(self.C)  # (C', H, N/2)
        if not powers:
            return vandermonde(C * dB, log_dA, L), None  # (C', H, L)
        w = C * torch.stack([dB] + [dB**p for p in powers])[:, None]  # (1 + len(powers), C', H, N/2)
        if L_powers == L:  # one blocked evaluation for all
            K = vandermonde(w, log_dA, L)
            return K[0], K[1:]
        return vandermonde(w[0], log_dA, L), vandermonde(w[1:], log_dA, L_powers)

    def discrete(self, rate: float = 1.0, liquid_degree: int | None = None) -> DiscreteSSM:
        dA, log_dA, dB = self._discretize(rate)
        C = torch.view_as_complex(self.C)[: self.channels]
        return DiscreteSSM(dA, dB, C, diagonal=True, conj=True, log_dA=log_dA, liquid_degree=liquid_degree)

    def recurrence(self, sys: DiscreteSSM, rate: float, extra_B: torch.Tensor | None = None):
        return DiagonalRecurrence(sys.dA, sys.dB, sys.C, extra_B)

    def scan_coefficients(self, rate=1.0, form: str = "discrete") -> ScanCoefficients:
        """For form "discrete" and one step size for the whole sequence (rate a number): "affine" with
        this kernel's own A_bar, B_bar (`discrete`: the coordinates of the PB/KB terms); with per-step
        step sizes (rate a tensor): the kernel's discretization (zoh or bilinear) applied at each step.
        For form "ode": the zero-order-hold solution of the liquid ODE (stable by construction); "split":
        its split exponential, e^{dt A} (1 + dt B~ s), stable by construction and, with one step size,
        "affine" (as cheap as "discrete"); see `liquid_s4.ops.scan.liquid_coefficients`."""
        C = torch.view_as_complex(self.C)
        if form == "discrete" and not isinstance(rate, torch.Tensor):
            dA, _, dB = self._discretize(rate)
            return ScanCoefficients("affine", dA, dB, dB, C, None)
        A, B = self.Lambda(), torch.view_as_complex(self.B)
        if form == "split":
            bt = bounded_liquid_b(A, B)
            if not isinstance(rate, torch.Tensor):
                dA, _, dB = self._discretize(rate)
                return ScanCoefficients("affine", dA, dB, dA * self.dt(rate)[:, None] * bt, C, None)
            return ScanCoefficients("split", A, B, bt, C, self.dt())
        if form == "discrete":
            return ScanCoefficients(self.disc, A, B, B, C, self.dt())
        return ScanCoefficients("ode", A, B, stable_liquid_b(A, B), C, self.dt())


class S4D(SSMLayer):
    """Diagonal SSM layer: per channel h, N/2 complex modes (conjugate pairs implied).

        x_k = A_bar x_{k-1} + B_bar u_k,  y_k = 2 Re(C x_k) + D u_k,  K_bar[l] = 2 Re(C A_bar^l B_bar)

    A = -(1e-4 + exp(log_A_real_gap)) + i A_imag (real part < -1e-4 for any parameter value, with a
    gradient that never vanishes; the init's A up to rounding), discretized by `disc` (zoh or
    bilinear) with step dt = exp(log_dt) (log-uniform in [dt_min, dt_max] at init).

    Args: d_model (H), d_state (N, even), l_max (None = any length), channels, dt_min, dt_max,
    init (lin, inv, legs, real, random), disc (zoh, bilinear), bidirectional, dropout, activation,
    postact ('glu', 'linear', None), transposed (inputs (B, H, L) instead of (B, L, H)),
    lr (learning rate hint for A, B, dt; None = the optimizer's), freeze (any of "A", "B", "C", "dt").
    """

    kernel_class = DiagonalKernel

    def __init__(self, d_model: int, d_state: int = 64, init: str = "lin", disc: str = "zoh", **kwargs):
        super().__init__(d_model, d_state, init=init, disc=disc, **kwargs)
