"""List-scheduling simulator: a Schedule and a CostModel give a Timeline.

Each rank runs its actions in the schedule's order. An action starts when its rank is free and
each dependency (``ir.dep_keys``, the one rule) has finished and its message, if it crosses ranks,
has arrived. A send costs the sender ``costs.send_overhead`` (added to the producing action)
and never waits for the receiver. The engine's own time per action (``costs.action_overhead``)
keeps a rank busy before each action: it starts no earlier than that after its previous end.
Work is linear in the number of actions: a rank that meets an unfinished dependency parks on
it and is woken when that action ends. Each rank has a processor of its own: for ranks that
share fewer CPU cores than there are ranks, ``pipesim.shared.simulate_shared`` (``cores``).

The loop is the hot path of ``pipesim plan`` and of big schedules (64 ranks x 1024 microbatches
x 2 stages per rank is 262,144 actions), so it is written for CPython's speed:

- finish times live in per-op tables ``fin[stage][microbatch]``: a float once the action has
  ended, a list of parked ranks while someone waits for it, else None; ``act`` tables beside
  them keep the finished Action, so a message reuses it instead of building one;
- the dependency rule's effect is spelled out per op (no call per action); tests check it
  against ``ir.deps`` for every action of every registered schedule; the deadlock report
  uses ``ir.deps`` itself;
- the cyclic GC is paused while it runs (the loop allocates a few tuples per action).

An overlapped pair (``Schedule.pairs``, torch's ``OVERLAP_F_B``) sends both outputs when it ends
(with the send overhead of each part's outgoing message). With an overlap gain
(``costs.overlap`` < 1) it runs as one unit: it starts once the dependencies of both parts are
met and lasts ``overlap x (F + B)``; its two events lie side by side, the F for ``overlap x F``,
then the B to the pair's end. Without one, its F and B run one after the other as the engine
runs them, each once its own input is in. The hot loop only compares an
index per action; the pair itself is timed by ``overlap.run_pair``, which reads ``ir.dep_keys``.
"""

from __future__ import annotations

import gc
from bisect import bisect_left
from collections.abc import Iterator, Mapping, Sequence
from itertools import chain
from typing import Any

from pipesim.costs import CostModel
from pipesim.ir import Action, Op, Schedule, dep_keys, deps
from pipesim.overlap import pair_positions, park, run_pair
from pipesim.timeline import Event, MessageEvent, Timeline
from pipesim.validate import format_listing

_F, _I, _W, _B = Op.F, Op.I, Op.W, Op.B  # Enum attribute lookups are slow in a loop
_new = tuple.__new__  # builds NamedTuple records without their Python-level __new__

Table = list[list[Any]]  # [stage][microbatch] -> float (ended) | list[int] (waiters) | None


class DeadlockError(RuntimeError):
    """No rank can make progress; ``stuck`` maps each unfinished rank to (action, missing dep)."""

    def __init__(self, message: str, stuck: dict[int, tuple[Action, Action]]) -> None:
        super().__init__(message)
        self.stuck = stuck


def simulate(schedule: Schedule, costs: CostModel | None = None,
             start: Sequence[float] | None = None,
             durations: Mapping[Action, float] | None = None) -> Timeline:
    """Time every action of ``schedule`` under ``costs`` (uniform F=1, I=W=1, B=2 by default).

    ``start`` gives each rank the time it becomes free (all 0 by default): a rank still busy
    with the previous step's optimizer begins later. ``durations`` gives actions their own
    time instead of their (stage, op)'s (a measured step replayed action by action; the send
    overhead is still added). Events come rank by rank, each rank's in its order; messages
    likewise, by consumer.
    Raises DeadlockError when the ranks' orders can never complete, ValueError when the cost
    model's stage count differs from the schedule's or an action is out of range or repeated
    (``validate`` reports those better; indices must not be negative).
    """
    costs = checked_costs(schedule, costs, start)
    sim = _Run(schedule, costs, start, durations)
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        try:
            sim.run()
        except IndexError:
            raise ValueError(_out_of_range(schedule)) from None
        events = tuple(chain.from_iterable(
            map(_new, [Event] * len(row), zip([rank] * len(row), row, sim.starts[rank],
                                              sim.ends[rank], strict=True))
            for rank, row in enumerate(schedule.actions)))
        messages = _Messages(sim)
    finally:
        if was_enabled:
            gc.enable()
    sim.raise_if_stuck()
    return Timeline(schedule.ranks, events, messages, costs.unit, schedule.name,
                    schedule.stage_to_rank, schedule.microbatches, pairs=schedule.pairs,
                    stash_bytes=costs.stash_bytes)


def work_tables(schedule: Schedule, costs: CostModel
                ) -> tuple[dict[Op, list[float]], dict[Op, list[float]], list[float]]:
    """(raw, dur, hop): per op and stage the action's time without and with its send overhead,
    and per stage boundary b the message time between stages b and b+1 (either direction).

    Plain floats, so every finish time is one (the hot loop's type check needs them). A send
    keeps the sender busy: F of stage s pays ``send_overhead`` when stage s+1 is on another
    rank, I and B of stage s when stage s-1 is. Shared with ``pipesim.shared``.
    """
    stages = schedule.stages
    dur = {op: [float(x) for x in table] for op, table in (
        (_F, costs.forward), (_I, costs.backward_input), (_W, costs.backward_weight),
        (_B, costs.backward))}
    raw = {op: list(times) for op, times in dur.items()}  # without send overhead
    if costs.send_overhead:
        place, last = schedule.stage_to_rank, stages - 1
        for s in range(stages):
            if s < last and place[s + 1] != place[s]:
                dur[_F][s] += costs.send_overhead
            if s and place[s - 1] != place[s]:
                dur[_I][s] += costs.send_overhead
                dur[_B][s] += costs.send_overhead
    hop = [float(costs.message_time(Action(b, _F, 0), Action(b + 1, _F, 0)))
           for b in range(stages)]
    return raw, dur, hop


def checked_costs(schedule: Schedule, costs: CostModel | None,
                  start: Sequence[float] | None) -> CostModel:
    """``costs`` (uniform when None) after checking it and ``start`` fit ``schedule``."""
    costs = costs or CostModel.uniform(schedule.stages)
    if costs.stages != schedule.stages:
        raise ValueError(f"the cost model has {costs.stages} stages; the schedule has "
                         f"{schedule.stages}")
    if start is not None and len(start) != schedule.ranks:
        raise ValueError(f"start has {len(start)} times; the schedule has {schedule.ranks} ranks")
    return costs


def _out_of_range(schedule: Schedule) -> str:
    for rank, row in enumerate(schedule.actions):
        for a in row:
            if not (0 <= a.stage < schedule.stages and 0 <= a.microbatch < schedule.microbatches):
                return (f"{a} on rank {rank} is out of range ({schedule.stages} stages, "
                        f"{schedule.microbatches} microbatches); validate the schedule first")
    return "an action is out of range; validate the schedule first"


class _Messages(Sequence[MessageEvent]):
    """The run's cross-rank messages, built the first time anything reads them.

    Most callers (metrics, the planner) never do; building 260,000 records would be a third of
    a cluster-scale simulation. Each action's incoming messages follow ``ir.dep_keys``, the one
    dependency rule: sent when the producer ended, arrived one hop later.
    """

    def __init__(self, sim: _Run) -> None:
        self._sim: _Run | None = sim
        self._items: tuple[MessageEvent, ...] = ()

    def _all(self) -> tuple[MessageEvent, ...]:
        sim = self._sim
        if sim is not None:
            self._items, self._sim = sim.messages(), None
        return self._items

    def __len__(self) -> int:
        return len(self._all())

    def __getitem__(self, index: Any) -> Any:
        return self._all()[index]

    def __iter__(self) -> Iterator[MessageEvent]:
        return iter(self._all())

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str):
            return self._all() == tuple(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return repr(self._all())


class _Run:
    """The state of one simulation: finish tables, per-rank progress, recorded times."""

    def __init__(self, schedule: Schedule, costs: CostModel,
                 start: Sequence[float] | None = None,
                 durations: Mapping[Action, float] | None = None) -> None:
        stages, mbs = schedule.stages, schedule.microbatches
        self.schedule = schedule
        self.fin: dict[Op, Table] = {op: [[None] * mbs for _ in range(stages)] for op in Op}
        self.act: dict[Op, Table] = {op: [[None] * mbs for _ in range(stages)] for op in Op}
        self.split: list[list[bool]] = [[False] * mbs for _ in range(stages)]
        for s, mb in schedule.split_backward:
            if 0 <= s < stages and 0 <= mb < mbs:
                self.split[s][mb] = True
        self.raw, self.dur, self.hop = work_tables(schedule, costs)
        # actions with a time of their own: without (own_raw) and with (own) the send overhead
        self.own_raw = {a: float(x) for a, x in durations.items()} if durations else None
        self.own = None if self.own_raw is None else {
            a: x + self.dur[a.op][a.stage] - self.raw[a.op][a.stage]
            for a, x in self.own_raw.items()}
        self.overlap = costs.overlap
        self.begin = [float(x) for x in start] if start is not None else [0.0] * schedule.ranks
        self.gap = float(costs.action_overhead)
        self.next_index = [0] * schedule.ranks
        self.starts = [[0.0] * len(row) for row in schedule.actions]
        self.ends = [[0.0] * len(row) for row in schedule.actions]
        self.pair_at = pair_positions(schedule)  # per rank, where each pair's first part sits

    def run(self) -> None:
        """Advance ranks until each ends or parks; a finishing action wakes its waiters."""
        tables = (*(self.fin[op] for op in (_F, _I, _W, _B)),
                  *(self.act[op] for op in (_F, _I, _W, _B)),
                  *(self.dur[op] for op in (_F, _I, _W, _B)),
                  self.split, self.hop, self.schedule.stage_to_rank, self.schedule.stages - 1,
                  self.begin, self.pair_at, self, self.gap, self.own)
        rows, next_index, starts, ends = (self.schedule.actions, self.next_index, self.starts,
                                          self.ends)
        todo = list(range(self.schedule.ranks - 1, -1, -1))
        while todo:
            rank = todo.pop()
            next_index[rank] = _advance(rank, rows[rank], next_index[rank], starts[rank],
                                        ends[rank], todo, tables)

    def messages(self) -> tuple[MessageEvent, ...]:
        """Every cross-rank message of the finished run, rank by rank, by consumer order."""
        place, sched, fin, act, hop = (self.schedule.stage_to_rank, self.schedule, self.fin,
                                       self.act, self.hop)
        out: list[MessageEvent] = []
        for rank, row in enumerate(sched.actions):
            for a in row[:self.next_index[rank]]:
                for s, op, mb in dep_keys(a[0], a[1], a[2], sched):
                    src = place[s]
                    if src != rank:
                        sent = fin[op][s][mb]
                        out.append(_new(MessageEvent, (src, rank, act[op][s][mb], a, sent,
                                                       sent + hop[min(s, a[0])])))
        return tuple(out)

    def _slot(self, key: tuple[int, Op, int]) -> Any:
        s, op, mb = key
        return self.fin[op][s][mb]

    def raise_if_stuck(self) -> None:
        stuck: dict[int, tuple[Action, Action]] = {}
        for rank, row in enumerate(self.schedule.actions):
            if self.next_index[rank] < len(row):
                action = row[self.next_index[rank]]
                other = self.schedule.partner.get(action) if self.schedule.pairs else None
                wanted = (*deps(action, self.schedule),
                          *(deps(other, self.schedule) if other is not None else ()))
                missing = next(d for d in wanted if self._slot(d).__class__ is not float)
                stuck[rank] = (action, missing)
        if stuck:
            raise _deadlock(self.schedule, stuck)


def _advance(  # the hot loop, kept flat
    rank: int, row: tuple[Action, ...], i: int, starts: list[float], ends: list[float],
    todo: list[int], tables: tuple[Any, ...],
) -> int:
    """Run ``rank`` from its ``i``-th action until it ends or parks; returns where it stopped.

    A module function called at every park, not one long loop: CPython 3.11 specializes a
    code object's instructions only after several calls, and this loop needs them specialized.
    Actions that end append the ranks parked on them to ``todo``.
    """
    (fin_f, fin_i, fin_w, fin_b, act_f, act_i, act_w, act_b, dur_f, dur_i, dur_w, dur_b,
     split, hop, place, last, begin, pair_at, sim, gap, own) = tables
    F, I, W, B = _F, _I, _W, _B  # noqa: E741
    n = len(row)
    t = (ends[i - 1] if i else begin[rank]) + gap  # the engine's own time before each action
    firsts = pair_at[rank]
    k = bisect_left(firsts, i) if firsts else 0
    pair_i = firsts[k] if k < len(firsts) else n  # where the next overlapped pair starts
    while i < n:
        if i == pair_i:
            e = run_pair(sim, rank, row, i, t, todo)
            if e is None:
                return i
            t = e + gap
            i += 2
            k += 1
            pair_i = firsts[k] if k < len(firsts) else n
            continue
        a = row[i]
        s, op, mb = a
        if op is F:
            if s:
                p = s - 1
                d = fin_f[p][mb]
                if type(d) is not float:
                    park(fin_f[p], mb, d, rank)
                    return i
                if place[p] != rank:
                    d += hop[p]
                if d > t:
                    t = d
            done, who, e = fin_f[s], act_f[s], t + dur_f[s]
        elif op is W:
            d = fin_i[s][mb]
            if type(d) is not float:
                park(fin_i[s], mb, d, rank)
                return i
            if place[s] != rank:  # never in a valid schedule: I(s) runs on s's rank
                d += hop[s]
            if d > t:
                t = d
            done, who, e = fin_w[s], act_w[s], t + dur_w[s]
        else:
            if op is B:
                done, who, e = fin_b[s], act_b[s], dur_b[s]
            elif op is I:
                done, who, e = fin_i[s], act_i[s], dur_i[s]
            else:
                raise ValueError(f"{a}: op {op!r} is not one of F, I, W, B")
            d = fin_f[s][mb]
            if type(d) is not float:
                park(fin_f[s], mb, d, rank)
                return i
            if place[s] != rank:  # never in a valid schedule
                d += hop[s]
            if d > t:
                t = d
            if s < last:
                q = s + 1
                tab = fin_i if split[q][mb] else fin_b
                d = tab[q][mb]
                if type(d) is not float:
                    park(tab[q], mb, d, rank)
                    return i
                if place[q] != rank:
                    d += hop[s]
                if d > t:
                    t = d
            e += t
        if own is not None:  # a replay: this action's own time
            x = own.get(a)
            if x is not None:
                e = t + x
        starts[i] = t
        ends[i] = e
        waiting = done[mb]
        done[mb] = e
        t = e + gap
        who[mb] = a
        if waiting is not None:
            if waiting.__class__ is float:
                raise ValueError(f"{a} appears more than once on rank {rank}; "
                                 "validate the schedule first")
            todo += waiting
        i += 1
    return i


def _deadlock(schedule: Schedule, stuck: dict[int, tuple[Action, Action]]) -> DeadlockError:
    lines = []
    for r, (a, d) in sorted(stuck.items()):
        owner = schedule.stage_to_rank[d.stage]
        lines.append(f"  rank {r} waits at {a} for {d} (rank {owner})")
    marked = {a for a, _ in stuck.values()}
    return DeadlockError(
        f"deadlock: {len(stuck)} ranks can never continue; each waits on the next:\n"
        + "\n".join(lines) + "\n" + format_listing(schedule, marked), stuck)


__all__ = ["DeadlockError", "simulate"]
