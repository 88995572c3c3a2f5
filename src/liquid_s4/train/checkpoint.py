"""Training checkpoints (.ckpt) that are written atomically and checked when read.

Every checkpoint carries a sha256 of its contents under the key `liquid_s4_sha256`: every tensor's
path in the checkpoint, dtype, shape and bytes (model weights, optimizer moments, RNG state, ...) and
the value of every plain entry (epoch, step, learning rates, hyperparameters, loop counters). Loading
recomputes it, so a changed byte anywhere in the data gives a `CheckpointError` instead of a model
that trains on from corrupted weights. Checkpoints written before the checksum existed load unchecked.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ..fileio import atomic_write
from .pl import L

CHECKSUM_KEY = "liquid_s4_sha256"


class CheckpointError(ValueError):
    """A checkpoint is corrupt, truncated or not a training checkpoint."""


class CheckpointWriteError(OSError, CheckpointError):
    """A checkpoint could not be written (full disk, read-only or forbidden folder); the previous
    checkpoint files are unchanged. An OSError (with the original errno) and a CheckpointError."""


def state_digest(obj: Any) -> str:
    """sha256 over a nested checkpoint structure (dicts in their order, lists, tuples): for each
    tensor its path, dtype, shape and raw bytes; for each number, string, bool or None its path and
    repr (exact for floats); for any other object only its path and type name."""
    h = hashlib.sha256()
    _update(h, "", obj)
    return h.hexdigest()


def _update(h, path: str, obj: Any) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().resolve_conj().resolve_neg().cpu().contiguous().reshape(-1)
        h.update(f"{path}:{t.dtype}{tuple(obj.shape)}\n".encode())
        h.update(t.view(torch.uint8).numpy().data)
    elif isinstance(obj, np.ndarray):
        h.update(f"{path}:{obj.dtype}{obj.shape}\n".encode())
        h.update(np.ascontiguousarray(obj).view(np.uint8).data)
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _update(h, f"{path}/{k!r}", v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{path}:{type(obj).__name__}{len(obj)}\n".encode())
        for i, v in enumerate(obj):
            _update(h, f"{path}/{i}", v)
    elif obj is None or isinstance(obj, (bool, int, float, complex, str, bytes)):
        h.update(f"{path}={obj!r}\n".encode())
    else:
        h.update(f"{path}:{type(obj).__qualname__}\n".encode())


def _load_checked(path: str, load) -> dict:
    """`load(path)` with every failure (unreadable, truncated, wrong checksum, not a checkpoint) as a
    CheckpointError describing the problem; the checksum entry is removed from the result."""
    try:
        ckpt = load(path)
    except FileNotFoundError:
        raise
    except Exception as e:  # torch.load raises RuntimeError, EOFError, UnpicklingError, ... for damaged files
        raise CheckpointError(f"it cannot be read ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise CheckpointError("it is not a training checkpoint written by liquid-s4 train (no state_dict)")
    stored = ckpt.pop(CHECKSUM_KEY, None)
    if stored is not None and stored != state_digest(ckpt):
        raise CheckpointError(
            "its contents do not match the sha256 stored when it was written (bytes were changed or lost)"
        )
    return ckpt


def _torch_load(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)  # as Lightning loads it


def checkpoint_files(directory: str) -> list[str]:
    """The .ckpt files in `directory` (not the temporary files of a write in progress), sorted; none
    if the folder does not exist or cannot be read."""
    try:
        names = sorted(f for f in os.listdir(directory) if f.endswith(".ckpt") and not f.startswith(".tmp-"))
    except OSError:
        return []
    return [os.path.join(directory, f) for f in names]


def sort_intact(paths) -> tuple[list[tuple[str, dict]], list[str]]:
    """([(path, checkpoint)] of the checkpoints among `paths` that load and verify, [the others])."""
    intact, damaged = [], []
    for path in paths:
        try:
            intact.append((path, _load_checked(path, _torch_load)))
        except (CheckpointError, OSError):
            damaged.append(path)
    return intact, damaged


def _advice(path: str) -> str:
    """What the other checkpoints in the folder look like (each verified) and what to do."""
    own = os.path.abspath(path)
    intact, damaged = sort_intact(p for p in checkpoint_files(os.path.dirname(own)) if p != own)
    damaged = [os.path.basename(p) for p in damaged]
    if intact:
        described = (
            f"{os.path.basename(p)} (epoch {c.get('epoch')}, step {c.get('global_step')})" for p, c in intact
        )
        other, found = intact[0][0], f"Intact: {', '.join(described)}."
        if os.path.basename(path) == "last.ckpt":
            return (
                f"{found} To continue from there, copy it over last.ckpt (cp {other} {path}) and --resume, "
                "or start a new run."
            )
        return f"{found} Use that one instead (e.g. liquid-s4 eval {other})."
    if damaged:
        return (
            f"The other checkpoints in that folder are damaged too ({', '.join(damaged)}): start a new run."
        )
    return "There is no other checkpoint in that folder: start a new run."


def verify_checkpoint(path: str | os.PathLike) -> None:
    """Raise a CheckpointError if the checkpoint at `path` is corrupt, truncated or has a wrong
    checksum; the message says which other checkpoints in its folder are intact and what to do."""
    load_checkpoint(path)


def load_checkpoint(path: str | os.PathLike, load=_torch_load) -> dict:
    """The checkpoint at `path` (on the CPU by default), verified (see `verify_checkpoint`)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path} not found")
    try:
        return _load_checked(path, load)
    except CheckpointError as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated: {e}. {_advice(path)}") from e


class AtomicCheckpointIO(L.pytorch.plugins.io.TorchCheckpointIO):
    """Lightning's checkpoint writer and reader with two guarantees: a checkpoint is written to a
    temporary file in the same folder and renamed into place (an interrupted or failed write leaves
    the previous file as it was), and it carries a sha256 of its contents that every load verifies."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO.save_checkpoint takes no storage_options")
        path = os.fspath(path)
        data = {**checkpoint, CHECKSUM_KEY: state_digest(checkpoint)}

        def write(tmp: str) -> None:
            with open(
                tmp, "wb"
            ) as f:  # a file object: a full disk raises OSError(ENOSPC), not a RuntimeError
                torch.save(data, f)

        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            atomic_write(path, write)
        except OSError as e:
            raise _write_error(path, e) from e

    def load_checkpoint(self, path, *args, **kwargs):
        return load_checkpoint(
            path, lambda p: super(AtomicCheckpointIO, self).load_checkpoint(p, *args, **kwargs)
        )


def _write_error(path: str, e: OSError) -> CheckpointWriteError:
    directory = os.path.dirname(os.path.abspath(path))
    kept = [os.path.basename(p) for p in checkpoint_files(directory)]
    if kept:
        state = f"the previous checkpoints there ({', '.join(kept)}) are intact: nothing was replaced"
        then = "continue the run with --resume"
    else:
        state, then = "no earlier checkpoint was written there", "start the run again"
    return CheckpointWriteError(
        e.errno,
        f"could not write checkpoint {path} ({e.strerror or e}); {state}. Free disk space or make "
        f"{directory} writable, then {then}",
    )
