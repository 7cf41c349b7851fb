"""A Timeline as a Chrome trace (open in chrome://tracing or https://ui.perfetto.dev).

One process per rank (named ``rank N``), one complete ("X") event per action named like ``F0``
or ``B3`` with its op, stage and microbatch in ``args``, one complete event per span, and a flow
("s" at the producer, "f" at the consumer) per message between ranks, and per rank a counter
("C") of the activations it keeps for backward (``timeline.stash_over_time``: bytes when the
timeline knows them, else rank stashes), which Perfetto draws as a memory track. Trace times are
microseconds: ``ms`` and ``s`` timelines are converted; a time of 1 in ``units`` is shown as 1 ms.
"""

from __future__ import annotations

import json
from typing import Any

from pipesim.ir import Action, Op
from pipesim.timeline import Event, Timeline, stash_over_time
from pipesim.views.style import OP_LABELS

US_PER_UNIT = {"us": 1.0, "ms": 1e3, "s": 1e6, "units": 1e3}
_OP_NAMES = OP_LABELS
_COMPUTE_TID, _SPAN_TID = 0, 1


def render_chrome_trace(timeline: Timeline) -> dict[str, Any]:
    """The trace as a JSON-ready dict (``json.dumps`` it, or use ``chrome_trace_json``)."""
    scale = US_PER_UNIT.get(timeline.unit, 1e3)
    origin = timeline.start

    def us(t: float) -> float:
        return round((t - origin) * scale, 3)

    out: list[dict[str, Any]] = []
    for rank in range(timeline.ranks):
        out.append({"ph": "M", "name": "process_name", "pid": rank, "tid": _COMPUTE_TID,
                    "args": {"name": f"rank {rank}"}})
        out.append({"ph": "M", "name": "process_sort_index", "pid": rank, "tid": _COMPUTE_TID,
                    "args": {"sort_index": rank}})
        out.append({"ph": "M", "name": "thread_name", "pid": rank, "tid": _COMPUTE_TID,
                    "args": {"name": "compute"}})
    for e in timeline.events:
        a = e.action
        out.append({"ph": "X", "name": f"{a.op.value}{a.microbatch}", "cat": _OP_NAMES[a.op],
                    "pid": e.rank, "tid": _COMPUTE_TID, "ts": us(e.start),
                    "dur": round((e.end - e.start) * scale, 3),
                    "args": {"op": a.op.value, "stage": a.stage, "microbatch": a.microbatch,
                             "action": str(a)}})
    for s in timeline.spans:
        out.append({"ph": "X", "name": s.name, "cat": "span", "pid": s.rank, "tid": _SPAN_TID,
                    "ts": us(s.start), "dur": round((s.end - s.start) * scale, 3)})
    out.extend(_flows(timeline, us))
    out.extend(_memory(timeline, us))
    return {"traceEvents": out, "displayTimeUnit": "ms",
            "otherData": {"name": timeline.name, "unit": timeline.unit,
                          "us_per_unit": scale, "ranks": timeline.ranks}}


def chrome_trace_json(timeline: Timeline) -> str:
    return json.dumps(render_chrome_trace(timeline))


def _memory(timeline: Timeline, us: Any) -> list[dict[str, Any]]:
    """A counter per rank: its stash level from the start, at each change."""
    unit = "bytes" if timeline.stash_bytes else "rank stashes"
    out: list[dict[str, Any]] = []
    for rank, changes in enumerate(stash_over_time(timeline)):
        if changes:
            out.append({"ph": "C", "name": "activations kept", "pid": rank, "ts": 0.0,
                        "args": {unit: 0.0}})
        out.extend({"ph": "C", "name": "activations kept", "pid": rank, "ts": us(c.time),
                    "args": {unit: round(c.level, 9)}} for c in changes)
    return out


def _flows(timeline: Timeline, us: Any) -> list[dict[str, Any]]:
    """An arrow per message: from inside the producer's slice to the consumer's start."""
    where: dict[Action, Event] = {e.action: e for e in timeline.events}
    out: list[dict[str, Any]] = []
    for k, m in enumerate(timeline.messages):
        prod, cons = where.get(m.producer), where.get(m.consumer)
        if prod is None or cons is None:
            continue
        kind = "activation" if m.consumer.op is Op.F else "gradient"
        args = {"producer": str(m.producer), "consumer": str(m.consumer),
                "sent": m.send, "arrived": m.arrive}
        # "s" must fall inside the producer's slice to bind to it; "f" binds to the
        # consumer's slice that starts at its ts ("bp": "e" = enclosing slice)
        mid = (prod.start + prod.end) / 2
        out.append({"ph": "s", "id": k, "name": kind, "cat": "message", "pid": m.src,
                    "tid": _COMPUTE_TID, "ts": us(mid), "args": args})
        out.append({"ph": "f", "bp": "e", "id": k, "name": kind, "cat": "message",
                    "pid": m.dst, "tid": _COMPUTE_TID, "ts": us(cons.start)})
    return out


__all__ = ["US_PER_UNIT", "chrome_trace_json", "render_chrome_trace"]
