"""The output block of an SSM layer: activation, dropout and the position-wise output projection
(linear, optionally followed by a GLU), for whole sequences and for one step."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..utils import has_forward_hooks

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


def activation_step(act: nn.Module, y: torch.Tensor) -> torch.Tensor:
    """`act(y)` for one step's small (B, H) tensor. PyTorch sends exact GELU of a contiguous float
    CPU tensor to oneDNN, whose per-call setup dominates at this size, and its own vectorized kernel
    otherwise. Called on a non-contiguous view of y (the (2, B*H/2) reshape, transposed) it runs
    that kernel: the same function, `nn.functional.gelu(y)` itself. Nothing process-wide is touched
    (other threads' oneDNN use is unaffected). Other activations, and sizes without such a view, are
    called as they are."""
    if type(act) is nn.GELU and y.device.type == "cpu" and y.is_contiguous() and y.numel() % 2 == 0:
        if y.numel() >= 4:
            return nn.functional.gelu(y.view(2, -1).t(), approximate=act.approximate).t().reshape(y.shape)
    return act(y)


class OutputBlock(nn.Module):
    """y -> projection(dropout(activation(y))), position-wise over d_in = channels * H features.

    `projection` is nn.Linear(d_in, H) (postact "linear"), nn.Linear(d_in, 2H) followed by a GLU
    ("glu"), both as an nn.Sequential, or nn.Identity (None). The block's own projection is applied
    functionally (the same maths without module calls, and without leaving the channels-first
    layout); a replaced projection, or one with forward hooks, is called as a module.
    """

    def __init__(self, d_in: int, d_model: int, activation: str | None, dropout: float, postact: str | None):
        super().__init__()
        self.activation = ACTIVATIONS[activation]()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if postact is None:
            self.projection = nn.Identity()
        else:
            out = 2 * d_model if postact == "glu" else d_model
            glu = nn.GLU(-1) if postact == "glu" else nn.Identity()
            self.projection = nn.Sequential(nn.Linear(d_in, out), glu)
        # the block's own projection, for `_plain` (a tuple: not registered as submodules)
        self._own = (
            (self.projection, self.projection[0], postact == "glu") if postact else (None, None, False)
        )

    def _plain(self):
        """(Linear, glu) of the block's own projection, to apply functionally; None when there is none
        (postact=None), or it was replaced or has forward hooks (then it is called as a module)."""
        seq, lin, glu = self._own
        if seq is None or self._modules["projection"] is not seq or has_forward_hooks(seq, lin):
            return None
        return lin, glu

    def forward(self, y: torch.Tensor, dtype: torch.dtype, transposed: bool = False) -> torch.Tensor:
        """y (B, d_in, L) channels-first, computed in the SSM's precision -> (B, L, H), or (B, H, L) if
        transposed. The activation runs in y's precision; the projection in `dtype` (that of a
        float16/bfloat16 layer: the SSM part stays float32)."""
        y = self.dropout(self.activation(y))
        if y.dtype != dtype:
            y = y.to(dtype)
        if not transposed:
            return self.projection(y.transpose(1, 2))
        plain = self._plain()
        if plain is None:
            return self.projection(y.transpose(1, 2)).transpose(1, 2)
        # the projection W y + b as one batched product, channels-first: a transposed round trip
        # would make every element-wise op around it strided, and strided passes are slower on CPU
        lin, glu = plain
        z = torch.baddbmm(lin.bias[:, None], lin.weight.expand(y.shape[0], -1, -1), y)  # (B, 2H or H, L)
        return nn.functional.glu(z, 1) if glu else z

    def step(self, y: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """`forward` for one step: y (B, d_in) -> (B, H)."""
        y = activation_step(self.activation, y)
        if self.training and type(self.dropout) is not nn.Identity:
            y = self.dropout(y)
        if y.dtype != dtype:
            y = y.to(dtype)
        plain = self._plain()
        if plain is None:
            return self.projection(y)
        lin, glu = plain
        y = nn.functional.linear(y, lin.weight, lin.bias)
        return nn.functional.glu(y, -1) if glu else y
