"""The simulator's overlapped pairs (``Schedule.pairs``): where each sits and how one is timed.

Both outputs of a pair leave when it ends, with each part's send overhead paid there. With an
``overlap`` gain (< 1) the pair is one unit: it starts once the dependencies of both parts
(``ir.dep_keys``) are met and lasts ``overlap x (F + B)``. Without one (1, a CPU) its parts run
one after the other, as the engine runs them: the F once its own input is in, the B (after the
engine's own time) once the F is done and its input is in. ``park`` is the simulator's record
of a rank waiting on an unfinished action.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pipesim.ir import Action, Schedule, dep_keys

if TYPE_CHECKING:
    from pipesim.simulate import _Run


def pair_positions(schedule: Schedule) -> list[list[int]]:
    """Per rank, the row index of each overlapped pair's first part; ValueError if a pair's
    parts are not next to each other on one rank."""
    at: list[list[int]] = [[] for _ in schedule.actions]
    if not schedule.pairs:
        return at
    found = 0
    for rank, row in enumerate(schedule.actions):
        for i in range(len(row) - 1):
            if (row[i], row[i + 1]) in schedule.pairs:
                at[rank].append(i)
                found += 1
    if found != len(schedule.pairs):
        raise ValueError("an overlapped pair's actions are not next to each other on one rank; "
                         "validate the schedule first")
    return at


def run_pair(sim: _Run, rank: int, row: tuple[Action, ...], i: int, t: float,
             todo: list[int]) -> float | None:
    """Time the overlapped pair row[i], row[i+1]; its end, or None if it parked."""
    first, second = row[i], row[i + 1]
    fin, place, hop = sim.fin, sim.schedule.stage_to_rank, sim.hop
    ready = [t, t]  # when each part's inputs are in (and the rank is free)
    for k, part in enumerate((first, second)):
        for s, op, mb in dep_keys(part[0], part[1], part[2], sim.schedule):
            d = fin[op][s][mb]
            if d.__class__ is not float:
                park(fin[op][s], mb, d, rank)
                return None
            if place[s] != rank:
                d += hop[min(s, part[0])]
            if d > ready[k]:
                ready[k] = d
    raw, dur, overlap = sim.raw, sim.dur, sim.overlap
    s1, op1, s2, op2 = first[0], first[1], second[0], second[1]
    sends = (dur[op1][s1] - raw[op1][s1]) + (dur[op2][s2] - raw[op2][s2])
    one, two = raw[op1][s1], raw[op2][s2]
    if sim.own_raw:  # a replay's per-action times
        one, two = sim.own_raw.get(first, one), sim.own_raw.get(second, two)
    if overlap == 1.0:  # one after the other, as the engine runs a pair on a CPU
        t = ready[0]
        mid = t + one
        b_start = max(mid + sim.gap, ready[1])
        end = b_start + two + sends
    else:  # overlapped: one unit once both inputs are in
        t = max(ready)
        b_start = mid = t + overlap * one
        end = t + overlap * (one + two) + sends
    sim.starts[rank][i], sim.ends[rank][i] = t, mid
    sim.starts[rank][i + 1], sim.ends[rank][i + 1] = b_start, end
    for a in (first, second):  # both outputs leave when the pair ends
        s, op, mb = a
        waiting = fin[op][s][mb]
        if waiting.__class__ is float:
            raise ValueError(f"{a} appears more than once on rank {rank}; "
                             "validate the schedule first")
        fin[op][s][mb] = end
        sim.act[op][s][mb] = a
        if waiting is not None:
            todo += waiting
    return end


def park(table_row: list[Any], mb: int, slot: Any, rank: int) -> None:
    """Record that ``rank`` waits for ``table_row[mb]`` to end."""
    if slot is None:
        table_row[mb] = [rank]
    else:
        slot.append(rank)



__all__ = ["pair_positions", "park", "run_pair"]
