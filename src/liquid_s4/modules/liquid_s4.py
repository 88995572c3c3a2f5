"""Liquid-S4 (Hasani et al. 2023, "Liquid Structural State-Space Models").

Per channel, the linearized liquid time-constant SSM

    dx/dt = (A + B u(t)) x(t) + B u(t),   y = C x + D u

is discretized like the base layer (bilinear for S4, zoh or bilinear for S4D) to

    x_k = (A_bar + diag(B_bar) u_k) x_{k-1} + B_bar u_k,   y_k = C x_k + D u_k.

"diag(B_bar)" and the elementwise power B_bar^p are taken in the coordinates in which the layer stores
its state: the eigenbasis of the normal part Lambda of A = Lambda - P P^* for S4, the diagonal for S4D
(conjugate pairs included: the conjugate half holds conj(B_bar)^p). Unrolling the recurrence gives the
plain convolution K_bar * u plus terms in products of inputs. With the correlation signal of degree p

    v^(p)_k = u_k u_{k-1} ... u_{k-p+1}     (inputs before the sequence start are 0; with state
                                            passing, the inputs of the previous chunk)

a chain of p - 1 liquid transitions in consecutive steps injects B_bar^p v^(p), which then evolves
under A_bar. For a maximum degree P >= 2 the two liquid kernels keep:

    PB:  y_k = (K_bar * u)_k + D u_k + sum_{p=2..P} (C B_bar^p) v^(p)_k          (chains read out at once, l = 0)
    KB:  y_k = (K_bar * u)_k + D u_k + sum_{p=2..P} (K_bar_p * v^(p))_k,  K_bar_p[l] = C A_bar^l B_bar^p

Every retained term is an exact term of the unrolled recurrence. Both are causal: y_k depends on u_{<=k}
only. The coefficients are computed from the live parameters A, (P,) B, C, dt at every call, so they
train. For S4, K_bar_p comes from the same Cauchy/Woodbury kernel as K_bar, with the continuous vector
B_p = (1/dt)(I - dt/2 A) B_bar^p in place of B; the PB coefficient C B_bar^p = K_bar_p[0] also comes from
there, because S4 stores C~ = C (I - A_bar^L) rather than C.

Recurrent mode: the state holds the SSM state and the last P - 1 inputs (from which v^(p)_k is formed).
KB's per-degree states x^(p)_k = A_bar x^(p)_{k-1} + B_bar^p v^(p)_k share A_bar and C with x, so only
their sum s_k = x_k + sum_p x^(p)_k enters the output y_k = C s_k + D u_k; the layer keeps that sum
(exactly equivalent, P - 1 fewer state vectors). step() equals forward().

Squashing (liquid_squash="tanh") replaces v^(p) by tanh(v^(p)) in both modes, bounding high degrees.

Bidirectional layers add an anti-causal half that runs the same recurrence backwards in time: its
liquid terms use the products of the following inputs, w^(p)_j = u_j u_{j+1} ... u_{j+p-1}, read out
as C_b B_bar^p w^(p)_{k+1} (PB) or sum_{j>k} C_b A_bar^{j-k-1} B_bar^p w^(p)_j (KB).
"""

from __future__ import annotations

from .s4 import S4


class LiquidS4(S4):
    """Liquid-S4: an S4 (DPLR, HiPPO-LegS) layer with liquid kernel terms (see the module docstring).

    Args as `S4`, plus liquid_kernel ("pb" (default) or "kb"), liquid_degree (P >= 2, default 2) and
    liquid_squash (None or "tanh"). Any S4 or S4D layer takes the same three arguments.
    """

    def __init__(
        self, d_model: int, d_state: int = 64, liquid_kernel: str = "pb", liquid_degree: int = 2, **kwargs
    ):
        if liquid_kernel is None:
            raise ValueError("LiquidS4: liquid_kernel must be 'pb' or 'kb' (for the plain layer use S4)")
        super().__init__(d_model, d_state, liquid_kernel=liquid_kernel, liquid_degree=liquid_degree, **kwargs)
