"""Small helpers shared across the package: masks from sequence lengths and argument checks."""

from __future__ import annotations

import torch


def is_positive_int(value) -> bool:
    """Whether `value` is a Python integer >= 1 (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def lengths_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """(B, L) boolean mask of right-padded sequences: True at the positions t < lengths[b]."""
    return torch.arange(L, device=lengths.device) < lengths[:, None]
