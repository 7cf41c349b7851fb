"""List-scheduling simulator: a Schedule and a CostModel give a Timeline.

Each rank runs its actions in the schedule's order. An action starts when its rank is free and
each dependency (``ir.dep_keys``, the one rule) has finished and its message, if it crosses ranks,
has arrived. Sends never block the sender. Work is linear in the number of actions: a rank that
meets an unfinished dependency parks on it and is woken when that action ends.
"""

from __future__ import annotations

from pipesim.costs import CostModel
from pipesim.ir import Action, ActionKey, Op, Schedule, dep_keys, deps
from pipesim.timeline import Event, MessageEvent, Timeline
from pipesim.validate import format_grid

_new = tuple.__new__  # builds the NamedTuple records without their Python-level __new__


class DeadlockError(RuntimeError):
    """No rank can make progress; ``stuck`` maps each unfinished rank to (action, missing dep)."""

    def __init__(self, message: str, stuck: dict[int, tuple[Action, Action]]) -> None:
        super().__init__(message)
        self.stuck = stuck


def simulate(schedule: Schedule, costs: CostModel | None = None) -> Timeline:
    """Time every action of ``schedule`` under ``costs`` (uniform F=1, I=W=1, B=2 by default)."""
    costs = costs or CostModel.uniform(schedule.stages)
    if costs.stages != schedule.stages:
        raise ValueError(f"the cost model has {costs.stages} stages; the schedule has "
                         f"{schedule.stages}")
    place = schedule.stage_to_rank
    duration = {Op.F: costs.forward, Op.I: costs.backward_input, Op.W: costs.backward_weight,
                Op.B: costs.backward}
    # message time across the boundary between stage b and b+1, either direction
    hop = [costs.message_time(Action(b, Op.F, 0), Action(b + 1, Op.F, 0))
           for b in range(schedule.stages)]
    finish: dict[ActionKey, float] = {}
    free = [0.0] * schedule.ranks
    next_index = [0] * schedule.ranks
    waiters: dict[ActionKey, list[int]] = {}
    events: list[Event] = []
    messages: list[MessageEvent] = []
    todo = list(range(schedule.ranks))
    while todo:
        rank = todo.pop()
        row = schedule.actions[rank]
        i = next_index[rank]
        while i < len(row):
            action = row[i]
            stage, op, mb = action
            needs = dep_keys(stage, op, mb, schedule)
            blocked = next((d for d in needs if d not in finish), None) if needs else None
            if blocked is not None:
                waiters.setdefault(blocked, []).append(rank)
                break
            ready = free[rank]
            for dep in needs:
                done = finish[dep]
                src = place[dep[0]]
                if src != rank:
                    arrive = done + hop[min(dep[0], stage)]
                    messages.append(_new(MessageEvent, (src, rank, Action(*dep), action, done,
                                                        arrive)))
                    done = arrive
                if done > ready:
                    ready = done
            end = ready + duration[op][stage]
            events.append(_new(Event, (rank, action, ready, end)))
            finish[action] = free[rank] = end
            i += 1
            woken = waiters.pop(action, None)
            if woken:
                todo.extend(woken)
        next_index[rank] = i
    _raise_if_stuck(schedule, next_index, finish)
    return Timeline(schedule.ranks, tuple(events), tuple(messages), costs.unit, schedule.name,
                    schedule.stage_to_rank, schedule.microbatches)


def _raise_if_stuck(schedule: Schedule, next_index: list[int],
                    finish: dict[ActionKey, float]) -> None:
    stuck: dict[int, tuple[Action, Action]] = {}
    for rank, row in enumerate(schedule.actions):
        if next_index[rank] < len(row):
            action = row[next_index[rank]]
            missing = next(d for d in deps(action, schedule) if d not in finish)
            stuck[rank] = (action, missing)
    if not stuck:
        return
    lines = []
    for r, (a, d) in sorted(stuck.items()):
        owner = schedule.stage_to_rank[d.stage]
        lines.append(f"  rank {r} waits at {a} for {d} (rank {owner})")
    marked = {a for a, _ in stuck.values()}
    raise DeadlockError(
        f"deadlock: {len(stuck)} ranks can never continue; each waits on the next:\n"
        + "\n".join(lines) + "\n" + format_grid(schedule, marked), stuck)
