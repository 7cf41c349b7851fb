"""Measured timelines: every rank's (action, start, end) gathered into one Timeline.

Events travel as a float64 tensor [n, 5] = (stage, op code, microbatch, start, end); a span
(e.g. a stage's gradient all-reduce) travels as (stage, -1, 0, start, end). Clocks share an
origin taken right after a barrier, so ranks line up to within the barrier's skew.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from pipesim.ir import Action, Op, Schedule
from pipesim.timeline import Event, Span, Timeline

_OPS = list(Op)
Timed = tuple[Action, float, float]  # (action, start, end)
StageSpan = tuple[int, float, float]  # (stage, start, end) of an all-reduce


def _encode(events: list[Timed], spans: list[StageSpan]) -> torch.Tensor:
    rows = [[a.stage, _OPS.index(a.op), a.microbatch, s, e] for a, s, e in events]
    rows += [[stage, -1, 0, s, e] for stage, s, e in spans]
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 5)


def gather_events(events: list[Timed], spans: list[StageSpan], world: int,
                  device: torch.device) -> list[tuple[list[Timed], list[StageSpan]]]:
    """All ranks' events and spans (all-gather over the world, padded to the longest)."""
    local = _encode(events, spans).to(device)
    n = torch.tensor([local.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = max(int(x) for x in sizes)
    padded = torch.zeros(longest, 5, dtype=torch.float64, device=device)
    padded[:local.shape[0]] = local
    chunks = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(chunks, padded)
    out = []
    for size, chunk in zip(sizes, chunks, strict=True):
        rows = chunk[:int(size)].cpu().tolist()
        evs = [(Action(int(s), _OPS[int(o)], int(m)), t0, t1)
               for s, o, m, t0, t1 in rows if o >= 0]
        sps = [(int(s), t0, t1) for s, o, _, t0, t1 in rows if o < 0]
        out.append((evs, sps))
    return out


def to_timeline(schedule: Schedule, per_rank: list[tuple[list[Timed], list[StageSpan]]],
                start: float, end: float, begun: Sequence[float], synced: Sequence[float],
                probes: Sequence[float] = (), cpu: Sequence[float] = ()) -> Timeline:
    """One measured step of one pipeline (rows = its ranks) as a Timeline in seconds, ``start``
    at time 0. ``meta``: ``start`` and ``end`` on the run's clock (the step time lies between
    two steps' ends), and per pipeline rank on the step's clock when it began the step
    (``begun``) and when the ranks' batch check let it go on (``synced``), which
    ``predict.replay`` reads; ``probe``, where a rank timed the reference kernel before the
    step (``TrainJob(probe_every=)``), its seconds per call per rank (0: not this rank);
    ``cpu``, where the ranks timed their computations' CPU use (``TrainJob(cpu_time=)``),
    each rank's CPU seconds in its actions this step."""
    events = tuple(Event(r, a, s - start, e - start)
                   for r, (row, _) in enumerate(per_rank) for a, s, e in row)
    spans = tuple(Span(r, f"allreduce stage {stage}", s - start, e - start)
                  for r, (_, sps) in enumerate(per_rank) for stage, s, e in sps)
    meta = {"start": start, "end": end, "begin": [b - start for b in begun],
            "synced": [x - start for x in synced]}
    if any(probes):
        meta["probe"] = list(probes)
    if any(cpu):
        meta["cpu"] = list(cpu)
    return Timeline(schedule.ranks, events, (), "s", schedule.name, schedule.stage_to_rank,
                    schedule.microbatches, spans, pairs=schedule.pairs, meta=meta)


__all__ = ["StageSpan", "Timed", "gather_events", "to_timeline"]
