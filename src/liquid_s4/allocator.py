"""CPU allocator tuning for long sequences.

glibc serves every allocation above its mmap threshold (at most 32 MiB) with a fresh mmap and returns
it to the system on free, so each large temporary of a forward/backward pass is page-faulted in again
on every call, which for long sequences is a large share of an S4 layer's time. Keeping freed memory
in the heap instead (as PyTorch's GPU caching allocator does) removes those faults. The cost: the
process keeps its peak memory instead of giving it back between steps.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
_applied = False


def tune_cpu_allocator() -> bool:
    """Make glibc's malloc serve large blocks from the heap and keep freed memory for reuse
    (mallopt M_MMAP_MAX = 0, and M_TRIM_THRESHOLD = -1: never trim the heap), for the whole process
    and from now on. A finite trim threshold (mallopt takes at most 2 GiB) is not enough: a training
    step whose peak exceeds it gives the top of the heap back and faults it in again on the next step.

    Like starting Python with MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=1099511627776 (1 TiB). Returns
    True when applied, False where it does not apply (not Linux/glibc). `liquid-s4 train` calls it
    unless trainer.tune_allocator is false; call it once at the start of your own training script.
    """
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other C libraries have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    _applied = bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, -1))
    return _applied
