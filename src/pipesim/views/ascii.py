"""A time-scaled rank-by-time chart for the terminal.

Each action is drawn over the columns its duration covers, starting with its op letter and
microbatch (``F3``, then ``-`` to its end); ``.`` is idle. When time must be compressed to fit,
a column shows the op that covers most of it, or ``.`` if the rank is idle for most of it. A
rank with spans (the gradient all-reduce of data parallelism) gets a line below its own, ``=``
where a span covers most of the column. Under each rank, its memory lane: the activations it
keeps for backward (``timeline.stash_over_time``), the most in each column, as blocks from
``▁`` to ``█`` (the highest peak of any rank), with the rank's own peak at the right::

    1f1b: 2 ranks, makespan 9 units, bubble 33.3%; 1 column = 0.5 units
            0         5
    rank 0 |F0F1........B0--B1--| 33.3%
           |████████████████▄▄▄▄  2
    rank 1 |..F0B0--F1B1--......| 33.3%
           |  ▄▄▄▄  ▄▄▄▄          1
    F forward (blue in pictures), I ...
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipesim.ir import Op
from pipesim.timeline import Event, Span, StashChange, Timeline, metrics, stash_over_time
from pipesim.views.style import OP_COLOR_NAMES, drawn_range, memory_unit, peak_of, time_unit

LEGEND = ("F forward, I input-grad, W weight-grad, B backward (I+W); "
          "F3 = op + microbatch, - its extent, . idle\n"
          "in PNG and HTML: " + ", ".join(f"{op.value} {OP_COLOR_NAMES[op]}" for op in Op))
BLOCKS = "▁▂▃▄▅▆▇█"


def render_ascii(timeline: Timeline, width: int = 100, legend: bool = True,
                 memory: bool = True) -> str:
    """The chart, ``width`` columns wide at most, with a header, a time ruler and a legend;
    ``memory`` adds each rank's memory lane."""
    measured = metrics(timeline)
    label = len(f"rank {timeline.ranks - 1}")
    suffix = 7  # "| 33.3%"
    columns = max(10, width - label - 2 - suffix)
    span = timeline.makespan
    origin, end = drawn_range(timeline)
    drawn = end - origin
    scale = _scale(drawn, columns)  # columns per time unit
    columns = max(1, min(columns, math.ceil(drawn * scale - 1e-9))) if drawn else 1
    factor, unit = time_unit(drawn, timeline.unit)
    name = timeline.name or "timeline"
    lines = [f"{name}: {timeline.ranks} ranks, makespan {span * factor:g} {unit}, "
             f"bubble {measured.bubble_fraction:.1%}; 1 column = {factor / scale:g} "
             f"{'unit' if unit == 'units' and factor / scale == 1 else unit}"]
    lines.append(" " * (label + 2) + _ruler(columns, scale, factor))
    stash = stash_over_time(timeline) if memory else []
    peak = peak_of(stash)
    for rank, row in enumerate(timeline.by_rank()):
        cells = _draw_row(row, origin, scale, columns)
        frac = measured.per_rank[rank].bubble_fraction
        lines.append(f"{f'rank {rank}':<{label}} |{cells}| {frac:.1%}")
        spans = _draw_spans([x for x in timeline.spans if x.rank == rank], origin, scale, columns)
        if "=" in spans:
            lines.append(f"{'':<{label}} |{spans}|")
        if peak > 0:
            lane = _draw_memory(stash[rank], origin, scale, columns, peak)
            lines.append(f"{'':<{label}} |{lane}  {_amount(timeline, stash[rank], peak)}")
    if legend:
        lines.append(LEGEND + ("; = all-reduce" if timeline.spans else ""))
        if peak > 0:
            lines.append(f"memory lanes: activations kept for backward; █ = "
                         f"{_amount(timeline, [], peak)}, each rank's peak at its right")
    return "\n".join(lines)


def _amount(timeline: Timeline, changes: Sequence[StashChange], peak: float) -> str:
    """A rank's peak (or ``peak`` when no changes are given) in the chart's memory unit."""
    top = max((c.level for c in changes), default=0.0) if changes else peak
    factor, unit = memory_unit(timeline, peak)
    text = f"{top * factor:.3g}"
    return f"{text} {'rank stash' if text == '1' and unit == 'rank stashes' else unit}"


def _draw_memory(changes: Sequence[StashChange], origin: float, scale: float, columns: int,
                 peak: float) -> str:
    """The most a rank holds during each column, as a block of 8 heights (blank: nothing)."""
    out = []
    level, i = 0.0, 0
    for c in range(columns):
        start, end = origin + c / scale, origin + (c + 1) / scale
        while i < len(changes) and changes[i].time <= start:  # done as the column begins
            level = changes[i].level
            i += 1
        most = level
        while i < len(changes) and changes[i].time < end:
            level = changes[i].level
            most = max(most, level)
            i += 1
        share = most / peak
        out.append(" " if share < 1e-9 else BLOCKS[min(7, math.ceil(8 * share - 1e-9) - 1)])
    return "".join(out)


def _scale(span: float, columns: int) -> float:
    """Columns per time unit: a whole number when the chart fits, else a compression."""
    if span <= 0:
        return 1.0
    fit = columns / span
    return _nice_at_most(fit) if fit >= 1 else 1 / _nice_at_least(1 / fit)


def _nice_at_most(x: float) -> float:
    """The largest of 1, 2, 4, 5, 10, 20, 40, 50, ... not above ``x`` (x >= 1)."""
    best = 1.0
    for exp in range(0, 12):
        for m in (1, 2, 4, 5):
            v = m * 10.0 ** exp
            if v <= x:
                best = v
    return best


def _nice_at_least(x: float, steps: Sequence[float] = (1, 2, 2.5, 5)) -> float:
    """The smallest of ``steps`` x 10^k (1, 2, 2.5, 5, 10, 20, ...) not below ``x``."""
    exp = math.floor(math.log10(x)) if x > 0 else 0
    for e in (exp - 1, exp, exp + 1):
        for m in steps:
            v = m * 10.0 ** e
            if v >= x - 1e-12:
                return v
    return 10.0 ** (exp + 1)


def _ruler(columns: int, scale: float, factor: float = 1.0) -> str:
    """Round times (1, 2 or 5 x 10^k apart), at least 8 columns apart, above the chart; each
    shown times ``factor`` (the header's time unit)."""
    every = _nice_at_least(8 / scale, (1, 2, 5))
    out = [" "] * columns
    k = 0
    while (c := round(k * every * scale)) < columns:
        text = f"{k * every * factor:.6g}"
        if c + len(text) <= columns:
            out[c:c + len(text)] = text
        k += 1
    return "".join(out).rstrip()


def _draw_row(row: Sequence[Event], origin: float, scale: float, columns: int) -> str:
    """One rank's cells: each column goes to the event that covers most of it."""
    cover = [0.0] * columns  # busy share of each column
    best = [0.0] * columns
    owner: list[Event | None] = [None] * columns
    for e in row:
        a, b = (e.start - origin) * scale, (e.end - origin) * scale
        for c in range(max(0, int(a)), min(columns, math.ceil(b))):
            part = min(b, c + 1) - max(a, c)
            cover[c] += part
            if part > best[c]:
                best[c], owner[c] = part, e
    shown = [e if e is not None and cover[c] >= 0.5 else None for c, e in enumerate(owner)]
    room: dict[Event, int] = {}  # columns each event got
    for ev in shown:
        if ev is not None:
            room[ev] = room.get(ev, 0) + 1
    cells = ["."] * columns
    drawn: dict[Event, int] = {}  # characters of each event's label already placed
    for c, ev in enumerate(shown):
        if ev is None:
            continue
        text = f"{ev.action.op.value}{ev.action.microbatch}"
        if room[ev] < len(text):
            text = ev.action.op.value  # a cut number would name another microbatch
        k = drawn.get(ev, 0)
        cells[c] = text[k] if k < len(text) else "-"
        drawn[ev] = k + 1
    return "".join(cells)


def _draw_spans(spans: Sequence[Span], origin: float, scale: float, columns: int) -> str:
    """``=`` where the rank's spans cover at least half of a column, else a space."""
    cover = [0.0] * columns
    for x in spans:
        a, b = (x.start - origin) * scale, (x.end - origin) * scale
        for c in range(max(0, int(a)), min(columns, math.ceil(b))):
            cover[c] += min(b, c + 1) - max(a, c)
    return "".join("=" if share >= 0.5 else " " for share in cover)


__all__ = ["LEGEND", "render_ascii"]
