"""Is a schedule runnable? Completeness, dependency order, deadlock, channel order, memory.

A schedule that passes ``validate`` can run on the runtime without deadlock: every action's
dependencies (``ir.deps``) can finish before it, given each rank's order. A part of an overlapped
pair waits for the dependencies of both parts (``ir.start_deps``): the pair ends only once both
parts' inputs are in, whether its parts run one after the other or as one unit.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from pipesim.ir import Action, Op, Schedule, deps, start_deps
from pipesim.timeline import peak_stash

_MAX_REPORTED = 8  # problems listed per kind before "... and N more"


@dataclass(frozen=True)
class Message:
    """A tensor that crosses ranks: ``producer``'s output is an input of ``consumer``."""

    src: int
    dst: int
    producer: Action
    consumer: Action

    @property
    def kind(self) -> str:
        return "activation" if self.consumer.op is Op.F else "gradient"


@dataclass(frozen=True)
class Report:
    """What ``validate`` found: errors make a schedule invalid; warnings do not."""

    schedule: Schedule
    errors: tuple[str, ...]
    warnings: tuple[str, ...]
    peak_activations: tuple[int, ...]

    @property
    def ok(self) -> bool:
        return not self.errors


class InvalidScheduleError(ValueError):
    """Raised by ``check``; ``report`` holds every finding."""

    def __init__(self, report: Report) -> None:
        super().__init__("\n".join(report.errors))
        self.report = report


def validate(schedule: Schedule) -> Report:
    """Every check; returns a Report (never raises for a bad schedule)."""
    errors = _check_complete(schedule)
    if not errors:
        errors = _check_pairs(schedule)
    if not errors:
        errors = _check_same_rank_order(schedule) or _check_cycles(schedule)
    warnings = channel_order_warnings(schedule) if not errors else []
    return Report(schedule, tuple(errors), tuple(warnings), peak_activations(schedule))


def check(schedule: Schedule) -> Report:
    """``validate``, raising InvalidScheduleError when the schedule cannot run."""
    report = validate(schedule)
    if not report.ok:
        raise InvalidScheduleError(report)
    return report


# ----------------------------------------------------------------------------- completeness


def _capped(problems: list[str]) -> list[str]:
    if len(problems) <= _MAX_REPORTED:
        return problems
    return [*problems[:_MAX_REPORTED], f"... and {len(problems) - _MAX_REPORTED} more"]


def _check_complete(schedule: Schedule) -> list[str]:
    problems: list[str] = []
    where: dict[Action, list[tuple[int, int]]] = {}
    for rank, row in enumerate(schedule.actions):
        for step, a in enumerate(row):
            if not 0 <= a.stage < schedule.stages:
                problems.append(f"{a} on rank {rank}: stage {a.stage} is out of range "
                                f"(the schedule has stages 0..{schedule.stages - 1})")
            elif not 0 <= a.microbatch < schedule.microbatches:
                problems.append(f"{a} on rank {rank}: microbatch {a.microbatch} is out of range "
                                f"(0..{schedule.microbatches - 1})")
            elif schedule.stage_to_rank[a.stage] != rank:
                problems.append(f"{a} is on rank {rank}, but stage {a.stage} belongs to rank "
                                f"{schedule.stage_to_rank[a.stage]}")
            where.setdefault(a, []).append((rank, step))
    for a, places in where.items():
        if len(places) > 1:
            at = ", ".join(f"rank {r} step {s}" for r, s in places)
            problems.append(f"{a} appears {len(places)} times ({at})")
    for r in schedule.stage_to_rank:
        if not 0 <= r < schedule.ranks:
            problems.append(f"stage_to_rank names rank {r}, but there are {schedule.ranks} ranks")
    problems += _missing(schedule, where.keys())
    return _capped(problems)


def _missing(schedule: Schedule, present: Iterable[Action]) -> list[str]:
    have = set(present)
    problems = []
    for s in range(schedule.stages):
        for mb in range(schedule.microbatches):
            a = {op: Action(s, op, mb) in have for op in Op}
            if not a[Op.F]:
                problems.append(f"missing {Action(s, Op.F, mb)}")
            if schedule.forward_only:
                continue
            if a[Op.B] and (a[Op.I] or a[Op.W]):
                problems.append(f"stage {s} microbatch {mb} has both a full backward "
                                f"({Action(s, Op.B, mb)}) and a split one (I/W)")
            elif not a[Op.B] and not (a[Op.I] and a[Op.W]):
                lacking = [Action(s, op, mb) for op in (Op.I, Op.W) if not a[op]]
                if len(lacking) == 2:
                    problems.append(f"missing the backward of stage {s} microbatch {mb} "
                                    f"({Action(s, Op.B, mb)}, or {lacking[0]} and {lacking[1]})")
                else:
                    problems.append(f"missing {lacking[0]}")
    return problems


# ----------------------------------------------------------------------------- overlapped pairs


def _check_pairs(schedule: Schedule) -> list[str]:
    """Each pair: a forward then a backward (B or I), next to each other on one rank, neither
    needing the other's output (a pair's outputs leave only when both parts have run)."""
    pos = _positions(schedule)
    problems = []
    seen: set[Action] = set()
    for first, second in sorted(schedule.pairs):
        shown = f"({first};{second})OVERLAP_F_B"
        if first.op is not Op.F or second.op not in (Op.B, Op.I):
            problems.append(f"pair {shown}: a pair overlaps a forward with a backward, "
                            "(F;B) or (F;I) in that order")
        elif first in seen or second in seen:
            problems.append(f"pair {shown}: an action belongs to at most one pair")
        elif first not in pos or second not in pos or pos[first][0] != pos[second][0] \
                or pos[second][1] != pos[first][1] + 1:
            problems.append(f"pair {shown}: its two actions must be next to each other on one "
                            "rank, the forward first\n" + format_listing(schedule, {first, second}))
        elif first in deps(second, schedule):
            problems.append(f"pair {shown}: {second} needs {first}'s output, but a pair's "
                            "outputs leave only when the pair ends; pair it with another "
                            "microbatch\n" + format_listing(schedule, {first, second}))
        seen.update((first, second))
    return _capped(problems)


# ----------------------------------------------------------------------------- order and cycles


def _positions(schedule: Schedule) -> dict[Action, tuple[int, int]]:
    return {a: (r, i) for r, row in enumerate(schedule.actions) for i, a in enumerate(row)}


def _check_same_rank_order(schedule: Schedule) -> list[str]:
    pos = _positions(schedule)
    problems = []
    for a, (rank, step) in pos.items():
        for d in start_deps(a, schedule):
            if d in pos and pos[d][0] == rank and pos[d][1] > step:
                paired = (f" (it is paired with {schedule.partner[a]}, whose dependency that is)"
                          if d not in deps(a, schedule) else "")
                problems.append(
                    f"{a} runs before its own dependency {d} on rank {rank} "
                    f"(step {step} < step {pos[d][1]}){paired}\n"
                    + format_listing(schedule, {a, d})
                )
    return _capped(problems)


def _predecessors(a: Action, schedule: Schedule,
                  pos: dict[Action, tuple[int, int]]) -> list[Action]:
    rank, step = pos[a]
    preds = [d for d in start_deps(a, schedule) if d in pos]
    if step > 0:
        preds.append(schedule.actions[rank][step - 1])
    return preds


def _check_cycles(schedule: Schedule) -> list[str]:
    """Kahn's algorithm on rank order + data dependencies; leftovers hold a cycle."""
    pos = _positions(schedule)
    preds = {a: _predecessors(a, schedule, pos) for a in pos}
    waiting = {a: len(p) for a, p in preds.items()}
    succs: dict[Action, list[Action]] = {a: [] for a in pos}
    for a, ps in preds.items():
        for p in ps:
            succs[p].append(a)
    ready = deque(a for a, n in waiting.items() if n == 0)
    done = 0
    while ready:
        a = ready.popleft()
        done += 1
        for b in succs[a]:
            waiting[b] -= 1
            if waiting[b] == 0:
                ready.append(b)
    if done == len(pos):
        return []
    stuck = {a for a, n in waiting.items() if n > 0}
    cycle = find_cycle(stuck, preds)
    chain = " -> ".join(f"{a} (rank {pos[a][0]})" for a in cycle)
    return [f"deadlock: {len(stuck)} actions can never start; in the cycle {chain} -> "
            f"{cycle[0]}, each action waits on the next (a dependency, one of its overlapped "
            f"pair's, or the action before it on its rank)\n"
            + format_listing(schedule, set(cycle))]


def find_cycle(stuck: set[Action], preds: dict[Action, list[Action]]) -> list[Action]:
    """A cycle among ``stuck`` actions, each element waiting on the next (the last on the first).

    Every stuck action has a stuck predecessor, so walking predecessors from any of them must
    come back to an action already seen; the walk from there on is the cycle.
    """
    node = min(stuck)
    seen: dict[Action, int] = {}
    path: list[Action] = []
    while node not in seen:
        seen[node] = len(path)
        path.append(node)
        node = next(p for p in preds[node] if p in stuck)
    return path[seen[node]:]


def format_listing(schedule: Schedule, marked: set[Action], width: int = 14) -> str:
    """Per rank, its actions in schedule order (the listing; ``views.grid`` draws the timed step
    grid) with ``[marked]`` ones bracketed, around the marks."""
    pos = _positions(schedule)
    steps = [pos[a][1] for a in marked if a in pos] or [0]
    lo = max(0, min(steps) - width // 2)
    hi = max(max(steps) + 2, lo + width)
    lines = []
    for rank, row in enumerate(schedule.actions):
        cells = _grid_cells(schedule, row[lo:hi], marked)
        more = " ..." if hi < len(row) else ""
        lines.append(f"  rank {rank}: {'... ' if lo else ''}{''.join(cells)}{more}".rstrip())
    return "\n".join(lines)


def _grid_cells(schedule: Schedule, row: tuple[Action, ...], marked: set[Action]) -> list[str]:
    """One cell per action; an overlapped pair is one cell in its text form, ``(F;B)``."""
    cells, i = [], 0
    while i < len(row):
        a = row[i]
        pair = i + 1 < len(row) and (a, row[i + 1]) in schedule.pairs
        text, parts = (f"({a};{row[i + 1]})", (a, row[i + 1])) if pair else (str(a), (a,))
        cells.append(f"[{text}]" if marked.intersection(parts) else f" {text} ")
        i += len(parts)
    return cells


# ----------------------------------------------------------------------------- messages


def messages(schedule: Schedule) -> list[Message]:
    """Every cross-rank tensor the schedule implies, in consumer order per rank."""
    out = []
    for rank, row in enumerate(schedule.actions):
        for a in row:
            for d in deps(a, schedule):
                src = schedule.stage_to_rank[d.stage]
                if src != rank:
                    out.append(Message(src, rank, d, a))
    return out


def channel_order_warnings(schedule: Schedule) -> list[str]:
    """Channels (src -> dst) where the sender's order differs from the receiver's.

    nccl matches messages on a channel in posting order; a runtime must then post receives in
    the sender's order (pipesim's does, by tagging each message) to run such a schedule.
    """
    pos = _positions(schedule)
    channels: dict[tuple[int, int], list[Message]] = {}
    for msg in messages(schedule):
        channels.setdefault((msg.src, msg.dst), []).append(msg)
    found = []
    for (src, dst), msgs in sorted(channels.items()):
        sent = sorted(msgs, key=lambda m: pos[m.producer][1])
        used = sorted(msgs, key=lambda m: pos[m.consumer][1])
        if sent != used:
            k = next(i for i, (x, y) in enumerate(zip(sent, used, strict=True)) if x != y)
            found.append(
                f"channel rank {src} -> rank {dst}: message {k} is sent for {sent[k].consumer} "
                f"but the receiver first needs the one for {used[k].consumer} (the order of "
                f"sending and consuming differs; receives must follow the sender's order)"
            )
    return found


# ----------------------------------------------------------------------------- memory


def peak_activations(schedule: Schedule) -> tuple[int, ...]:
    """Per rank, the most forward activations stashed at once (``timeline.peak_stash``).

    An F stashes its activations; a B frees them, and when backward is split, its W does (the
    weight gradient still needs the stage's inputs). Forward-only schedules stash nothing.
    """
    return peak_stash(schedule.actions)


def peak_in_rank_stashes(schedule: Schedule) -> tuple[float, ...]:
    """``peak_activations`` in rank stashes, as ``timeline.stash_over_time`` counts them: every
    stage of a rank holding v stages stashes 1/v of the rank's share, so the count divides by v."""
    return tuple(n / max(1, len(schedule.stages_of(r)))
                 for r, n in enumerate(peak_activations(schedule)))


__all__ = [
    "InvalidScheduleError", "Message", "Report", "channel_order_warnings", "check", "find_cycle",
    "format_listing", "messages", "peak_activations", "peak_in_rank_stashes", "validate"
]
