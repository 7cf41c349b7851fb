"""Processor sharing: the simulator for ranks that share fewer CPU cores than there are ranks.

``simulate_shared(schedule, costs, cores, start, before, after)`` has ``simulate``'s semantics
(the one dependency rule ``ir.dep_keys``; a message crossing ranks arrives
``costs.message_time`` after its producer ends; the sender's ``send_overhead`` is part of the
producing action's work, as ``simulate.work_tables`` says; the engine's ``action_overhead``
before each action; ``start[r]`` when rank r becomes free; an overlapped pair as
``overlap.run_pair`` times it: with an overlap gain one unit of ``overlap x (F + B)`` plus each
part's send overhead, started once both parts' dependencies are met; without, its F then its B,
each once its own input is in; both outputs leaving at its end), except that CPU work is
shared, the "fluid" model of processor sharing (``before[r]``/``after[r]``: CPU work rank r
does before its first action and after its last, e.g. the optimizer update between two steps,
shared like the rest):

    at any instant n ranks do CPU work (run an action or spend the engine's time before one);
    each progresses at rate min(1, cores / n).

A rank waiting for a dependency or a message, or for its ``start``, uses no CPU; neither does a
message in transit. With ``cores >= schedule.ranks`` the rate is always 1 and the timeline is
``simulate``'s (equal to rounding).

Event-driven, with a virtual clock: every rank that computes progresses at the same rate, so
one number V(t), the work a computing rank has done since time 0 (dV/dt = rate), gives each
unit of work a fixed finishing tag (V when it began + its work). The next event is the smallest
tag (reached at the current rate) or the next message arrival or rank start, whichever is first;
no remaining work is updated per event, so nothing drifts. V is kept piecewise linear (an anchor
(t, V, rate) each time the rate changes); with the rate always 1 it is exactly t, which is what
makes the times equal ``simulate``'s. An overlapped pair's F ends where the pair's work passes
``overlap x F`` (its B then runs to the pair's end), as in ``overlap.run_pair``.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence

from pipesim.checks import is_positive_int
from pipesim.costs import CostModel
from pipesim.ir import Action, ActionKey, Schedule, dep_keys, deps
from pipesim.overlap import pair_positions
from pipesim.simulate import _deadlock, _out_of_range, checked_costs, work_tables
from pipesim.timeline import Event, MessageEvent, Timeline

__all__ = ["simulate_shared"]

# what a rank is doing
_SLEEP, _GAP, _WAIT, _RUN, _TAIL, _DONE = range(6)  # before start[r]; engine's time (and
# ``before`` work); blocked; action; ``after`` work; done
_EPS = 1e-12  # remaining work at most this x the scale counts as done


def simulate_shared(schedule: Schedule, costs: CostModel | None, cores: int,
                    start: Sequence[float] | None = None, before: Sequence[float] = (),
                    after: Sequence[float] = ()) -> Timeline:
    """Time every action of ``schedule`` under ``costs`` on ``cores`` CPU cores shared by the
    ranks (module docstring); ``simulate`` when ``cores >= schedule.ranks`` and nothing is
    done before or after.

    ``costs`` None: uniform (F=1, I=W=1, B=2); ``start``: each rank's free time (all 0);
    ``before``/``after``: per rank, CPU work before its first action (from ``start``) and after
    its last (none by default). The timeline's ``meta["cores"]`` is ``cores`` and
    ``meta["finished"]`` each rank's end, its ``after`` work included. Raises ValueError for
    ``cores < 1``, for ``before``/``after`` without one time >= 0 per rank and for what
    ``simulate`` refuses; DeadlockError (``pipesim.simulate``) when the ranks' orders can
    never complete, with ``simulate``'s ``stuck``.
    """
    if not is_positive_int(cores):
        raise ValueError(f"cores must be an integer >= 1, got {cores!r}")
    costs = checked_costs(schedule, costs, start)
    for name, extra in (("before", before), ("after", after)):
        if extra and (len(extra) != schedule.ranks or not all(x >= 0 for x in extra)):
            raise ValueError(f"{name} needs one time >= 0 per rank ({schedule.ranks}); got "
                             f"{list(extra)}")
    for row in schedule.actions:
        for a in row:
            if not (0 <= a.stage < schedule.stages and 0 <= a.microbatch < schedule.microbatches):
                raise ValueError(_out_of_range(schedule))
    run = _Shared(schedule, costs, cores, start, before, after)
    run.run()
    run.raise_if_stuck()
    return run.timeline()


class _Shared:
    """One shared-core simulation: per-rank state, the virtual clock, finish times."""

    def __init__(self, schedule: Schedule, costs: CostModel, cores: int,
                 start: Sequence[float] | None, before: Sequence[float] = (),
                 after: Sequence[float] = ()) -> None:
        self.schedule, self.costs, self.cores = schedule, costs, cores
        self.raw, self.dur, self.hop = work_tables(schedule, costs)
        self.gap = float(costs.action_overhead)
        ranks = schedule.ranks
        self.before = [float(x) for x in before] if before else [0.0] * ranks
        self.after = [float(x) for x in after] if after else [0.0] * ranks
        self.finished = [0.0] * ranks  # each rank's end, its after-work included
        self.begin = [float(x) for x in start] if start is not None else [0.0] * ranks
        positions = pair_positions(schedule)
        # with an overlap gain a pair is one unit; without, two actions whose F's output (and
        # send overhead) is held until the B ends (``overlap.run_pair``)
        unit = costs.overlap != 1.0
        self.pair_at = [set(at) if unit else set() for at in positions]
        self.held = {} if unit else {second: first for first, second in schedule.pairs}
        self.holding = set(self.held.values())
        self.starts = [[0.0] * len(row) for row in schedule.actions]
        self.ends = [[0.0] * len(row) for row in schedule.actions]
        self.index = [0] * ranks  # the rank's next (or current) unit in its row
        self.phase = [_SLEEP] * ranks
        self.began = [(0.0, 0.0)] * ranks  # (t, V) at which the current RUN began
        self.free = [(0.0, 0.0)] * ranks  # (t, V) at which the rank last became free
        self.fin: dict[ActionKey, float] = {}  # action -> its end
        self.waiters: dict[ActionKey, list[int]] = {}  # action -> ranks blocked on it
        # rank -> the V at which its GAP or RUN ends (its tag), for the ranks computing
        self.computing: dict[int, float] = {}
        # rank -> the time it can go on: its start (SLEEP) or its inputs' arrival (WAIT)
        self.pending: dict[int, float] = dict(enumerate(self.begin))
        # the virtual clock's anchors: V(t) = v + (t - t0) x rate from each on
        self.anchor_t, self.anchor_v, self.anchor_rate = [0.0], [0.0], [1.0]
        self.now = min(self.begin, default=0.0)
        # the largest unit of work: with the clock's magnitude, what "nothing left" is near
        self.scale = max(2 * max(x for table in self.dur.values() for x in table), self.gap,
                         *self.before, *self.after)

    # ------------------------------------------------------------------ the virtual clock

    def v_at(self, t: float) -> float:
        """V at time ``t`` (not before the last anchor)."""
        return self.anchor_v[-1] + (t - self.anchor_t[-1]) * self.anchor_rate[-1]

    def t_at(self, v: float) -> float:
        """The time V reaches ``v`` (any v reached since the first anchor)."""
        k = max(0, bisect_right(self.anchor_v, v) - 1)
        return self.anchor_t[k] + (v - self.anchor_v[k]) / self.anchor_rate[k]

    # ------------------------------------------------------------------ the loop

    def run(self) -> None:
        """Advance from event to event until no rank computes and none waits for a time."""
        computing, pending = self.computing, self.pending
        while computing or pending:
            first = min(computing, key=computing.__getitem__) if computing else -1
            t_work = self.t_at(computing[first]) if computing else math.inf
            t_wake = min(pending.values(), default=math.inf)
            if t_work <= t_wake:  # the unit of work with the least left ends (and any tied)
                v = computing[first]
                self.now = max(self.now, t_work)
                limit = v + _EPS * max(abs(v), self.scale)
                for rank in [r for r, x in computing.items() if x <= limit]:
                    self.finish(rank)
            else:  # a rank starts, or a rank's inputs have all arrived
                self.now, v = t_wake, self.v_at(t_wake)
                for rank in [r for r, x in pending.items() if x <= t_wake]:
                    del pending[rank]
                    if self.phase[rank] == _SLEEP:
                        self.become_free(rank, t_wake, v)
                    else:
                        self.launch(rank, t_wake, v)
            n = len(computing)
            rate = 1.0 if n <= self.cores else self.cores / n
            if rate != self.anchor_rate[-1]:  # V goes on from here at the new rate
                self.anchor_t.append(self.now)
                self.anchor_v.append(max(v, self.anchor_v[-1]))
                self.anchor_rate.append(rate)

    def unit(self, rank: int) -> tuple[Action, ...]:
        """The rank's current unit: its next action, or both parts of an overlapped pair."""
        row, i = self.schedule.actions[rank], self.index[rank]
        return row[i:i + 2] if i in self.pair_at[rank] else row[i:i + 1]

    def become_free(self, rank: int, t: float, v: float) -> None:
        """``rank`` is free at time t (V = v): its engine's time (and before its first action
        its ``before`` work), then its next unit; after its last, its ``after`` work."""
        i, n = self.index[rank], len(self.schedule.actions[rank])
        if i >= n:
            if self.phase[rank] != _TAIL and self.after[rank] > 0:
                self.phase[rank] = _TAIL
                self.computing[rank] = v + self.after[rank]
            else:
                self.phase[rank], self.finished[rank] = _DONE, t
            return
        gap = self.gap + (self.before[rank] if i == 0 else 0.0)
        if gap > 0:
            self.phase[rank] = _GAP
            self.computing[rank] = v + gap
        else:
            self.phase[rank], self.free[rank] = _WAIT, (t, v)
            self.try_start(rank)

    def try_start(self, rank: int) -> None:
        """Start the rank's unit if its inputs are in hand, schedule it if they are on their way,
        or park the rank on the first unfinished dependency (``ir.dep_keys``)."""
        place, fin, hop = self.schedule.stage_to_rank, self.fin, self.hop
        ready = self.free[rank][0]
        for part in self.unit(rank):
            for key in dep_keys(part[0], part[1], part[2], self.schedule):
                done = fin.get(key)
                if done is None:
                    self.waiters.setdefault(key, []).append(rank)
                    return
                if place[key[0]] != rank:
                    done += hop[min(key[0], part[0])]
                if done > ready:
                    ready = done
        if ready > self.now:
            self.pending[rank] = ready
        else:
            t, v = self.free[rank]
            self.launch(rank, ready, v if ready == t else self.v_at(ready))

    def launch(self, rank: int, t: float, v: float) -> None:
        """Begin the rank's unit at time t (V = v); its work ends at tag v + work."""
        parts, raw, dur = self.unit(rank), self.raw, self.dur
        if len(parts) == 2:  # overlapped: as overlap.run_pair sums it
            (s1, op1, _), (s2, op2, _) = parts
            tag = (v + self.costs.overlap * (raw[op1][s1] + raw[op2][s2])
                   + (dur[op1][s1] - raw[op1][s1]) + (dur[op2][s2] - raw[op2][s2]))
        elif parts[0] in self.holding:  # a pair's F: its send is paid at the pair's end
            tag = v + raw[parts[0][1]][parts[0][0]]
        elif parts[0] in self.held:  # a pair's B: both sends
            first = self.held[parts[0]]
            tag = (v + dur[parts[0][1]][parts[0][0]]
                   + dur[first[1]][first[0]] - raw[first[1]][first[0]])
        else:
            tag = v + dur[parts[0][1]][parts[0][0]]
        self.phase[rank], self.began[rank] = _RUN, (t, v)
        self.computing[rank] = tag

    def finish(self, rank: int) -> None:
        """The rank's GAP or RUN has done its work: record it, wake whoever waits on it."""
        tag = self.computing.pop(rank)
        end = self.t_at(tag)
        if self.phase[rank] == _TAIL:
            self.become_free(rank, end, tag)
            return
        if self.phase[rank] == _GAP:
            self.phase[rank], self.free[rank] = _WAIT, (end, tag)
            self.try_start(rank)
            return
        parts, i = self.unit(rank), self.index[rank]
        t, v = self.began[rank]
        self.starts[rank][i] = t
        self.ends[rank][i + len(parts) - 1] = end
        if len(parts) == 2:  # the F for overlap x F of the pair's work, then the B
            s1, op1 = parts[0][0], parts[0][1]
            mid = self.t_at(v + self.costs.overlap * self.raw[op1][s1])
            self.ends[rank][i] = self.starts[rank][i + 1] = min(max(mid, t), end)
        done: tuple[Action, ...] = parts  # what this unit's end releases
        if parts[0] in self.holding:  # a pair's F: its output leaves with the B
            done = ()
        elif parts[0] in self.held:
            done = (self.held[parts[0]], parts[0])
        for a in done:
            key = (a[0], a[1], a[2])
            if key in self.fin:
                raise ValueError(f"{a} appears more than once on rank {rank}; "
                                 "validate the schedule first")
            self.fin[key] = end
        self.index[rank] = i + len(parts)
        self.become_free(rank, end, tag)
        for a in done:
            for other in self.waiters.pop((a[0], a[1], a[2]), ()):
                self.try_start(other)

    # ------------------------------------------------------------------ results

    def raise_if_stuck(self) -> None:
        """DeadlockError naming each rank that never finished and the action it waits for."""
        sched, stuck = self.schedule, dict[int, tuple[Action, Action]]()
        for rank, row in enumerate(sched.actions):
            if self.phase[rank] != _DONE:
                action = row[self.index[rank]]
                action = self.held.get(action, action)  # a pair is reported at its start
                other = sched.partner.get(action) if sched.pairs else None
                wanted = (*deps(action, sched), *(deps(other, sched) if other else ()))
                stuck[rank] = (action, next(d for d in wanted if d not in self.fin))
        if stuck:
            raise _deadlock(sched, stuck)

    def timeline(self) -> Timeline:
        """Events rank by rank in row order; messages likewise, by consumer (as simulate)."""
        sched, place, fin, hop = self.schedule, self.schedule.stage_to_rank, self.fin, self.hop
        events = tuple(Event(rank, a, self.starts[rank][i], self.ends[rank][i])
                       for rank, row in enumerate(sched.actions) for i, a in enumerate(row))
        messages = []
        for rank, row in enumerate(sched.actions):
            for a in row:
                for s, op, mb in dep_keys(a[0], a[1], a[2], sched):
                    if place[s] != rank:
                        sent = fin[s, op, mb]
                        messages.append(MessageEvent(place[s], rank, Action(s, op, mb), a, sent,
                                                     sent + hop[min(s, a[0])]))
        return Timeline(sched.ranks, events, tuple(messages), self.costs.unit, sched.name,
                        sched.stage_to_rank, sched.microbatches,
                        meta={"cores": self.cores, "finished": list(self.finished)},
                        pairs=sched.pairs, stash_bytes=self.costs.stash_bytes)
