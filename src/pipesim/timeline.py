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
    peak_activations: int
    peak_activation_bytes: float | None = None


@dataclass(frozen=True)
class Metrics:
    makespan: float
    bubble_fraction: float  # 1 - total busy / (ranks x makespan)
    per_rank: tuple[RankMetrics, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "makespan": self.makespan,
            "bubble_fraction": self.bubble_fraction,
            "per_rank": [
                {"busy": r.busy, "idle": r.idle, "bubble_fraction": r.bubble_fraction,
                 "peak_activations": r.peak_activations,
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


def metrics(timeline: Timeline, stash_bytes: Sequence[float] | None = None) -> Metrics:
    """Makespan, busy/idle/bubble per rank and in total, peak stashed activations."""
    span = timeline.makespan
    rows = timeline.by_rank()
    actions = [[e[1] for e in row] for row in rows]
    peaks = peak_stash(actions)
    peak_bytes: Sequence[float | None] = (
        peak_stash(actions, stash_bytes) if stash_bytes else [None] * len(rows))
    per_rank = []
    for row, peak, peak_b in zip(rows, peaks, peak_bytes, strict=True):
        busy = sum(e[3] - e[2] for e in row)
        per_rank.append(RankMetrics(busy, span - busy, bubble_fraction(busy, 1, span),
                                    peak, peak_b))
    total_busy = sum(r.busy for r in per_rank)
    return Metrics(span, bubble_fraction(total_busy, timeline.ranks, span), tuple(per_rank))


__all__ = ["Event", "MessageEvent", "Metrics", "RankMetrics", "Span", "Timeline",
           "bubble_fraction", "metrics", "peak_stash"]
