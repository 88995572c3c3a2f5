"""Checks that run before training: anything that would otherwise fail after the data is loaded, the
run folder is created or an epoch is trained (or with a traceback from deep inside Lightning) is
refused up front with a ValueError that says what was expected and what to do.

`train()` calls `check_run(config, out)` before it loads the data or creates anything; the checks
write nothing (the write test in the output folder creates one temporary file and removes it at once).
`NonFiniteLossError` is what training raises at the first NaN/inf loss (see module.py).
"""

from __future__ import annotations

import inspect
import os
import tempfile

import torch

from .config import RunConfig

__all__ = ["NonFiniteLossError", "check_devices", "check_model", "check_run", "check_writable"]


class NonFiniteLossError(RuntimeError):
    """Training stopped because a loss became NaN or infinite (the message names where and the last
    good checkpoint). Not a usage error: the command line exits with status 1."""


def check_run(config: RunConfig, out: str | None) -> None:
    """All pre-flight checks of a run that will write into `out` (None: a new folder under runs/)."""
    check_model(config)
    check_devices(config)
    check_writable(out if out is not None else "runs")


def check_model(config: RunConfig) -> None:
    """Build one residual block of the configured model (real d_model and layer_args; the input and
    output sizes come from the data later and do not matter here): bad layer_args fail now."""
    from ..models.sequence import LAYERS, ResidualBlock

    mc = config.model
    cls = LAYERS[mc.layer]
    unknown = sorted(set(mc.layer_args) - set(layer_keys(cls)))
    if unknown:
        raise ValueError(
            f"unknown model.layer_args {unknown} for layer {mc.layer!r} ({cls.__name__}); valid keys: "
            f"{layer_keys(cls)}"
        )
    try:
        ResidualBlock(mc)
    except (TypeError, ValueError) as e:
        raise ValueError(f"invalid model.layer_args for layer {mc.layer!r}: {e}") from None


def layer_keys(cls) -> list[str]:
    """The keyword arguments a layer class takes (its __init__ and the base classes its **kwargs go
    to), except d_model and transposed, which the model sets."""
    keys: list[str] = []
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        keys += [
            p.name
            for p in params
            if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in keys
        ]
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            break
    return [k for k in keys if k not in ("self", "d_model", "transposed")]


def check_devices(config: RunConfig) -> None:
    """The accelerator exists on this machine and trainer.devices fits it (the values themselves
    were checked by RunConfig.validate)."""
    t = config.trainer
    acc, devices = str(t.accelerator), t.devices
    if acc in ("gpu", "cuda") and not torch.cuda.is_available():
        build = (
            "this torch build has no CUDA support"
            if torch.version.cuda is None
            else "no GPU is visible to it"
        )
        raise ValueError(
            f"--accelerator {acc}: torch {torch.__version__} finds no CUDA GPU (torch.cuda.is_available() is "
            f"False; {build}). Use --accelerator cpu (or auto), or run on a machine with a GPU and a CUDA "
            "build of torch"
        )
    if acc == "mps" and not torch.backends.mps.is_available():
        raise ValueError(
            "--accelerator mps: the Apple GPU (MPS) is not available here; use --accelerator cpu (or auto)"
        )
    on_gpu = acc in ("gpu", "cuda") or (acc == "auto" and torch.cuda.is_available())
    indices = devices if isinstance(devices, list) else None
    if isinstance(devices, str) and devices != "auto":
        indices = [int(i) for i in devices.split(",") if i.strip()]
    if not on_gpu:
        if indices is not None:
            raise ValueError(
                f"trainer.devices={devices!r} selects GPUs by index, but training runs on the CPU; pass a "
                "number of processes instead (e.g. --devices 2), or --accelerator gpu on a GPU machine"
            )
        return
    n = torch.cuda.device_count()
    wanted = (
        indices
        if indices is not None
        else list(range(devices))
        if isinstance(devices, int) and devices > 0
        else []
    )
    if any(i >= n for i in wanted):
        raise ValueError(
            f"trainer.devices={devices!r} needs more GPUs than the {n} visible here (GPU indices "
            f"0..{n - 1}); pass --devices with at most that many"
        )


def check_writable(out: str) -> None:
    """The run can write into `out`: the folder (or its nearest existing parent, where `out` will be
    created) accepts a new file, and so do the run's existing checkpoints/ and logs/ folders. The
    test file is created and removed at once; nothing else is written."""
    target = os.path.abspath(out)
    existing = target
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise ValueError(
            f"cannot write the run's files to {out}: {existing} is a file, not a folder; choose another "
            "--output-dir"
        )
    folders = [existing] + [
        os.path.join(target, d) for d in ("checkpoints", "logs") if os.path.isdir(os.path.join(target, d))
    ]
    for folder in folders:
        try:
            fd, probe = tempfile.mkstemp(prefix=".tmp-write-check-", dir=folder)
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise ValueError(
                f"cannot write the run's files to {out}: {folder} is not writable ({e.strerror or e}). "
                "Choose another --output-dir or make that folder writable; nothing was written"
            ) from None
