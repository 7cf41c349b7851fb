"""Synthesize a schedule for given per-stage costs and a memory cap: search, then keep the best.

Legend: p ranks, S stages (p, or 2p in a V), m microbatches; F I W as in ``pipesim.ir``.

The search runs the list scheduler (``pipesim.planner.listsched``) under many priority settings
(``Knobs``): first a fixed grid (forwards allowed ahead of backwards, when W may fill a gap or must
come before an F, F or I first, which of a rank's stages goes first), then a hill climb over each
stage's own limits from the grid's best, then, while time is left, a polish that swaps
neighbouring actions on a rank while that helps.
Each result is measured with ``pipesim.simulate`` (``steady_step`` for the ``step`` objective,
``makespan`` for ``makespan``). The registered schedules of the same placement that fit the
memory join as candidates, so the result is never worse than any of them. The search order is
fixed: the same input gives the same schedule, unless ``time_limit`` cuts the search short
(it stops at the limit with the best found).

Bounds (``Bounds``): ``work``, the issue's bound: for ``step``, no rank beats its own work
m x (F + I + W); for ``makespan``, a rank also waits for the least fill before its first action
and the least drain after its last input-gradient. ``memory`` (``step``, one stage per rank): a
tighter bound from the memory cap: after rank r's last I, its next step's first F cannot arrive
before the I's below it, rank 0's last W and the next step's F's above it have run (``cycle``),
and the rank can fill that time only with the W's it still holds, at most its cap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pipesim.checks import is_positive_int
from pipesim.costs import CostModel
from pipesim.ir import Op, Schedule
from pipesim.planner.listsched import Knobs, Problem, list_schedule, make_problem
from pipesim.schedules import ConfigError, _check_size, same_placement
from pipesim.schedules._common import v_placement
from pipesim.simulate import DeadlockError, simulate
from pipesim.steady import steady_step
from pipesim.timeline import peak_stash
from pipesim.validate import peak_activations, validate

__all__ = ["OBJECTIVES", "PLACEMENTS", "Bounds", "Synthesis", "SynthesisError", "bounds",
           "synthesis", "synthesize"]

OBJECTIVES = ("step", "makespan")
PLACEMENTS = ("one", "v")
_SLACKS = (0.0, 0.5, 1.0, math.inf)  # W fills gaps of at least this many W's
_F, _I, _W = Op.F, Op.I, Op.W


class SynthesisError(ValueError):
    """Inputs no schedule can satisfy or that make no sense; the message says which."""


@dataclass(frozen=True)
class Bounds:
    """Lower bounds on the objective: the work bound and, where known, the memory one."""

    work: float
    memory: float | None = None

    @property
    def best(self) -> float:
        return max(self.work, self.memory or 0.0)


@dataclass(frozen=True)
class Synthesis:
    """The synthesized schedule and what was measured of it."""

    schedule: Schedule
    objective: str
    makespan: float
    steady_step: float
    bounds: Bounds
    peak_activations: tuple[int, ...]
    origin: str  # "search <knobs>" or the registered schedule it kept
    evaluations: int
    seconds: float

    @property
    def value(self) -> float:
        return self.steady_step if self.objective == "step" else self.makespan

    @property
    def gap(self) -> float:
        """How far above the work bound, as a fraction of it."""
        gap = self.value / self.bounds.work - 1 if self.bounds.work else 0.0
        return round(gap, 12) + 0.0  # at the bound: 0, not a rounding error's -0.0

    def to_dict(self) -> dict[str, Any]:
        return {"objective": self.objective, "value": self.value, "makespan": self.makespan,
                "steady_step": self.steady_step, "lower_bound": self.bounds.work,
                "gap": self.gap, "memory_bound": self.bounds.memory,
                "peak_activations": list(self.peak_activations), "origin": self.origin,
                "evaluations": self.evaluations, "seconds": self.seconds}


def synthesize(ranks: int, microbatches: int, costs: CostModel | None = None, *,
               max_stashed: int | None = None, memory_limit: float | None = None,
               objective: str = "step", placement: str = "one",
               time_limit: float = 10.0) -> Schedule:
    """The best schedule found for ``costs`` within the memory cap; see ``synthesis``."""
    return synthesis(ranks, microbatches, costs, max_stashed=max_stashed,
                     memory_limit=memory_limit, objective=objective, placement=placement,
                     time_limit=time_limit).schedule


def synthesis(ranks: int, microbatches: int, costs: CostModel | None = None, *,
              max_stashed: int | None = None, memory_limit: float | None = None,
              objective: str = "step", placement: str = "one",
              time_limit: float = 10.0) -> Synthesis:
    """Search schedules of ``ranks`` x ``microbatches`` for the best ``objective`` under ``costs``.

    ``costs`` has one entry per stage (``ranks`` stages, or ``2 * ranks`` for ``placement="v"``;
    default uniform F = I = W = 1). ``max_stashed``: microbatches' activations stashed on a rank
    at once, counted as ``validate`` counts them; ``memory_limit``: the same in bytes, each F
    stashing its stage's ``costs.activation_bytes``. Raises SynthesisError for bad inputs or a
    cap no schedule fits.
    """
    began = time.perf_counter()
    problem = _problem(ranks, microbatches, costs, max_stashed, memory_limit, objective,
                       placement)
    full = costs or CostModel.uniform(problem.stages)
    search = _Search(problem, full, objective, began + time_limit)
    search.seed_registered()
    search.run()
    search.polish()
    if search.best is None:
        raise SynthesisError(f"no schedule fits {ranks} ranks with at most {max_stashed} "
                             f"microbatches stashed" + (f" and {memory_limit:g} bytes" if
                                                        memory_limit is not None else "")
                             + "; raise the cap")
    sched, origin = replace(search.best[1], name=problem.name), search.best[2]
    report = validate(sched)
    assert report.ok, report.errors  # by construction; a failure here is a pipesim bug
    return Synthesis(sched, objective, simulate(sched, full).makespan,
                     steady_step(sched, full).step, bounds(problem, objective),
                     report.peak_activations, origin, search.evaluations,
                     time.perf_counter() - began)


def _problem(ranks: int, microbatches: int, costs: CostModel | None, max_stashed: int | None,
             memory_limit: float | None, objective: str, placement: str) -> Problem:
    for label, value in (("ranks", ranks), ("microbatches", microbatches)):
        if not is_positive_int(value):
            raise SynthesisError(f"{label} must be an integer >= 1, got {value!r}")
    if objective not in OBJECTIVES:
        raise SynthesisError(f"unknown objective {objective!r}; valid: {', '.join(OBJECTIVES)}")
    if placement not in PLACEMENTS:
        raise SynthesisError(f"unknown placement {placement!r}; valid: {', '.join(PLACEMENTS)}")
    try:  # the registry's size limit: past it, a typo rather than a pipeline
        _check_size("synthesize", ranks, microbatches, 1 if placement == "one" else 2)
    except ConfigError as err:
        raise SynthesisError(str(err)) from None
    stage_to_rank = tuple(range(ranks)) if placement == "one" else v_placement(ranks)
    stages = len(stage_to_rank)
    costs = costs or CostModel.uniform(stages)
    if costs.stages != stages:
        raise SynthesisError(f"the costs have {costs.stages} stages; {ranks} ranks with placement "
                             f"{placement!r} have {stages}")
    least = 2 if placement == "v" else 1
    if max_stashed is not None and max_stashed < least:
        raise SynthesisError(f"max_stashed must be >= {least} for placement {placement!r} (a rank "
                             f"stashes at least that much), got {max_stashed}")
    if memory_limit is not None:
        if not any(costs.activation_bytes):
            raise SynthesisError("a memory limit in bytes needs the costs' activation_bytes "
                                 "(what each stage's F stashes)")
        if not memory_limit > 0:
            raise SynthesisError(f"memory_limit must be > 0, got {memory_limit!r}")
    return make_problem(ranks, microbatches, stage_to_rank, costs, max_stashed, memory_limit)


class _Search:
    """Candidates measured so far and the best of them (key, schedule, origin)."""

    def __init__(self, problem: Problem, costs: CostModel, objective: str,
                 deadline: float) -> None:
        self.pb, self.costs, self.objective, self.deadline = problem, costs, objective, deadline
        self.best: tuple[tuple[float, ...], Schedule, str] | None = None
        self.seen: dict[Knobs, tuple[float, ...]] = {}
        self.evaluations = 0
        self.floor = bounds(problem, objective).best * (1 + 1e-9)
        self.checked = time.perf_counter()  # when ``done`` was last asked
        self.longest = 0.0  # the longest time between two of its calls

    def done(self) -> bool:
        """At the bound, or another candidate and the final check (each as long as the longest
        step so far) would pass the deadline."""
        reached = self.best is not None and self.best[0][0] <= self.floor
        now = time.perf_counter()
        self.longest, self.checked = max(self.longest, now - self.checked), now
        return reached or now + 2 * self.longest > self.deadline

    def measure(self, sched: Schedule, origin: str) -> tuple[float, ...]:
        """The candidate's sort key (objective, the other measure, peak stash); keeps the best."""
        self.evaluations += 1
        step = steady_step(sched, self.costs).step
        span = simulate(sched, self.costs).makespan
        first, second = (step, span) if self.objective == "step" else (span, step)
        key = (round(first, 9), round(second, 9), max(peak_activations(sched)))
        if self.best is None or key < self.best[0]:
            self.best = (key, sched, origin)
        return key

    def seed_registered(self) -> None:
        """Registered schedules with this placement that fit the memory cap."""
        pb = self.pb
        for name, sched in same_placement(pb.ranks, pb.microbatches, pb.stage_to_rank):
            if _fits(sched, pb):
                self.measure(sched, name)

    def evaluate(self, knobs: Knobs) -> tuple[float, ...]:
        if knobs not in self.seen:
            sched = list_schedule(self.pb, knobs)
            self.seen[knobs] = (math.inf,) if sched is None else self.measure(
                sched, f"search {_describe(knobs)}")
        return self.seen[knobs]

    def run(self) -> None:
        """The grid, then a hill climb from its best."""
        start: tuple[tuple[float, ...], Knobs] | None = None
        for knobs in _grid(self.pb):
            if self.done():
                return
            key = self.evaluate(knobs)
            if start is None or key < start[0]:
                start = (key, knobs)
        if start is not None:
            self.climb(*start)

    def climb(self, key: tuple[float, ...], knobs: Knobs) -> None:
        """Move to the best neighbour while it improves (steepest descent)."""
        while not self.done():
            best = (key, knobs)
            for other in _neighbours(knobs, self.pb.microbatches):
                if self.done():
                    return
                found = self.evaluate(other)
                if found < best[0]:
                    best = (found, other)
            if best[1] == knobs:
                return
            key, knobs = best


    def polish(self) -> None:
        """Swap neighbouring actions on a rank while that helps: the last few percent."""
        improved = self.best is not None
        while improved and not self.done():
            assert self.best is not None
            key, sched, origin = self.best
            rows = [list(row) for row in sched.actions]
            improved = False
            for r, row in enumerate(rows):
                for i in range(len(row) - 1):
                    if self.done():
                        return
                    a, b = row[i], row[i + 1]
                    if (a.stage, a.microbatch) == (b.stage, b.microbatch):
                        continue  # W after its own I, I after its own F
                    row[i], row[i + 1] = b, a
                    moved = replace(sched, actions=tuple(map(tuple, rows)))
                    if _fits(moved, self.pb) and self._try(moved, origin) < key:
                        key, improved = self.best[0], True
                    else:
                        row[i], row[i + 1] = a, b
                rows[r] = row

    def _try(self, sched: Schedule, origin: str) -> tuple[float, ...]:
        """``measure``, or infinity for an order that deadlocks."""
        try:
            return self.measure(sched, origin if origin.endswith("polished") else
                                f"{origin}, polished")
        except DeadlockError:
            return (math.inf,)


def _fits(sched: Schedule, pb: Problem) -> bool:
    peaks = peak_activations(sched)
    if pb.max_stashed is not None and max(peaks) > pb.max_stashed:
        return False
    return pb.memory_limit is None or max(_stash_bytes(sched, pb.stash_bytes)) <= \
        pb.memory_limit * (1 + 1e-12)


def _stash_bytes(sched: Schedule, stash: Sequence[float]) -> list[float]:
    return list(peak_stash(sched.actions, stash))  # the one peak-stash walk, in bytes


def _extras(limit: int) -> list[int]:
    """0, 1, 2, 3, 4, 6, 8, 12, 16, ... up to ``limit``: dense where it matters most."""
    out, k = [0, 1, 2, 3], 4
    while k <= limit:
        out += [k, k + k // 2]
        k *= 2
    return sorted({x for x in out if x <= limit})


def _grid(pb: Problem) -> Iterator[Knobs]:
    """Forwards ahead: the 1F1B depth (S - s) plus an extra; each W slack; each stage order."""
    cap = pb.max_stashed if pb.max_stashed is not None else pb.microbatches
    orders = (True, False) if pb.stages > pb.ranks else (True,)
    extras = _extras(min(cap, pb.microbatches))
    fill = min(cap, pb.microbatches) - pb.stages // pb.ranks * pb.ranks  # rank 0 up to its cap
    if fill > 0:  # with memory to spare, the lead that uses it is the likeliest winner: first
        extras = [fill, *(x for x in extras if x != fill)]
    for extra in extras:
        ahead = tuple(max(1, min(pb.microbatches, pb.stages - s + extra))
                      for s in range(pb.stages))
        for deep_first in orders:
            for f_first in (False, True):
                for slack in _SLACKS:
                    yield Knobs(ahead, slack, deep_first, None, f_first)
                for keep in (0, 1):  # zb-h1's W lag: stage s keeps s (+ keep) W's pending
                    lag = tuple(min(pb.microbatches, s + keep) for s in range(pb.stages))
                    yield Knobs(ahead, 1.0, deep_first, lag, f_first)


def _neighbours(knobs: Knobs, microbatches: int) -> Iterator[Knobs]:
    for s in range(len(knobs.ahead)):
        for step in (-1, 1):
            value = knobs.ahead[s] + step
            if 1 <= value <= microbatches:
                yield knobs._replace(ahead=(*knobs.ahead[:s], value, *knobs.ahead[s + 1:]))
    lag = knobs.lag
    for s in range(len(lag or ())):
        assert lag is not None
        for step in (-1, 1):
            if 0 <= lag[s] + step <= microbatches:
                yield knobs._replace(lag=(*lag[:s], lag[s] + step, *lag[s + 1:]))
    for slack in _SLACKS:
        if slack != knobs.w_slack:
            yield knobs._replace(w_slack=slack)
    yield knobs._replace(f_first=not knobs.f_first)


def _describe(knobs: Knobs) -> str:
    ahead = ",".join(map(str, knobs.ahead))
    lag = "" if knobs.lag is None else "; W before F past " + ",".join(map(str, knobs.lag))
    return f"(ahead {ahead}; W fills gaps >= {knobs.w_slack:g} W{lag}" + \
        ("" if knobs.deep_first else "; shallow stage first") + \
        ("; F before I" if knobs.f_first else "") + ")"


# ----------------------------------------------------------------------------- bounds


def bounds(problem: Problem, objective: str = "step") -> Bounds:
    """The work bound for ``objective`` and, for ``step`` with one stage per rank, the memory
    bound (module docstring)."""
    pb, m = problem, problem.microbatches
    work = [m * sum(pb.dur[_F][s] + pb.dur[_I][s] + pb.dur[_W][s] for s in st)
            for st in pb.stages_of]
    if objective == "makespan":
        fill, drain = _chains(pb)
        return Bounds(max(
            min(fill[s] for s in st) + m * sum(pb.dur[_F][s] + pb.dur[_I][s] for s in st)
            + max(m * sum(pb.dur[_W][s] for s in st), min(drain[s] for s in st))
            for st in pb.stages_of))
    if pb.stages != pb.ranks:
        return Bounds(max(work))
    return Bounds(max(work), max(w + _idle(pb, r) for r, w in enumerate(work)))


def _chains(pb: Problem) -> tuple[list[float], list[float]]:
    """Per stage: least time before its first F can start (the F's below it and their messages);
    least time after one of its I's ends until the step can end (the I's below it, then W(0))."""
    place, fill, drain = pb.stage_to_rank, [0.0], [pb.dur[_W][0]]
    for s in range(1, pb.stages):
        hop = pb.hop[s - 1] if place[s - 1] != place[s] else 0.0
        fill.append(fill[-1] + pb.dur[_F][s - 1] + hop)
        drain.append(drain[-1] + pb.dur[_I][s - 1] + hop)
    return fill, drain


def _idle(pb: Problem, r: int) -> float:
    """Least idle time of rank r per step, one stage per rank: the cycle from its last I back
    to its next first F, less the W's its cap lets it keep for that time."""
    if r == 0:
        return 0.0
    fill, drain = _chains(pb)
    cycle = drain[r] + fill[r]
    held = pb.microbatches
    if pb.max_stashed is not None:
        held = min(held, pb.max_stashed)
    if pb.memory_limit is not None and pb.stash_bytes[r] > 0:
        held = min(held, int(pb.memory_limit * (1 + 1e-12) // pb.stash_bytes[r]))
    return max(0.0, cycle - max(held, 1) * pb.dur[_W][r])
