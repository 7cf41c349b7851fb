"""glibc's allocator, set for a training process: keep freed memory for reuse.

By default glibc maps every allocation above a moving threshold (128 KiB to start) fresh from
the kernel and unmaps it when freed, and gives the top of the heap back above 128 KiB; a rank
that allocates the same activation, gradient and optimizer temporaries every microbatch then
page-faults them in again every time (1,000-2,000 faults per Adam step here) and its speed
depends on its allocation history. With both thresholds raised, freed memory stays in the
heap and is reused, as PyTorch's CUDA caching allocator (or jemalloc, which CPU training
guides preload) does: the process keeps its peak heap instead of returning it.

Every rank calls ``keep_freed_memory()`` at start (the launcher's forked ranks and torchrun's),
and so does the profiler's process, so profile and run allocate alike. A no-op where the C
library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest: only allocations above 32 MiB are mapped
TRIM_THRESHOLD = 1 << 30  # give the heap's top back to the kernel only above 1 GiB free


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds in this process; False where not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and \
        bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


__all__ = [
    "MMAP_THRESHOLD", "M_MMAP_THRESHOLD", "M_TRIM_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"
]
