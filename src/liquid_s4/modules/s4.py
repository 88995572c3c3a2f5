"""S4: the diagonal-plus-low-rank (DPLR) structured state-space layer (Gu et al. 2022,
"Efficiently Modeling Long Sequences with Structured State Spaces")."""

from __future__ import annotations

import torch

from ..ops.discretize import discretize_gbt, dplr_bilinear_B, dplr_bilinear_B_inverse
from ..ops.hippo import MEASURES, nplr
from ..ops.kernels import irfft_first, kernel_dplr_hat
from ..ops.recurrence import DPLRRecurrence
from ..ops.state import DiscreteSSM
from .kernel import ModalKernel
from .layer import SSMLayer


def _times_power(C: torch.Tensor, dA: torch.Tensor, L: int) -> torch.Tensor:
    """C A_bar^L for row vectors C (Ch, H, N) and A_bar (H, N, N)."""
    return torch.einsum("chn,hnm->chm", C, torch.linalg.matrix_power(dA, L))


class DPLRKernel(ModalKernel):
    """The S4 kernel. Per channel, in the eigenbasis of the normal part of a HiPPO matrix,

        A = Lambda - P P^*   (Lambda diagonal, P of rank r; conjugate pairs implied)

    discretized with the bilinear transform. The kernel is evaluated through Cauchy sums at the
    roots of unity with a Woodbury correction (`kernel_dplr_hat`), for which the output vector is
    stored as C~ = C (I - A_bar^L) at the kernel length L = `l_kernel` (a buffer): if l_max is given
    L = l_max; otherwise L is set by the first call (C is converted), and it doubles,
    C~ <- C~ (I + A_bar^L), whenever a longer sequence arrives. Stepping and state passing use the
    equivalent dense system with C = C~ (I - A_bar^L)^{-1}. These conversions (A_bar^L and the
    solve) run in float64 whatever the precision: for modes with Re Lambda near the bound,
    I - A_bar^L is nearly singular and float32 would lose C.
    """

    inits = MEASURES
    discs = ("bilinear",)
    parameter_groups = ("A", "P", "B", "C", "dt")

    def __init__(self, d_model: int, d_state: int, init: str = "legs", **kwargs):
        Lambda, P, B, _ = nplr(init, d_state)
        super().__init__(Lambda, B, P, d_model=d_model, d_state=d_state, init=init, **kwargs)
        self.register_buffer("l_kernel", torch.tensor(self.l_max or 0, dtype=torch.long))

    def dense(self, rate: float = 1.0, wide: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_bar, B_bar) of the full 2*(N/2)-dimensional system in the eigenbasis: (H, N, N), (H, N).
        wide: in complex128 (differentiable casts of the parameters), else in the kernel's precision."""
        lam, dt = self.Lambda(), self.dt(rate)
        P, B = torch.view_as_complex(self.P), torch.view_as_complex(self.B)
        if wide:
            lam, P, B, dt = (
                lam.to(torch.complex128),
                P.to(torch.complex128),
                B.to(torch.complex128),
                dt.double(),
            )
        lam, P, B = (torch.cat([x, x.conj()], -1) for x in (lam, P, B))
        A = torch.diag_embed(lam) - torch.einsum("rhn,rhm->hnm", P, P.conj())
        return discretize_gbt(A, B, dt)

    def _C_full(self) -> torch.Tensor:
        C = torch.view_as_complex(self.C)
        return torch.cat([C, C.conj()], -1)

    def C_true(self, wide: bool = False) -> torch.Tensor:
        """C = C~ (I - A_bar^L)^{-1} for L = l_kernel (C~ itself while l_kernel is 0), full basis,
        computed in float64; returned in complex128 if `wide`, else in the kernel's precision."""
        C = self._C_full()
        Lk = int(self.l_kernel)
        if Lk == 0:
            return C.to(torch.complex128) if wide else C
        dA, _ = self.dense(wide=True)
        M = torch.eye(dA.shape[-1], dtype=dA.dtype, device=dA.device) - torch.linalg.matrix_power(dA, Lk)
        out = torch.linalg.solve(M.mT, C.to(dA.dtype).permute(1, 2, 0)).permute(2, 0, 1)  # C M = C~
        return out if wide else out.to(C.dtype)

    @torch.no_grad()
    def setup_length(self, L: int) -> None:
        """Make l_kernel >= L, rewriting C~ (in float64) so that the underlying C is unchanged."""
        Lk = int(self.l_kernel)
        if Lk >= L:
            return
        dA, _ = self.dense(wide=True)
        C, N2 = self._C_full().to(torch.complex128), self.d_state // 2
        if Lk == 0:  # C holds C itself: C~ = C (I - A_bar^L)
            C = C - _times_power(C, dA, L)
            Lk = L
        while Lk < L:  # C~_{2L} = C~_L (I + A_bar^L)
            C = C + _times_power(C, dA, Lk)
            Lk *= 2
        self.C.copy_(torch.view_as_real(C[..., :N2].to(self.C.dtype.to_complex()).contiguous()))
        self.l_kernel.fill_(Lk)

    def kernels(self, L: int, rate: float = 1.0, powers: tuple[int, ...] = (), L_powers: int = 0):
        """The kernels for B_bar^p come from the same Cauchy/Woodbury evaluation: B_bar^p (elementwise,
        eigenbasis) is mapped back to the continuous input vector B_p = (1/dt)(I - dt/2 A) B_bar^p,
        which the DPLR kernel discretizes to exactly B_bar^p."""
        lam, dt = self.Lambda(), self.dt(rate)
        P, B = torch.view_as_complex(self.P), torch.view_as_complex(self.B)
        Bs = B[None]
        if powers:
            dB = dplr_bilinear_B(lam, P, B, dt)
            Bp = dplr_bilinear_B_inverse(lam, P, torch.stack([dB**p for p in powers]), dt)
            Bs = torch.cat([Bs, Bp])  # (1 + len(powers), H, N/2)
        if rate == 1.0:
            self.setup_length(L)
            C, Lk = torch.view_as_complex(self.C), int(self.l_kernel)
        else:  # re-derive C~ for the new step size at exactly this length (in float64)
            dA, _ = self.dense(rate, wide=True)
            C = self.C_true(wide=True)
            C = (C - _times_power(C, dA, L))[..., : self.d_state // 2].to(lam.dtype)
            Lk = L
        K_hat = kernel_dplr_hat(lam, P, Bs, C, dt, Lk)  # (1 + len(powers), C', H, Lk // 2 + 1)
        if not powers:
            return torch.fft.irfft(K_hat[0], n=Lk)[..., :L], None
        if L_powers == 1:  # PB needs only K_p[0] = C B_bar^p
            return torch.fft.irfft(K_hat[0], n=Lk)[..., :L], irfft_first(K_hat[1:], Lk)[..., None]
        K = torch.fft.irfft(K_hat, n=Lk)
        return K[0, ..., :L], K[1:, ..., :L_powers]

    def discrete(self, rate: float = 1.0, liquid_degree: int | None = None) -> DiscreteSSM:
        dA, dB = self.dense(rate)
        C = self.C_true()[: self.channels, :, : self.d_state // 2]
        return DiscreteSSM(dA, dB, C, diagonal=False, conj=True, liquid_degree=liquid_degree)

    def recurrence(self, sys: DiscreteSSM, rate: float, extra_B: torch.Tensor | None = None):
        """The O(N) Woodbury form of the bilinear step, instead of the dense (N/2 x N) update."""
        P, B = torch.view_as_complex(self.P), torch.view_as_complex(self.B)
        return DPLRRecurrence(self.Lambda(), P, B, sys.C, self.dt(rate), extra_B)


class S4(SSMLayer):
    """DPLR SSM layer (see `DPLRKernel`): A = Lambda - P P^* in the eigenbasis of the normal part of
    a HiPPO matrix, bilinear discretization, kernel by Cauchy sums with a Woodbury correction.

    Lambda = -(1e-4 + exp(log_A_real_gap)) + i A_imag: Re Lambda < -1e-4 for any parameter value,
    with a gradient that never vanishes. LegS starts at its Lambda (Re = -1/2) up to rounding;
    LegT, LagT and FouT, whose normal parts have Re Lambda = 0, start at Re Lambda = -2e-4.

    Args as S4D, with init in (legs, legt, lagt, fout) and disc = bilinear only (the generating
    function of the DPLR kernel needs it; use S4D or LSSL for zoh). freeze: any of "A", "P", "B",
    "C", "dt".
    """

    kernel_class = DPLRKernel

    def __init__(self, d_model: int, d_state: int = 64, init: str = "legs", disc: str = "bilinear", **kwargs):
        super().__init__(d_model, d_state, init=init, disc=disc, **kwargs)
