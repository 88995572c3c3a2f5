"""tune_cpu_allocator: large blocks are reused instead of being page-faulted in on every allocation."""

import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
import liquid_s4
if sys.argv[1] == "tuned":
    assert liquid_s4.tune_cpu_allocator() and liquid_s4.tune_cpu_allocator()  # idempotent
for _ in range(4):  # warm up: the heap grows to hold the block
    x = torch.ones(16 << 20)  # 64 MiB, above glibc's mmap threshold
    del x
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    x = torch.ones(16 << 20)
    del x
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    out = subprocess.run([sys.executable, "-c", SCRIPT, mode], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_tuned_allocator_reuses_large_blocks():
    default, tuned = _faults("default"), _faults("tuned")
    pages = 5 * (64 << 20) // 4096
    assert default > pages // 2  # every 64 MiB tensor is faulted in again (16384 pages of 4 KiB each)
    assert tuned < pages // 20, (default, tuned)  # reused without new page faults
