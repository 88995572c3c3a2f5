"""Liquid-S4 (Hasani et al. 2023, "Liquid Structural State-Space Models"): an S4 layer with the liquid
kernel terms. The definitions (PB and KB kernels, correlation signals, the recurrent form, squashing,
bidirectional layers) are in `liquid_s4.ops.liquid`; any S4 or S4D layer takes the same arguments."""

from __future__ import annotations

from .s4 import S4


class LiquidS4(S4):
    """Liquid-S4: an S4 (DPLR, HiPPO-LegS) layer with liquid kernel terms (see `liquid_s4.ops.liquid`).

    Args as `S4`, plus liquid_kernel ("pb" (default) or "kb"), liquid_degree (P >= 2, default 2) and
    liquid_squash (None or "tanh"). Any S4 or S4D layer takes the same three arguments.
    """

    def __init__(
        self, d_model: int, d_state: int = 64, liquid_kernel: str = "pb", liquid_degree: int = 2, **kwargs
    ):
        if liquid_kernel is None:
            raise ValueError("LiquidS4: liquid_kernel must be 'pb' or 'kb' (for the plain layer use S4)")
        super().__init__(d_model, d_state, liquid_kernel=liquid_kernel, liquid_degree=liquid_degree, **kwargs)
