"""Snapshots of a layer's own tensors, which key its cached kernels and step setup.

A cache entry is valid while the values it was computed from are unchanged, whatever changed them.
An in-place version counter alone cannot tell: `p.data.copy_(...)`, `p.data.add_(...)` (EMA and
weight-averaging updates) and writes through numpy views (`p.detach().numpy()[...] = ...`) go
through tensors with their own counter, or none. A snapshot therefore keeps a bitwise copy of the
values and compares it with the live tensors, after a cheap check of identity, storage, layout and
version counter (which catches `.data` assignment, `load_state_dict`, moves and dtype changes).

On CPU the contents are compared with the C library's memcmp over each contiguous tensor's bytes;
other tensors (other devices, other layouts, or no memcmp) with one `torch.equal` over all their
bytes (one device synchronization). The cost per call is in docs/performance.md.
"""

from __future__ import annotations

import ctypes
import os

import torch


def _load_memcmp():
    """libc's memcmp(a, b, n) through ctypes, or None where it cannot be loaded."""
    try:
        fn = (ctypes.cdll.msvcrt if os.name == "nt" else ctypes.CDLL(None)).memcmp
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t)
    fn.restype = ctypes.c_int
    return fn


_MEMCMP = _load_memcmp()


def _bytes(t: torch.Tensor) -> torch.Tensor:
    """The raw bytes of t as a flat uint8 tensor (a copy only where t is not contiguous)."""
    return t.detach().reshape(-1).view(torch.uint8)


class TensorSnapshot:
    """The state of a sequence of tensors at one moment: `matches(tensors)` is True iff they are
    the same tensor objects, with the same storage, layout, dtype and bitwise the same values."""

    __slots__ = ("_meta", "_raw", "_other", "_flat")

    def __init__(self, tensors):
        tensors = tuple(tensors)
        self._meta = tuple((t, (t.data_ptr(), t._version, t.shape, t.stride(), t.dtype)) for t in tensors)
        raw, other = (
            [],
            [],
        )  # contiguous CPU tensors: (index, live pointer, copy, copy pointer, bytes); others: index
        for i, t in enumerate(tensors):
            if _MEMCMP is not None and t.is_cpu and t.is_contiguous():
                c = t.detach().clone()
                raw.append((i, t.data_ptr(), c, c.data_ptr(), c.numel() * c.element_size()))
            else:
                other.append(i)
        self._raw, self._other = tuple(raw), tuple(other)
        # the other tensors' bytes in one flat copy: one comparison (one device synchronization on a GPU)
        self._flat = self._other_bytes(tensors) if other else None

    def matches(self, tensors) -> bool:
        meta = self._meta
        if len(tensors) != len(meta):
            return False
        for t, (obj, key) in zip(tensors, meta):
            if t is not obj or (t.data_ptr(), t._version, t.shape, t.stride(), t.dtype) != key:
                return False
        for (
            i,
            ptr,
            _,
            copy_ptr,
            n,
        ) in self._raw:  # same pointer and layout as at the snapshot: compare the bytes
            if not tensors[i].is_cpu or (n and _MEMCMP(ptr, copy_ptr, n)):
                return False
        return self._flat is None or torch.equal(self._other_bytes(tensors), self._flat)

    def _other_bytes(self, tensors) -> torch.Tensor:
        parts = [_bytes(tensors[i]) for i in self._other]
        return (
            torch.cat(parts) if len({p.device for p in parts}) == 1 else torch.cat([p.cpu() for p in parts])
        )
