"""Steady-state training steps: simulate step after step until the step repeats (on shared CPU
cores with ``cores``: ``pipesim.shared``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from pipesim.checks import is_positive_int
from pipesim.costs import CostModel
from pipesim.ir import Schedule
from pipesim.shared import simulate_shared
from pipesim.simulate import simulate
from pipesim.timeline import Timeline


class SteadyStep(NamedTuple):
    """One training step once steps repeat: its time and its timeline."""

    step: float  # time from one step's end (its last rank's) to the next one's
    timeline: Timeline  # a steady step, time 0 = the first rank to begin it
    steps: int  # steps simulated to get there


def steady_step(schedule: Schedule, costs: CostModel | None = None,
                between: Sequence[float] = (), max_steps: int = 64, *,
                cores: int | None = None, barrier: float | None = None) -> SteadyStep:
    """Simulate training step after step until the step repeats; its time and timeline.

    Rank r begins step k+1 ``between[r]`` after its own last action of step k (the optimizer
    update and whatever else a rank does between steps; none by default), so a rank that ends
    early starts early and a slow optimizer delays the ranks that wait on it. Step 0 starts
    every rank at 0. Simulation is translation-invariant, so once every rank's start moves by
    the same amount the step repeats exactly; that amount is the step time. A step that never
    settles (a periodic pattern longer than one step) gets the mean of its last half.

    ``cores``: the ranks share that many CPU cores (``shared.simulate_shared``; None or at
    least one per rank: each rank its own, ``simulate``). ``between[r]`` stays a plain delay
    there: the optimizer's time is CPU work in a real run, but here it takes no core from the
    ranks still in their step.

    ``barrier``: the ranks meet between steps (pipesim's engine checks each step's batch on
    every rank with one collective): every rank begins step k+1 at once, ``barrier`` seconds
    after the last of them is done with step k and its ``between``. Each step then starts from
    the same state, so one simulation gives the step. None: no meeting.
    """
    if max_steps < 2:
        raise ValueError(f"max_steps must be >= 2, got {max_steps}")
    if cores is not None and not is_positive_int(cores):
        raise ValueError(f"cores must be an integer >= 1, got {cores!r}")
    shared = cores if cores is not None and cores < schedule.ranks else None
    between = list(between) or [0.0] * schedule.ranks
    if len(between) != schedule.ranks:
        raise ValueError(f"between has {len(between)} times; the schedule has "
                         f"{schedule.ranks} ranks")
    if barrier is not None:
        if not barrier >= 0:
            raise ValueError(f"barrier must be >= 0 seconds, got {barrier!r}")
        timeline = (simulate(schedule, costs) if shared is None
                    else simulate_shared(schedule, costs, shared))
        ends = [row[-1].end if row else 0.0 for row in timeline.by_rank()]
        return SteadyStep(max(e + gap for e, gap in zip(ends, between, strict=True)) + barrier,
                          timeline, 1)
    begin = [0.0] * schedule.ranks  # this step's rank starts, its first rank at 0
    periods: list[float] = []
    previous_end = shift = 0.0  # the previous step's end, in the previous step's frame
    for k in range(1, max_steps + 1):
        timeline = (simulate(schedule, costs, begin) if shared is None
                    else simulate_shared(schedule, costs, shared, begin))
        ends = [row[-1].end if row else begin[r] for r, row in enumerate(timeline.by_rank())]
        if k > 1:  # this step's frame starts ``shift`` after the previous one's
            periods.append(max(ends) + shift - previous_end)
        after = [e + gap for e, gap in zip(ends, between, strict=True)]
        shift = min(after)
        following = [a - shift for a in after]
        tolerance = 1e-9 * max(1.0, max(ends))
        if all(abs(a - b) <= tolerance for a, b in zip(following, begin, strict=True)):
            # the next step is this one moved by ``shift``: so is every step after it
            return SteadyStep(shift, timeline, k)
        begin, previous_end = following, max(ends)
    tail = periods[len(periods) // 2:]
    return SteadyStep(sum(tail) / len(tail), timeline, max_steps)



__all__ = ["SteadyStep", "steady_step"]
