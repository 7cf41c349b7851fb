"""The reference kernel: a fixed matmul whose time says how fast this machine runs now.

    reference_call(calls)   the median time of ``calls`` calls, on this thread, now

``[64, 512] @ [512, 512]`` in float32 on one thread, as a rank computes. ``--predict`` times
it inside the processes that do the work: after every pass of the profile and, every few
steps, on every rank of the run (``TrainJob(probe_every=)``). The ratio of the two says
whether the machine, not the model, moved: on a shared machine the speed changes from one
second and one process to the next (here a process ran it in 0.36 ms, another in 0.65 ms
at the same moment), so a kernel timed in another process, before or after, misses it.
"""

from __future__ import annotations

import functools
import statistics
import time

import torch

__all__ = ["REFERENCE", "reference_call"]

REFERENCE = (64, 512, 512)  # [m, k] @ [k, n]


@functools.cache
def _operands() -> tuple[torch.Tensor, torch.Tensor]:
    m, k, n = REFERENCE
    gen = torch.Generator().manual_seed(0)
    return torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)


def reference_call(calls: int = 3) -> float:
    """The median seconds of ``calls`` calls of the reference kernel after one unmeasured
    call (which brings its operands into the caches), on the calling thread's torch threads."""
    a, w = _operands()
    a @ w
    times = []
    for _ in range(max(1, calls)):
        t0 = time.perf_counter()
        a @ w
        times.append(time.perf_counter() - t0)
    return statistics.median(times)
