"""Small helpers shared across the package: masks from sequence lengths, argument checks, hooks."""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.nn.modules import module as _module_hooks


def is_positive_int(value) -> bool:
    """Whether `value` is a Python integer >= 1 (a bool is not)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def lengths_mask(lengths: torch.Tensor, L: int) -> torch.Tensor:
    """(B, L) boolean mask of right-padded sequences: True at the positions t < lengths[b]."""
    return torch.arange(L, device=lengths.device) < lengths[:, None]


def has_forward_hooks(*modules: nn.Module) -> bool:
    """Whether forward hooks (global, or on one of `modules`) would see a call of these modules: fast
    paths that apply a module's maths functionally fall back to calling the module when they would."""
    if _module_hooks._global_forward_hooks or _module_hooks._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)
