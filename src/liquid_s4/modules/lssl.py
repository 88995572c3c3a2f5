"""LSSL: the linear state-space layer with a dense HiPPO matrix (Gu et al. 2021, "Combining
Recurrent, Convolutional, and Continuous-time Models with Linear State-Space Layers")."""

from __future__ import annotations

import torch

from ..ops.discretize import discretize_dense
from ..ops.hippo import MEASURES, transition
from ..ops.kernels import krylov
from ..ops.state import DiscreteSSM
from .kernel import SSMKernel
from .layer import SSMLayer


class DenseKernel(SSMKernel):
    """The LSSL kernel: a real N-dimensional state per channel,

        x_k = A_bar x_{k-1} + B_bar u_k,  y_k = C x_k,  K_bar[l] = C A_bar^l B_bar

    A (N, N) is one HiPPO matrix shared by all channels (trainable unless frozen); each channel has
    its own dt, B and C. disc: bilinear (generalized bilinear with alpha = 1/2) or zoh (matrix
    exponential). K by blocked Krylov products (`krylov`)."""

    inits = MEASURES
    discs = ("bilinear", "zoh")
    parameter_groups = ("A", "B", "C", "dt")
    complex_state = False
    modal = False

    def __init__(self, d_model: int, d_state: int, init: str = "legs", **kwargs):
        super().__init__(d_model=d_model, d_state=d_state, init=init, **kwargs)
        H, N = d_model, d_state
        A, B = transition(init, N)
        self.register_ssm_parameter("A", A.float(), "A")
        self.register_ssm_parameter("B", B.float().expand(H, N).clone(), "B")
        self.register_ssm_parameter("C", torch.randn(self.out_channels, H, N) / N**0.5, "C", ssm_lr=False)
        self.register_ssm_parameter("log_dt", self.initial_log_dt(), "dt")

    def dense(self, rate: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_bar, B_bar): (H, N, N), (H, N)."""
        A = self.A.expand(self.d_model, -1, -1)
        return discretize_dense(self.disc, A, self.B, self.dt(rate))

    def kernels(self, L: int, rate: float = 1.0, powers: tuple[int, ...] = (), L_powers: int = 0):
        dA, dB = self.dense(rate)
        return krylov(dA, dB, self.C, L), None  # (C', H, L)

    def discrete(self, rate: float = 1.0, liquid_degree: int | None = None) -> DiscreteSSM:
        dA, dB = self.dense(rate)
        return DiscreteSSM(dA, dB, self.C[: self.channels], diagonal=False, conj=False)


class LSSL(SSMLayer):
    """Dense SSM layer (see `DenseKernel`) with a real N-dimensional state per channel:

        x_k = A_bar x_{k-1} + B_bar u_k,  y_k = C x_k + D u_k,  K_bar[l] = C A_bar^l B_bar

    d_state may be odd. freeze: any of "A", "B", "C", "dt". Liquid kernels are not defined for it
    (they need the state in diagonal coordinates: use S4 or S4D).
    """

    kernel_class = DenseKernel

    def __init__(self, d_model: int, d_state: int = 64, init: str = "legs", disc: str = "bilinear", **kwargs):
        super().__init__(d_model, d_state, init=init, disc=disc, **kwargs)
