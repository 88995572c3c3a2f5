"""Checks of the SSM layers' constructor arguments, before anything is built."""

from __future__ import annotations

from ..ops.liquid import SQUASHES
from ..utils import is_positive_int
from .block import ACTIVATIONS, POSTACTS
from .kernel import SSMKernel

LIQUID_KERNELS = (None, "pb", "kb", "scan")
LIQUID_FORMS = ("discrete", "split", "ode")


def check_layer_arguments(name: str, cls: type[SSMKernel], **a) -> None:
    """A ValueError naming the argument, the value and what is expected, for the first invalid
    constructor argument of the layer `name` with the kernel family `cls`."""
    for arg in ("d_model", "d_state", "channels"):
        if not is_positive_int(a[arg]):
            raise ValueError(f"{name}: {arg} must be a positive integer, got {a[arg]!r}")
    d_state, channels, liquid_degree = a["d_state"], a["channels"], a["liquid_degree"]
    if cls.complex_state and d_state % 2:
        raise ValueError(
            f"{name}: d_state must be even (modes are stored as N/2 conjugate pairs), got {d_state}; "
            f"use {d_state + 1} or {d_state - 1}"
        )
    l_max = a["l_max"]
    if l_max is not None and (not isinstance(l_max, int) or l_max < 1):
        raise ValueError(f"{name}: l_max must be a positive integer or None (any length), got {l_max!r}")
    if not (0 < a["dt_min"] <= a["dt_max"]):
        raise ValueError(f"{name}: need 0 < dt_min <= dt_max, got dt_min={a['dt_min']}, dt_max={a['dt_max']}")
    if a["init"] not in cls.inits:
        raise ValueError(f"{name}: unknown init {a['init']!r}; expected one of {cls.inits}")
    if a["disc"] not in cls.discs:
        raise ValueError(f"{name}: unsupported disc {a['disc']!r}; expected one of {cls.discs}")
    if a["activation"] not in ACTIVATIONS:
        raise ValueError(
            f"{name}: unknown activation {a['activation']!r}; expected one of {list(ACTIVATIONS)}"
        )
    if a["postact"] not in POSTACTS:
        raise ValueError(f"{name}: unknown postact {a['postact']!r}; expected one of {POSTACTS}")
    if a["postact"] is None and channels != 1:
        raise ValueError(
            f"{name}: channels={channels} needs an output projection; set postact='linear' or 'glu'"
        )
    if not 0.0 <= a["dropout"] < 1.0:
        raise ValueError(f"{name}: dropout must be in [0, 1), got {a['dropout']}")
    if a["liquid_kernel"] not in LIQUID_KERNELS:
        raise ValueError(
            f"{name}: unknown liquid_kernel {a['liquid_kernel']!r}; expected one of {LIQUID_KERNELS}"
        )
    if a["liquid_kernel"] == "scan" and not cls.diagonal:
        raise ValueError(
            f"{name}: liquid_kernel='scan' needs a diagonal state matrix (with a dense or low-rank A every "
            "step is an N x N product); use S4D, whose init='legs' gives the diagonal part of S4's HiPPO "
            "matrix: S4D(d_model, d_state, init='legs', liquid_kernel='scan')"
        )
    if a["liquid_kernel"] is not None and not cls.modal:
        raise ValueError(
            f"{name}: liquid kernels are defined for S4 and S4D (state in diagonal coordinates); "
            "use one of those"
        )
    if a["liquid_form"] not in LIQUID_FORMS:
        raise ValueError(f"{name}: unknown liquid_form {a['liquid_form']!r}; expected one of {LIQUID_FORMS}")
    if a["liquid_form"] in ("split", "ode") and a["disc"] != "zoh":
        raise ValueError(
            f"{name}: liquid_form={a['liquid_form']!r} discretizes the liquid ODE by zero-order hold; set "
            f"disc='zoh' (got disc={a['disc']!r})"
        )
    if a["liquid_form"] != "discrete" and a["liquid_kernel"] != "scan":
        raise ValueError(
            f"{name}: liquid_form={a['liquid_form']!r} is a form of the exact scan; set liquid_kernel='scan'"
        )
    if not isinstance(liquid_degree, int) or isinstance(liquid_degree, bool) or liquid_degree < 2:
        raise ValueError(
            f"{name}: liquid_degree must be an integer >= 2 (the highest input product), "
            f"got {liquid_degree!r}"
        )
    if a["liquid_squash"] not in SQUASHES:
        raise ValueError(f"{name}: unknown liquid_squash {a['liquid_squash']!r}; expected one of {SQUASHES}")
    unknown = set(a["freeze"]) - set(cls.parameter_groups)
    if unknown:
        raise ValueError(f"{name}: cannot freeze {sorted(unknown)}; freezable: {cls.parameter_groups}")
