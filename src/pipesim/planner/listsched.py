"""A list scheduler over F, I and W: one pass that builds a valid schedule for given costs.

Legend: p ranks, S stages, m microbatches; ``s`` a stage, ``mb`` a microbatch; F I W as in ir.

Each rank proposes its next action from what it knows (what has been scheduled so far, timed as
``pipesim.simulate`` times it: the same per-op durations, send overheads and message hops), and
the proposal that starts earliest is committed. Committed starts never decrease, so nothing that
is still unscheduled could have made an earlier proposal ready: every pass is a consistent
timeline, and every action follows its dependencies (``ir.dep_keys``), so the result validates.

A rank's choice (``Knobs``): an I or F that can start now, I first (the input gradient is on the
critical path) or F first (``f_first``, 1F1B's alternation); W only to fill a gap, when the next I
or F is at least ``w_slack`` x W away, or before an F once more than ``lag[s]`` W's are pending
(zb-h1's pattern); an F only while the stage has fewer than ``ahead[s]`` forwards ahead of its
input-gradients and the rank's stash stays within the memory cap (``ir.STASH_DELTA``: F stashes,
I keeps, W frees).
Microbatches run in order on each (stage, op). A pass whose cap leaves every rank stuck returns
None.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

from pipesim.costs import CostModel
from pipesim.ir import STASH_DELTA, Action, Op, Schedule
from pipesim.simulate import _Run

__all__ = ["Knobs", "Problem", "list_schedule", "make_problem"]

_F, _I, _W = Op.F, Op.I, Op.W
_STASH_F, _STASH_W = STASH_DELTA[Op.F], STASH_DELTA[Op.W]  # +1 and -1 microbatch


class Problem(NamedTuple):
    """What a pass needs, precomputed once: placement, times, memory caps."""

    ranks: int
    stages: int
    microbatches: int
    stage_to_rank: tuple[int, ...]
    stages_of: tuple[tuple[int, ...], ...]  # per rank, its stages, deepest first
    dur: dict[Op, list[float]]  # per op and stage, with the sender's overhead (as simulated)
    hop: list[float]  # message time across the boundary after stage s
    stash_bytes: tuple[float, ...]  # what an F of stage s stashes
    max_stashed: int | None  # microbatches stashed on a rank at once
    memory_limit: float | None  # stashed bytes on a rank at once
    name: str


class Knobs(NamedTuple):
    """The priorities of one pass (see the module docstring)."""

    ahead: tuple[int, ...]  # per stage: most forwards ahead of its input-gradients
    w_slack: float = 1.0  # W fills a gap at least this many W's long (0: W whenever ready)
    deep_first: bool = True  # between a rank's stages, the deeper one's action first
    # per stage: with more W's than this pending, a W comes before an F (zb-h1 lets rank r
    # keep r); None: W only fills gaps or frees memory
    lag: tuple[int, ...] | None = None
    f_first: bool = False  # an F before an I when both can start (1F1B's alternation)


def make_problem(ranks: int, microbatches: int, stage_to_rank: Sequence[int], costs: CostModel,
                 max_stashed: int | None = None, memory_limit: float | None = None,
                 name: str = "synth") -> Problem:
    """Durations and hops exactly as ``simulate`` uses them, so a pass's times are its times."""
    placement = tuple(stage_to_rank)
    stages = len(placement)
    blank = Schedule(ranks, stages, 1, placement, tuple(() for _ in range(ranks)))
    run = _Run(blank, costs)  # the simulator's own tables: one owner for op and message times
    stages_of = tuple(tuple(sorted((s for s in range(stages) if placement[s] == r),
                                   reverse=True)) for r in range(ranks))
    stash = tuple(costs.activation_bytes) if costs.activation_bytes else (0.0,) * stages
    return Problem(ranks, stages, microbatches, placement, stages_of, run.dur, run.hop, stash,
                   max_stashed, memory_limit, name)


class _Pass:
    """The state of one list-scheduling pass."""

    def __init__(self, problem: Problem, knobs: Knobs) -> None:
        S, m = problem.stages, problem.microbatches
        self.pb, self.kn = problem, knobs
        self.end = {op: [[math.nan] * m for _ in range(S)] for op in (_F, _I)}
        self.next = {op: [0] * S for op in (_F, _I, _W)}  # next microbatch per (op, stage)
        self.free = [0.0] * problem.ranks
        self.stash = [0] * problem.ranks
        self.stash_b = [0.0] * problem.ranks
        self.rows: list[list[Action]] = [[] for _ in range(problem.ranks)]
        # V-shaped and looped placements: a rank's shallower stages keep one stash slot free
        # for its deepest stage, whose forward every backward on the rank waits for
        self.reserve = [1 if len(st) > 1 else 0 for st in problem.stages_of]

    def _f_ready(self, s: int, mb: int) -> float:
        if s == 0:
            return 0.0
        t = self.end[_F][s - 1][mb]
        return t + self.pb.hop[s - 1] if self.pb.stage_to_rank[s - 1] != self.pb.stage_to_rank[s] \
            else t

    def _i_ready(self, s: int, mb: int) -> float:
        t = self.end[_F][s][mb]
        if s + 1 < self.pb.stages:
            g = self.end[_I][s + 1][mb]
            if self.pb.stage_to_rank[s + 1] != self.pb.stage_to_rank[s]:
                g += self.pb.hop[s]
            t = max(t, g)  # nan (not yet scheduled) propagates only through ``g``: see below
            if math.isnan(g):
                return math.nan
        return t

    def _may_forward(self, r: int, s: int) -> bool:
        pb = self.pb
        if self.next[_F][s] - self.next[_I][s] >= self.kn.ahead[s]:
            return False
        room = 0 if s == pb.stages_of[r][0] else self.reserve[r]
        if pb.max_stashed is not None and self.stash[r] + _STASH_F + room > pb.max_stashed:
            return False
        return pb.memory_limit is None or \
            self.stash_b[r] + pb.stash_bytes[s] * (1 + room) <= pb.memory_limit * (1 + 1e-12)

    def propose(self, r: int) -> tuple[float, int, Action] | None:
        """Rank r's next action and its start, from what is scheduled so far."""
        pb, m, t = self.pb, self.pb.microbatches, self.free[r]
        urgent: list[tuple[float, int, int, Action]] = []  # (start, op rank, stage key, action)
        fill: tuple[float, Action] | None = None
        for order, s in enumerate(pb.stages_of[r] if self.kn.deep_first
                                  else reversed(pb.stages_of[r])):
            mb = self.next[_I][s]
            if mb < self.next[_F][s]:
                ready = self._i_ready(s, mb)
                if not math.isnan(ready):
                    urgent.append((max(t, ready), 0 if not self.kn.f_first else 3, order,
                                   Action(s, _I, mb)))
            mb = self.next[_F][s]
            if mb < m and self._may_forward(r, s):
                ready = self._f_ready(s, mb)
                if not math.isnan(ready):
                    urgent.append((max(t, ready), 2, order, Action(s, _F, mb)))
            mb = self.next[_W][s]
            if mb < self.next[_I][s]:
                w = (max(t, self.end[_I][s][mb]), Action(s, _W, mb))
                lag = self.kn.lag
                if lag is not None and self.next[_I][s] - mb > lag[s]:
                    urgent.append((w[0], 1, order, w[1]))
                elif fill is None:
                    fill = w
        best = min(urgent) if urgent else None
        if fill is not None and (best is None or (best[0] > fill[0] and best[0] - fill[0]
                                 >= self.kn.w_slack * pb.dur[_W][fill[1].stage])):
            return fill[0], r, fill[1]  # W fills a gap before the next I or F (or ends)
        if best is None:
            return None if fill is None else (fill[0], r, fill[1])
        return best[0], r, best[3]

    def commit(self, start: float, r: int, a: Action) -> None:
        pb = self.pb
        s, op, mb = a
        finish = start + pb.dur[op][s]
        if op is not _W:
            self.end[op][s][mb] = finish
        self.next[op][s] = mb + 1
        self.free[r] = finish
        if op is _F:
            self.stash[r] += _STASH_F
            self.stash_b[r] += pb.stash_bytes[s]
        elif op is _W:
            self.stash[r] += _STASH_W
            self.stash_b[r] -= pb.stash_bytes[s]
        self.rows[r].append(a)

    def neighbours(self, a: Action) -> set[int]:
        place = self.pb.stage_to_rank
        return {place[x] for x in (a.stage - 1, a.stage, a.stage + 1) if 0 <= x < self.pb.stages}


def list_schedule(problem: Problem, knobs: Knobs) -> Schedule | None:
    """One pass; None when the memory cap leaves every rank unable to continue."""
    run = _Pass(problem, knobs)
    total = 3 * problem.stages * problem.microbatches
    proposals = [run.propose(r) for r in range(problem.ranks)]
    for _ in range(total):
        live = [p for p in proposals if p is not None]
        if not live:
            return None
        start, r, action = min(live)
        run.commit(start, r, action)
        for q in run.neighbours(action) | {r}:
            proposals[q] = run.propose(q)
    return Schedule(problem.ranks, problem.stages, problem.microbatches, problem.stage_to_rank,
                    tuple(tuple(row) for row in run.rows), problem.name)
