"""glibc's allocator told to keep freed memory for reuse, for our command lines.

XLA's CPU runtime allocates the temporary buffer of every call afresh: 185 MB for a 256²
stylisation, 2.07 GB for a training step at batch 8, 256². glibc serves such sizes with
new memory maps and unmaps them on free, so every call faults all of its pages in again
and the kernel zeroes them: 550,000 page faults and 18 to 21 s of system time per
training step (against 18 s of user time) on a 2-core EPYC VM whose host was busy, where
the same step took 9 to 10 s with the memory kept (benchmarks/bench.py, README). So the
command lines (`adain_jax.cli.run_main`) and benchmarks ask glibc, before JAX starts its
threads, to serve every thread from one heap (`M_ARENA_MAX` 1: other heaps cannot hold
blocks over 64 MB), never to map large blocks apart (`M_MMAP_MAX` 0) and never to give
freed memory back (`M_TRIM_THRESHOLD` -1): the process keeps its peak size, and later
calls reuse it without faults. Library users can set the same for their process with
`GLIBC_TUNABLES=glibc.malloc.arena_max=1:glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=18446744073709551615`
or call `keep_freed_memory()` first thing. ADAIN_JAX_KEEP_MEMORY=0 turns it off; other
C libraries (musl, macOS, Windows) are left alone.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

M_TRIM_THRESHOLD, M_MMAP_MAX, M_ARENA_MAX = -1, -4, -8  # glibc's <malloc.h>
SETTINGS = ((M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1))  # -1: never trim


def keep_freed_memory() -> bool:
    """Apply SETTINGS with mallopt(3) where the C library is glibc; True if it was done.

    Threads created before the call keep the heap they already use, so call it before
    JAX (or anything else) starts threads.
    """
    if os.environ.get("ADAIN_JAX_KEEP_MEMORY", "1") == "0":
        return False
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return all(mallopt(option, value) == 1 for option, value in SETTINGS)
