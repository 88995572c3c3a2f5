"""One cached value computed from a set of tensors, valid while those tensors are unchanged.

The layers keep two (the inference kernels and the step set-up) and `CUDAGraphStep` one (the
captured graph), all keyed the same way: by the call's arguments and a `TensorSnapshot` of the
tensors the value was computed from, so that no way of changing a parameter (in place, through
`.data` or a numpy view, `load_state_dict`, an EMA update, moving or converting the module) can leave
a stale value in use.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch

from .snapshot import TensorSnapshot


class TensorCache:
    """cache.get(args, tensors, compute) returns compute() and keeps it; later calls with equal `args`,
    while every one of `tensors()` is bitwise the same tensor with the same values, return the kept
    value.

        cache = TensorCache()
        K = cache.get((L, rate), module.tensors, lambda: kernel(L, rate))

    One entry: a new value replaces (and frees) the old one. `clear()` drops it. The cache holds no
    reference to its owner (the tensors are read through the callable passed to each call), so an
    owner and its cached values are freed as soon as the owner is. Copies and pickles of an owner
    should leave the entry behind (the owners' `__getstate__` do)."""

    __slots__ = ("_entry",)

    def __init__(self):
        self._entry: tuple[Hashable, TensorSnapshot, Any] | None = None

    def get(
        self, args: Hashable, tensors: Callable[[], tuple[torch.Tensor, ...]], compute: Callable[[], Any]
    ):
        entry = self._entry
        if entry is not None and entry[0] == args and entry[1].matches(tensors()):
            return entry[2]
        self._entry = None  # free the old value before computing the new one
        value = compute()
        # the snapshot is taken after the call: computing may itself update a tensor (S4 rescales
        # C~ when a longer sequence arrives), and the value describes the tensors as they are now
        self._entry = (args, TensorSnapshot(tensors()), value)
        return value

    def peek(self) -> Any:
        """The kept value (None if there is none), whether or not it is still valid."""
        return None if self._entry is None else self._entry[2]

    def is_valid(self, tensors: Callable[[], tuple[torch.Tensor, ...]]) -> bool:
        """Whether a value is kept and `tensors()` are unchanged since it was computed."""
        return self._entry is not None and self._entry[1].matches(tensors())

    def clear(self) -> None:
        self._entry = None
