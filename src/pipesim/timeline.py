"""What happened (or would): per-rank timed events and messages, their metrics, JSON round trip.

The simulator and the runtime both produce a Timeline; the views draw one without knowing which.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter
from typing import Any, NamedTuple, overload

from pipesim.ir import STASH_DELTA, Action, ActionKey, Op, parse_action


class Event(NamedTuple):
    """``rank`` ran ``action`` from ``start`` to ``end``."""

    rank: int
    action: Action
    start: float
    end: float

    @property
    def duration(self) -> float:
        return self.end - self.start


class MessageEvent(NamedTuple):
    """A tensor sent by ``src`` when ``producer`` ended, available to ``dst`` at ``arrive``."""

    src: int
    dst: int
    producer: Action
    consumer: Action
    send: float
    arrive: float


class Span(NamedTuple):
    """Other timed work on a rank that is not a schedule action (e.g. a gradient all-reduce)."""

    rank: int
    name: str
    start: float
    end: float


@dataclass(frozen=True)
class Timeline:
    """Events per rank plus messages; ``unit`` says what a time of 1.0 means."""

    ranks: int
    events: tuple[Event, ...]
    messages: Sequence[MessageEvent] = ()  # simulate() builds them on first read
    unit: str = "units"
    name: str = ""
    stage_to_rank: tuple[int, ...] = ()
    microbatches: int = 0
    spans: tuple[Span, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    # the schedule's overlapped pairs (``Schedule.pairs``): each drawn as its two adjacent events
    pairs: frozenset[tuple[Action, Action]] = frozenset()
    stash_bytes: tuple[float, ...] = ()  # per stage, what an F keeps for backward; () unknown

    @property
    def start(self) -> float:
        return min((e.start for e in self.events), default=0.0)

    @property
    def end(self) -> float:
        return max((e.end for e in self.events), default=0.0)

    @property
    def makespan(self) -> float:
        return self.end - self.start

    def by_rank(self) -> list[list[Event]]:
        """Events of each rank in start order."""
        rows: list[list[Event]] = [[] for _ in range(self.ranks)]
        for e in self.events:
            rows[e.rank].append(e)
        order = itemgetter(2, 3)  # (start, end), without a Python call per event
        for row in rows:
            row.sort(key=order)
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name, "ranks": self.ranks, "unit": self.unit,
            "microbatches": self.microbatches, "stage_to_rank": list(self.stage_to_rank),
            "events": [[e.rank, str(e.action), e.start, e.end] for e in self.events],
            "messages": [[m.src, m.dst, str(m.producer), str(m.consumer), m.send, m.arrive]
                         for m in self.messages],
            "spans": [[s.rank, s.name, s.start, s.end] for s in self.spans],
            "meta": self.meta,
            **({"pairs": sorted([str(f), str(b)] for f, b in self.pairs)} if self.pairs else {}),
            **({"stash_bytes": list(self.stash_bytes)} if self.stash_bytes else {}),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Timeline:
        return cls(
            ranks=int(d["ranks"]),
            events=tuple(Event(int(r), parse_action(a), float(s), float(e))
                         for r, a, s, e in d["events"]),
            messages=tuple(MessageEvent(int(s), int(t), parse_action(p), parse_action(c),
                                        float(x), float(y))
                           for s, t, p, c, x, y in d.get("messages", [])),
            unit=str(d.get("unit", "units")), name=str(d.get("name", "")),
            stage_to_rank=tuple(int(x) for x in d.get("stage_to_rank", [])),
            microbatches=int(d.get("microbatches", 0)),
            spans=tuple(Span(int(r), str(n), float(s), float(e))
                        for r, n, s, e in d.get("spans", [])),
            meta=dict(d.get("meta", {})),
            pairs=frozenset((parse_action(f), parse_action(b)) for f, b in d.get("pairs", [])),
            stash_bytes=tuple(float(x) for x in d.get("stash_bytes", [])),
        )

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Timeline:
        return cls.from_dict(json.loads(text))


@dataclass(frozen=True)
class RankMetrics:
    busy: float
    idle: float
    bubble_fraction: float
    peak_activations: int  # stashes alive at once, each counted 1 whatever its stage's size
    peak_activation_bytes: float | None = None
    peak_stash: float = 0.0  # in rank stashes (see stash_over_time): compares across v


@dataclass(frozen=True)
class Metrics:
    makespan: float
    bubble_fraction: float  # 1 - total busy / (ranks x makespan)
    per_rank: tuple[RankMetrics, ...]

    @property
    def peak(self) -> RankMetrics:
        """The rank that keeps the most for backward: by bytes when known, else rank stashes."""
        return max(self.per_rank, key=lambda r: (r.peak_activation_bytes or 0.0, r.peak_stash),
                   default=RankMetrics(0.0, 0.0, 0.0, 0))

    def to_dict(self) -> dict[str, Any]:
        return {
            "makespan": self.makespan,
            "bubble_fraction": self.bubble_fraction,
            "per_rank": [
                {"busy": r.busy, "idle": r.idle, "bubble_fraction": r.bubble_fraction,
                 "peak_activations": r.peak_activations, "peak_stash": r.peak_stash,
                 **({"peak_activation_bytes": r.peak_activation_bytes}
                    if r.peak_activation_bytes is not None else {})}
                for r in self.per_rank
            ],
        }


def bubble_fraction(busy: float, ranks: int, makespan: float) -> float:
    """The one bubble rule: 1 - busy / (ranks x makespan); 0 for an empty timeline.

    ``busy`` sums the action time of all ``ranks`` (1 and one rank's busy time give that rank's).
    """
    return 1 - busy / (ranks * makespan) if makespan > 0 else 0.0


@overload
def peak_stash(rows: Sequence[Sequence[ActionKey]], stash_bytes: None = None
               ) -> tuple[int, ...]: ...
@overload
def peak_stash(rows: Sequence[Sequence[ActionKey]], stash_bytes: Sequence[float]
               ) -> tuple[float, ...]: ...
def peak_stash(rows: Sequence[Sequence[ActionKey]], stash_bytes: Sequence[float] | None = None
               ) -> tuple[int, ...] | tuple[float, ...]:
    """The one peak-stash walk: per rank, the most activations alive at once.

    ``rows`` holds each rank's actions (or ``(stage, op, microbatch)`` tuples) in the order they
    run; ``ir.STASH_DELTA`` says what each does: F(s) stashes, B(s) or W(s) (split backward)
    frees, I keeps. Counts, or bytes when ``stash_bytes[s]`` gives stage s's stash. A rank's
    actions that do not change the stash may be left out. Forward-only work stashes nothing.
    """
    if all(a[1] is Op.F for row in rows for a in row):
        return tuple(0 if stash_bytes is None else 0.0 for _ in rows)
    if stash_bytes is None:
        return tuple(max(accumulate((STASH_DELTA[a[1]] for a in row), initial=0))
                     for row in rows)
    return tuple(max(accumulate((STASH_DELTA[op] * stash_bytes[s] for s, op, _ in row),
                                initial=0.0)) for row in rows)


class StashChange(NamedTuple):
    """When ``event`` starts (an F stashes) or ends (a B, or W, frees), its rank holds ``level``."""

    time: float
    level: float
    event: Event


def stage_shares(timeline: Timeline) -> dict[int, float]:
    """Each stage's share of its rank's model: 1/v on a rank that holds v stages."""
    held: dict[int, set[int]] = {}
    pairs = {(e[0], e[1][0]) for e in timeline.events} | {
        (r, s) for s, r in enumerate(timeline.stage_to_rank)}
    for r, s in pairs:
        held.setdefault(r, set()).add(s)
    return {s: 1 / len(stages) for stages in held.values() for s in stages}


def stash_over_time(timeline: Timeline, sizes: Sequence[float] | dict[int, float] | None = None,
                    ) -> list[list[StashChange]]:
    """Per rank, every change of the activations it keeps for backward, in time order.

    The one memory rule, ``ir.STASH_DELTA``, says what each op does; an F's stash counts from
    its start, a freeing action's until its end. ``sizes[stage]`` is what one F of the stage
    keeps: by default ``timeline.stash_bytes`` when known, else the stage's share of its rank
    (``stage_shares``), so the level is in *rank stashes*: one microbatch's activations of a
    rank's whole share of the model, whether the rank holds it as one stage or as v (zbv's
    chunks count 1/2 each). A forward-only timeline keeps nothing.
    """
    if sizes is None:
        sizes = timeline.stash_bytes or stage_shares(timeline)
    rows: list[list[StashChange]] = [[] for _ in range(timeline.ranks)]
    if all(e[1][1] is Op.F for e in timeline.events):
        return rows
    for rank, row in enumerate(timeline.by_rank()):
        level = 0.0
        for e in row:
            delta = STASH_DELTA[e[1][1]]
            if delta:
                level += delta * sizes[e[1][0]]
                rows[rank].append(StashChange(e[2] if delta > 0 else e[3], level, e))
    return rows


def _peaks(row: Sequence[Event], sizes: Sequence[dict[int, float] | Sequence[float]],
           ) -> list[float]:
    """The highest level of ``stash_over_time``'s walk of one rank: first counting each stash
    1, then for each table of sizes."""
    delta = STASH_DELTA
    moves = [(d, e[1][0]) for e in row if (d := delta[e[1][1]])]
    counts = max(accumulate((d for d, _ in moves), initial=0))
    return [float(counts), *(max(accumulate([d * table[s] for d, s in moves], initial=0.0))
                             for table in sizes)]


def metrics(timeline: Timeline, stash_bytes: Sequence[float] | None = None) -> Metrics:
    """Makespan, busy/idle/bubble per rank and in total, peak stash (count, rank stashes, bytes).

    Peaks are ``stash_over_time``'s highest levels; bytes come from ``stash_bytes`` or else
    ``timeline.stash_bytes``, None when neither knows them.
    """
    span = timeline.makespan
    stash_bytes = stash_bytes or timeline.stash_bytes or None
    forward_only = all(e[1][1] is Op.F for e in timeline.events)
    shares = stage_shares(timeline)
    sizes: list[dict[int, float] | Sequence[float]] = [shares]
    if stash_bytes:
        sizes.append(stash_bytes)
    per_rank = []
    for row in timeline.by_rank():
        busy = sum(e[3] - e[2] for e in row)
        peaks = [0.0] * (1 + len(sizes)) if forward_only else _peaks(row, sizes)
        per_rank.append(RankMetrics(busy, span - busy, bubble_fraction(busy, 1, span),
                                    round(peaks[0]), peaks[2] if stash_bytes else None,
                                    peaks[1]))
    total_busy = sum(r.busy for r in per_rank)
    return Metrics(span, bubble_fraction(total_busy, timeline.ranks, span), tuple(per_rank))


__all__ = ["Event", "MessageEvent", "Metrics", "RankMetrics", "Span", "StashChange", "Timeline",
           "bubble_fraction", "metrics", "peak_stash", "stage_shares", "stash_over_time"]
