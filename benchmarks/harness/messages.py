"""Bytes per second of pipesim's activation transfer (``Comm``) vs raw gloo, between two ranks.

Rank 0 sends ``count`` float32 tensors of ``mib`` MiB to rank 1, three ways, interleaved:

    raw      dist.send / dist.recv into one preallocated buffer (the floor of what gloo does)
    raw-new  dist.send / dist.recv into a fresh torch.empty per message (what Comm allocates)
    pipesim  Comm.send / Comm.prefetch (two ahead, as the engine) / Comm.recv / Comm.finish

A transfer's time is the receiver's, from a shared barrier to its last byte.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .common import launch_options, median

WAYS = ("raw", "raw-new", "pipesim")


@dataclass(frozen=True)
class MessageCase:
    mib: int
    count: int  # messages per timed transfer
    reps: int = 5  # timed transfers per way (after one untimed)


def run_messages(case: MessageCase) -> dict[str, Any]:
    """Two forked ranks; returns MiB/s per way and pipesim's fraction of raw."""
    from pipesim.processes.launch import launch

    seconds: dict[str, list[float]] = launch(_Worker(case), 2, launch_options(1))
    nbytes = case.mib * 2**20 * case.count
    row: dict[str, Any] = {"mib": case.mib, "count": case.count, "reps": case.reps}
    for way in WAYS:
        row[f"{way}_mib_s"] = nbytes / median(seconds[way]) / 2**20
    row["pipesim_vs_raw"] = row["pipesim_mib_s"] / row["raw_mib_s"]
    return row


class _Worker:
    def __init__(self, case: MessageCase) -> None:
        self.case = case

    def __call__(self, rank: int, world: int, *_: Any) -> dict[str, list[float]]:
        import torch
        import torch.distributed as dist

        from pipesim.runtime.comm import Comm, Member
        from pipesim.schedules import get_schedule

        n = self.case.mib * 2**20 // 4
        sched = get_schedule("forward", 2, self.case.count)
        comm = Comm(sched, rank, torch.device("cpu"))
        comm.boundaries[0] = (Member((n,), torch.float32),)
        payload = torch.ones(n)
        buffer = torch.empty(n)
        runs = {"raw": lambda: _raw(rank, self.case.count, payload, buffer, fresh=False),
                "raw-new": lambda: _raw(rank, self.case.count, payload, buffer, fresh=True),
                "pipesim": lambda: _ours(rank, self.case.count, comm, payload)}
        seconds: dict[str, list[float]] = {w: [] for w in WAYS}
        for rep in range(self.case.reps + 1):
            order = WAYS if rep % 2 == 0 else WAYS[::-1]
            for way in order:
                dist.barrier()
                t0 = time.perf_counter()
                runs[way]()
                if rep:
                    seconds[way].append(time.perf_counter() - t0)
        # the receiver's times are the transfer times
        box: list[Any] = [seconds]
        dist.broadcast_object_list(box, src=1)
        return dict(box[0])


def _raw(rank: int, count: int, payload: Any, buffer: Any, fresh: bool) -> None:
    import torch
    import torch.distributed as dist

    for _ in range(count):
        if rank == 0:
            dist.send(payload, dst=1)
        else:
            dist.recv(torch.empty_like(buffer) if fresh else buffer, src=0)


def _ours(rank: int, count: int, comm: Any, payload: Any) -> None:
    from pipesim.ir import Action, Op

    for mb in range(count):
        if rank == 0:
            comm.send(Action(0, Op.F, mb), (payload,))
        else:
            for ahead in range(mb, min(count, mb + 3)):
                comm.prefetch(Action(1, Op.F, ahead))
            comm.recv(Action(1, Op.F, mb), Action(0, Op.F, mb))
    comm.finish()
