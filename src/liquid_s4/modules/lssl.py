"""LSSL: the linear state-space layer with a dense HiPPO matrix (Gu et al. 2021, "Combining
Recurrent, Convolutional, and Continuous-time Models with Linear State-Space Layers")."""

from __future__ import annotations

import torch

from ..ops.discretize import discretize_dense
from ..ops.hippo import MEASURES, transition
from ..ops.kernels import krylov
from ..ops.state import DiscreteSSM
from .base import SSMLayer


class LSSL(SSMLayer):
    """Dense SSM layer with a real N-dimensional state per channel:

        x_k = A_bar x_{k-1} + B_bar u_k,  y_k = C x_k + D u_k,  K_bar[l] = C A_bar^l B_bar

    A (N, N) is one HiPPO matrix shared by all channels (trainable unless frozen); each channel
    has its own dt, B and C. disc: bilinear (generalized bilinear with alpha = 1/2) or zoh
    (matrix exponential). The kernel is computed by blocked Krylov products (`krylov`).
    d_state may be odd. freeze: any of "A", "B", "C", "dt".
    """

    inits = MEASURES
    discs = ("bilinear", "zoh")
    ssm_parameter_names = ("A", "B", "C", "dt")
    even_state = False

    def __init__(self, d_model: int, d_state: int = 64, init: str = "legs", disc: str = "bilinear", **kwargs):
        super().__init__(d_model, d_state, init=init, disc=disc, **kwargs)

    def _init_ssm(self) -> None:
        H, N = self.d_model, self.d_state
        n_c = self.channels * (2 if self.bidirectional else 1)
        A, B = transition(self.init, N)
        self._register("A", A.float(), "A")
        self._register("B", B.float().expand(H, N).clone(), "B")
        self._register("C", torch.randn(n_c, H, N) / N**0.5, "C", ssm_lr=False)
        self._register("log_dt", self._init_log_dt(), "dt")

    def dense(self, rate: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_bar, B_bar): (H, N, N), (H, N)."""
        A = self.A.expand(self.d_model, -1, -1)
        return discretize_dense(self.disc, A, self.B, self._dt(rate))

    supports_liquid = False

    def _kernels(self, L: int, rate: float = 1.0, powers: tuple[int, ...] = (), L_powers: int = 0):
        dA, dB = self.dense(rate)
        return krylov(dA, dB, self.C, L), None  # (C, H, L)

    def discrete(self, rate: float = 1.0) -> DiscreteSSM:
        dA, dB = self.dense(rate)
        return DiscreteSSM(dA, dB, self.C[: self.channels], diagonal=False, conj=False)
