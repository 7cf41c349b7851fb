"""Synthesized candidates for ``plan``: a schedule searched for each configuration's own costs.

``plan(..., synthesize=S)`` adds the pseudo-schedules below to the search space. Unlike a
registered schedule, which depends only on (ranks, microbatches), a synthesized one is searched
per configuration (partition and microbatch size give its stage costs) with
``pipesim.synthesize`` for ``S`` seconds, objective ``makespan`` (plan's step is one step from a
standing start) and the memory the limit leaves: each rank's limit less its parameters and
optimizer state, in microbatches of its stage's stash. It then joins the same memory check,
simulation, ranking and pruning as the registered ones.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipesim.costs import CostModel
from pipesim.ir import Schedule
from pipesim.planner.space import SYNTHESIZED
from pipesim.planner.synthesize import SynthesisError, synthesize
from pipesim.schedules._common import v_placement

__all__ = ["SYNTHESIZED", "synth_pairs", "synth_schedule"]



def synth_pairs(virtual: Sequence[int]) -> list[tuple[str, int]]:
    """(name, stages per rank) of the synthesized candidates that ``virtual`` allows."""
    return [(name, v) for name, (_, v) in SYNTHESIZED.items() if v in virtual]


def synth_schedule(name: str, ranks: int, microbatches: int, costs: CostModel,
                   stash: Sequence[float], params: Sequence[float], limit: float | None,
                   factor: float, seconds: float) -> Schedule | None:
    """The synthesized schedule for one configuration, or None when no cap fits the limit."""
    placement, _ = SYNTHESIZED[name]
    cap = None
    if limit is not None:
        place = tuple(range(ranks)) if placement == "one" else v_placement(ranks)
        caps = []
        for r in range(ranks):
            mine = [s for s in range(len(place)) if place[s] == r]
            free = limit - factor * math.fsum(params[s] for s in mine)
            biggest = max(stash[s] for s in mine)
            caps.append(microbatches * len(mine) if biggest <= 0 else int(free // biggest))
        cap = min(caps)
    try:
        sched = synthesize(ranks, microbatches, costs, max_stashed=cap, objective="makespan",
                           placement=placement, time_limit=seconds)
    except SynthesisError:
        return None
    return Schedule(sched.ranks, sched.stages, sched.microbatches, sched.stage_to_rank,
                    sched.actions, name)
