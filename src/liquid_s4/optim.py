"""Optimizer parameter groups honouring the SSM parameters' hints."""

from __future__ import annotations

import torch.nn as nn

# the attribute that carries a parameter's hint: the name the official S4 code uses, so that its
# modules' hints are honoured here and ours by its training code
_HINT = "_optim"


def set_optim_hint(p: nn.Parameter, **hint) -> None:
    """Attach optimizer settings to one parameter (e.g. lr=1e-3, weight_decay=0.0), which
    `param_groups` turns into a parameter group of their own."""
    setattr(p, _HINT, dict(hint))


def optim_hint(p: nn.Parameter) -> dict | None:
    """The settings attached by `set_optim_hint`, or None."""
    return getattr(p, _HINT, None)


def param_groups(model: nn.Module, lr: float, weight_decay: float = 0.0) -> list[dict]:
    """Split a model's trainable parameters into torch.optim parameter groups.

    - SSM parameters (A, P, B, dt) carry a hint {"lr": ..., "weight_decay": 0.0} set by the layers
      (`lr` argument, `set_optim_hint`); each distinct hint becomes its own group.
    - Biases, normalization weights and other 1-d parameters get weight decay 0.
    - Everything else gets (lr, weight_decay).

    Example: torch.optim.AdamW(param_groups(model, lr=3e-3, weight_decay=0.05))
    """
    decay, no_decay, hinted = [], [], {}
    for _, module in model.named_modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            hint = optim_hint(p)
            if hint is not None:
                hinted.setdefault(tuple(sorted(hint.items())), []).append(p)
            elif (
                p.dim() < 2
                or name.endswith("bias")
                or isinstance(module, (nn.LayerNorm, nn.modules.batchnorm._NormBase, nn.GroupNorm))
            ):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "lr": lr, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "lr": lr, "weight_decay": 0.0})
    for hint, params in hinted.items():
        groups.append({"params": params, "lr": lr, "weight_decay": weight_decay, **dict(hint)})
    return groups
