"""Score one configuration: its peak memory per rank, then (if it fits) its simulated step.

Memory first, so a configuration over the limit is rejected without simulating; the step adds
each stage's gradient all-reduce (``planner.dataparallel``) to the simulated pipeline.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter
from typing import NamedTuple

from pipesim.costs import CostModel
from pipesim.ir import STASH_DELTA, ActionKey, Schedule
from pipesim.layercosts import LayerCosts
from pipesim.planner.command import command_for
from pipesim.planner.dataparallel import DPConfig, GradReady, dp_step, grad_ready
from pipesim.planner.results import Candidate, Config, Rejected
from pipesim.planner.space import format_bytes
from pipesim.simulate import simulate
from pipesim.stagecosts import stage_costs, stage_memory
from pipesim.timeline import bubble_fraction, peak_stash


def evaluate(schedule: Schedule, config: Config, layer_costs: LayerCosts,
             memory_limit_bytes: float | None = None,
             optimizer_factor: float = 4.0, dp: DPConfig | None = None) -> Candidate | Rejected:
    """Memory first (no simulation if over the limit), then the simulated step."""
    dp = dp or DPConfig(config.dp)
    return score(schedule, digest_of(schedule), config, StageData(layer_costs),
                     memory_limit_bytes, optimizer_factor, dp)


class StageData:
    """Per-stage costs and memory for (balance, microbatch size), computed once per plan()."""

    def __init__(self, layer_costs: LayerCosts) -> None:
        self.layer_costs = layer_costs
        self._costs: dict[tuple[tuple[int, ...], int], CostModel] = {}
        self._memory: dict[tuple[tuple[int, ...], int], tuple[list[float], list[float]]] = {}

    def costs(self, config: Config) -> CostModel:
        key = (config.balance, config.microbatch_size)
        if key not in self._costs:
            self._costs[key] = stage_costs(self.layer_costs, *key)
        return self._costs[key]

    def memory(self, config: Config) -> tuple[list[float], list[float]]:
        key = (config.balance, config.microbatch_size)
        if key not in self._memory:
            self._memory[key] = stage_memory(self.layer_costs, *key)
        return self._memory[key]


class Digest(NamedTuple):
    """What the memory walk, busy time and all-reduce need from a schedule, computed once."""

    stashing: tuple[Sequence[ActionKey], ...]  # per rank, in order: its F's, B's and W's
    stages_of: tuple[tuple[int, ...], ...]  # per rank
    split: tuple[int, ...]  # per stage: microbatches whose backward is split into I and W
    ready: GradReady  # where each stage's gradients become final


def digest_of(schedule: Schedule) -> Digest:
    # what timeline.peak_stash walks, less the actions that leave the stash as it is (I)
    stashing = tuple([a for a in row if STASH_DELTA[a[1]]] for row in schedule.actions)
    split = [0] * schedule.stages
    for stage, _ in schedule.split_backward:
        split[stage] += 1
    return Digest(stashing, tuple(schedule.stages_of(r) for r in range(schedule.ranks)),
                   tuple(split), grad_ready(schedule))


def score(schedule: Schedule, digest: Digest, config: Config, data: StageData,
              memory_limit_bytes: float | None, optimizer_factor: float,
              dp: DPConfig) -> Candidate | Rejected:
    stash, params = data.memory(config)
    peaks = tuple(_peaks(digest, stash, params, optimizer_factor))
    if memory_limit_bytes is not None:
        worst = max(range(len(peaks)), key=peaks.__getitem__)
        if peaks[worst] > memory_limit_bytes:
            return Rejected(config, peaks, f"rank {worst} needs {format_bytes(peaks[worst])} > "
                                           f"limit {format_bytes(memory_limit_bytes)}")
    costs = data.costs(config)
    events = simulate(schedule, costs).events
    start = min(map(itemgetter(2), events))
    span = max(map(itemgetter(3), events)) - start
    m = schedule.microbatches
    busy = math.fsum(m * f + k * (i + w) + (m - k) * b for f, i, w, b, k in zip(
        costs.forward, costs.backward_input, costs.backward_weight, costs.backward,
        digest.split, strict=True))  # every stage runs m F's and m backwards (B, or I and W)
    bubble = bubble_fraction(busy, schedule.ranks, span)
    steps, _ = dp_step(digest.ready, events, costs.param_bytes, dp, schedule.ranks)
    step = max(r.step_end for r in steps) - start
    return Candidate(config, step, bubble, peaks, command_for(config, data.layer_costs),
                     max(0.0, step - dp.optimizer_time - span))


def peak_memory(schedule: Schedule, stash_bytes: Sequence[float],
                param_bytes: Sequence[float], optimizer_factor: float = 4.0) -> list[float]:
    """Per rank: optimizer_factor x its parameter bytes + its peak stashed activation bytes.

    Walks each rank's actions in order: F(s) adds stash_bytes[s]; B(s), or W(s) when the backward
    is split, frees them; I frees nothing.
    """
    return _peaks(digest_of(schedule), stash_bytes, param_bytes, optimizer_factor)


def _peaks(digest: Digest, stash_bytes: Sequence[float], param_bytes: Sequence[float],
           optimizer_factor: float) -> list[float]:
    return [optimizer_factor * math.fsum(param_bytes[s] for s in stages) + peak
            for peak, stages in zip(peak_stash(digest.stashing, stash_bytes), digest.stages_of,
                                    strict=True)]


__all__ = ["Digest", "StageData", "digest_of", "evaluate", "peak_memory", "score"]
