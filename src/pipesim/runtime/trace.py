"""Measured timelines: every rank's (action, start, end) gathered into one Timeline on each rank.

Events travel as a float64 tensor [n, 5] = (stage, op code, microbatch, start, end); clocks share
an origin taken right after a barrier, so one run's ranks line up to within the barrier's skew.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from pipesim.ir import Action, Op, Schedule
from pipesim.timeline import Event, Span, Timeline

_OPS = list(Op)


def _encode(events: list[tuple[Action, float, float]]) -> torch.Tensor:
    rows = [[a.stage, _OPS.index(a.op), a.microbatch, s, e] for a, s, e in events]
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)


Timed = tuple[Action, float, float]  # (action, start, end)


def gather_events(events: list[Timed], world: int, device: torch.device,
                  group: dist.ProcessGroup | None = None) -> list[list[Timed]]:
    """All ranks' events (all-gather, padded to the longest)."""
    local = _encode(events).to(device)
    n = torch.tensor([local.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n, group=group)
    longest = max(int(x) for x in sizes)
    padded = torch.zeros(longest, 5, dtype=torch.float64, device=device)
    padded[:local.shape[0]] = local
    chunks = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded, group=group)
    out = []
    for size, chunk in zip(sizes, chunks, strict=True):
        rows = chunk[:int(size)].cpu().tolist()
        out.append([(Action(int(s), _OPS[int(o)], int(m)), t0, t1) for s, o, m, t0, t1 in rows])
    return out


def to_timeline(schedule: Schedule, per_rank: list[list[tuple[Action, float, float]]],
                origin: float = 0.0, spans: tuple[Span, ...] = ()) -> Timeline:
    """A Timeline in seconds, shifted so that ``origin`` is time 0."""
    events = tuple(Event(r, a, s - origin, e - origin)
                   for r, row in enumerate(per_rank) for a, s, e in row)
    return Timeline(schedule.ranks, events, (), "s", schedule.name, schedule.stage_to_rank,
                    schedule.microbatches, spans)
