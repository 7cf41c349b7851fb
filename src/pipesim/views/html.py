"""One self-contained HTML page per run or simulation: an interactive timeline plus its numbers.

API (all a command needs for ``--html out.html``)::

    from pipesim.views.html import HtmlSection, render_html, render_timeline_html

    page = render_timeline_html(timeline, "1f1b, 4 ranks", facts={"throughput": "812 samples/s"})

    page = render_html(
        [HtmlSection("1f1b", tl_a), HtmlSection("zb-h1", tl_b, facts={"loss": 2.31})],
        title="compare: 4 ranks, 8 microbatches",
        summary={"cost model": "uniform F=1 B=2"},
    )

``HtmlSection(title, timeline, facts)`` is one timeline drawn with its metrics (makespan, bubble per
rank and in total, peak stashed activations per rank) and the caller's ``facts`` (a mapping of
label to text or number, e.g. throughput, loss per step). Sections appear in the caller's order,
one above the other, on a shared time axis (zooming one zooms all); with two or more a summary
table sorted by makespan comes first. ``summary`` is shown as labelled values under the title.

The page holds everything inline (data as JSON, script, style) and fetches nothing, so it works
from ``file://`` and offline. In it: ranks are rows and actions boxes coloured by op (F I W B)
labelled with their microbatch (colours from ``views.style``, as in the PNG); under each rank its
memory lane, the activations it keeps for backward (``timeline.stash_over_time``; a full lane is
the page's highest peak, in bytes when the timeline knows them, else in rank stashes), drawn
in both modes; a box carries ``data-action="2F0"`` and ``data-rank``; hovering
shows start, end, duration (in the timeline's unit) and what the action waited for (its
dependencies by ``ir.dep_keys`` and when each was ready, message arrival included). Messages are
arrows shown on demand; spans (e.g. all-reduce) are drawn in a thin lane under their rank. Wheel
zooms and drag pans; keys ``+ - <- -> 0`` do the same. "Steps" redraws each action one unit wide
at its place in the unit-time grid. Times count from each timeline's first event (or span) and
read in s, ms or us as the longest timeline of that unit suits (``style.time_unit``).
The visible range is on each ``svg.timeline`` as ``data-view-start``/``data-view-end`` and in
``window.pipesimView``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from pipesim.ir import STASH_DELTA, Action, Schedule, dep_keys, start_deps
from pipesim.schedule_io import schedule_from_rows
from pipesim.timeline import Event, Metrics, Timeline, metrics, stash_over_time
from pipesim.views.style import (
    OP_COLORS,
    OP_LABELS,
    STASH_COLOR,
    memory_unit,
    peak_of,
    peak_text,
    time_unit,
)

__all__ = ["HtmlSection", "render_html", "render_timeline_html"]

Fact = str | float


@dataclass(frozen=True)
class HtmlSection:
    """One timeline on the page: its heading, the timeline and extra numbers to show beside it."""

    title: str
    timeline: Timeline
    facts: Mapping[str, Fact] = field(default_factory=dict)


def render_timeline_html(timeline: Timeline, title: str | None = None,
                         facts: Mapping[str, Fact] | None = None) -> str:
    """The page for a single timeline (``title`` defaults to the timeline's name)."""
    name = title if title is not None else (timeline.name or "pipesim")
    return render_html([HtmlSection(name, timeline, dict(facts or {}))], title=name)


def render_html(sections: Sequence[HtmlSection], title: str = "pipesim",
                summary: Mapping[str, Any] | None = None) -> str:
    """The whole page as one string; ``sections`` are drawn in order, one above the other."""
    if not sections:
        raise ValueError("render_html needs at least one section")
    measured = [metrics(s.timeline) for s in sections]
    payload: dict[str, Any] = {"sections": [_section_data(s) for s in sections],
                               "ops": {op.value: label for op, label in OP_LABELS.items()}}
    _share_units(payload["sections"], [s.timeline for s in sections])
    cards = "\n".join(_card_html(i, s, m)
                      for i, (s, m) in enumerate(zip(sections, measured, strict=True)))
    table = _summary_table(sections, measured) if len(sections) > 1 else ""
    esc = html.escape
    colours = "".join(f"--op-{op.value}: {c}; " for op, c in OP_COLORS.items())
    css = _asset("html.css") + f":root {{ {colours}--stash: {STASH_COLOR}; }}\n"
    return _PAGE.format(
        title=esc(title), css=css,
        js=_asset("html.js"), summary=_summary_list(summary or {}), table=table, cards=cards,
        legend=_LEGEND, data=_script_json(payload), heading=esc(title),
    )


def _share_units(data: list[dict[str, Any]], timelines: Sequence[Timeline]) -> None:
    """Sections of one time unit share one shown unit (s, ms or us, by the longest) and
    sections that count memory alike share one full-lane level (the highest peak)."""
    longest: dict[str, float] = {}
    top: dict[str, float] = {}
    for d in data:
        longest[d["unit"]] = max(longest.get(d["unit"], 0.0), d["extent"])
        top[d["memory"]["kind"]] = max(top.get(d["memory"]["kind"], 0.0), d["memory"]["peak"])
    for d, tl in zip(data, timelines, strict=True):
        d["timeScale"], d["timeUnit"] = time_unit(longest[d["unit"]], d["unit"])
        mem = d["memory"]
        mem["full"] = top[mem["kind"]]
        mem["scale"], mem["unit"] = memory_unit(tl, mem["full"])


# ----------------------------------------------------------------------------- data for the script


def _section_data(section: HtmlSection) -> dict[str, Any]:
    """The section as compact JSON: events (by rank, in start order), deps, steps, messages."""
    tl = section.timeline
    events = [e for row in tl.by_rank() for e in row]
    origin = min([e.start for e in events] + [s.start for s in tl.spans], default=0.0)
    deps = _dependencies(tl, events)
    steps = _unit_steps(events, [[j for j, _ in d] for d in deps])
    index = {e.action: i for i, e in enumerate(events)}
    messages = [[index[m.producer], index[m.consumer], m.src, m.dst,
                 _num(m.send - origin), _num(m.arrive - origin)]
                for m in tl.messages if m.producer in index and m.consumer in index]
    extent = max([e.end for e in events] + [s.end for s in tl.spans]
                 + [m.arrive for m in tl.messages], default=origin) - origin
    return {
        "title": section.title, "unit": tl.unit, "ranks": tl.ranks, "extent": _num(extent),
        "steps": max((s + 1 for s in steps), default=0),
        "events": [[e.rank, str(e.action), _num(e.start - origin), _num(e.end - origin), st, ch]
                   for e, st, ch in zip(events, steps, _chunks(tl, events), strict=True)],
        "deps": [[[j, _num(ready - origin)] for j, ready in d] for d in deps],
        "messages": messages,
        "spans": [[s.rank, s.name, _num(s.start - origin), _num(s.end - origin)]
                  for s in tl.spans],
        "memory": _memory_data(tl, index),
    }


def _memory_data(tl: Timeline, index: dict[Action, int]) -> dict[str, Any]:
    """Each rank's stash changes as [event index, 0 at its start or 1 at its end, level]: the
    script places them on either x axis (time, or the event's step)."""
    stash = stash_over_time(tl)
    ranks = [[[index[c.event.action], int(STASH_DELTA[c.event.action.op] < 0), _num(c.level)]
              for c in row] for row in stash]
    return {"kind": "bytes" if tl.stash_bytes else "stashes", "peak": _num(peak_of(stash)),
            "ranks": ranks}


def _chunks(tl: Timeline, events: Sequence[Event]) -> list[int]:
    """Each event's stage as its rank's 0th, 1st, ... stage (drawn paler when odd)."""
    held: dict[int, set[int]] = {}
    for s, r in enumerate(tl.stage_to_rank):
        held.setdefault(r, set()).add(s)
    for e in events:
        held.setdefault(e.rank, set()).add(e.action.stage)
    order = {(r, s): k for r, stages in held.items() for k, s in enumerate(sorted(stages))}
    return [order[e.rank, e.action.stage] for e in events]


def _as_schedule(tl: Timeline, events: Sequence[Event]) -> Schedule | None:
    """The schedule the timeline ran, for the dependency rule; None when it cannot be rebuilt."""
    rows: list[list[Action]] = [[] for _ in range(tl.ranks)]
    for e in events:
        rows[e.rank].append(e.action)
    try:
        return schedule_from_rows(rows, tl.name, len(tl.stage_to_rank) or None, None,
                                  tl.stage_to_rank or None, tl.pairs)
    except (ValueError, IndexError):
        return None


def _dependencies(tl: Timeline, events: Sequence[Event]) -> list[list[tuple[int, float]]]:
    """For each event, (index of each dependency, time its result was ready on this rank)."""
    schedule = _as_schedule(tl, events)
    if schedule is None:
        return [[] for _ in events]
    index = {e.action: i for i, e in enumerate(events)}
    arrive = {(m.producer, m.consumer): m.arrive for m in tl.messages}
    out: list[list[tuple[int, float]]] = []
    # an overlapped pair waits for both parts' inputs, and its outputs are ready at its end
    last = {f: b for f, b in schedule.pairs}
    for e in events:
        found = []
        for d in start_deps(e.action, schedule) if schedule.pairs else dep_keys(*e.action,
                                                                                 schedule):
            producer = Action(*d)
            j = index.get(last.get(producer, producer))
            if j is not None:
                found.append((j, arrive.get((producer, e.action), events[j].end)))
        out.append(found)
    return out


def _unit_steps(events: Sequence[Event], deps: Sequence[Sequence[int]]) -> list[int]:
    """Each event's step when every action takes one step and messages none (the unit grid).

    ``events`` are grouped by rank in run order. A cycle (a broken measured timeline) is cut by
    placing the earliest stuck action as if its unplaced dependencies were done.
    """
    n = len(events)
    steps = [-1] * n
    bounds: dict[int, list[int]] = {}
    for i, e in enumerate(events):
        bounds.setdefault(e.rank, [i, i])[1] = i + 1
    ptr = {r: b[0] for r, b in bounds.items()}
    placed = 0
    while placed < n:
        progress = False
        for r, (lo, hi) in bounds.items():
            while ptr[r] < hi and all(steps[j] >= 0 for j in deps[ptr[r]]):
                steps[ptr[r]] = _step_at(ptr[r], lo, steps, deps[ptr[r]])
                ptr[r] += 1
                placed += 1
                progress = True
        if not progress:
            r = next(r for r, (_, hi) in bounds.items() if ptr[r] < hi)
            steps[ptr[r]] = _step_at(ptr[r], bounds[r][0], steps, deps[ptr[r]])
            ptr[r] += 1
            placed += 1
    return steps


def _step_at(i: int, first: int, steps: Sequence[int], deps: Sequence[int]) -> int:
    after = steps[i - 1] + 1 if i > first else 0
    return max([after] + [steps[j] + 1 for j in deps if steps[j] >= 0])


def _num(x: float) -> float | int:
    """A time rounded to 7 significant digits: small JSON, exact for simulated times."""
    r = float(f"{x:.7g}")
    return int(r) if r.is_integer() and abs(r) < 2**53 else r


def _script_json(data: Any) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' can end the element or start markup."""
    text = json.dumps(data, separators=(",", ":"), allow_nan=False)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _asset(name: str) -> str:
    return (resources.files("pipesim.views") / "html_assets" / name).read_text("utf-8")


# ----------------------------------------------------------------------------- static HTML


def _fmt(value: Any) -> str:
    """Numbers to 4 significant digits (integers exact); anything else as text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.4g}"


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _summary_list(summary: Mapping[str, Any]) -> str:
    items = "".join(f"<div><dt>{html.escape(str(k))}</dt><dd>{html.escape(_fmt(v))}</dd></div>"
                    for k, v in summary.items())
    return f'<dl class="summary">{items}</dl>' if items else ""


def _card_html(i: int, section: HtmlSection, m: Metrics) -> str:
    """A section: heading, the plot (filled by the script) and its numbers beside it."""
    esc = html.escape
    tl = section.timeline
    unit = esc(tl.unit)
    counts = [(tl.ranks, "rank", "ranks"), (len(tl.events), "action", "actions"),
              (tl.microbatches, "microbatch", "microbatches")]
    sub = " · ".join(f"{n} {one if n == 1 else many}" for n, one, many in counts if n)
    facts = "".join(f"<div><dt>{esc(str(k))}</dt><dd>{esc(_fmt(v))}</dd></div>"
                    for k, v in section.facts.items())
    rows = "".join(
        f"<tr><td>{r}</td><td>{_pct(rm.bubble_fraction)}</td><td>{esc(peak_text(rm))}</td></tr>"
        for r, rm in enumerate(m.per_rank))
    return f"""<section class="card" data-section="{i}">
<h2>{esc(section.title)} <span class="sub">{esc(sub)}</span></h2>
<div class="card-body">
<div class="plot"><svg class="timeline" data-section="{i}" role="img"
 aria-label="timeline of {esc(section.title)}"></svg></div>
<aside class="numbers">
<dl class="big"><div><dt>makespan</dt><dd class="makespan">{_fmt(m.makespan)} {unit}</dd></div>
<div><dt>bubble</dt><dd class="bubble">{_pct(m.bubble_fraction)}</dd></div></dl>
{f'<dl class="facts">{facts}</dl>' if facts else ""}
<table class="per-rank"><thead><tr><th>rank</th><th>bubble</th><th title="most activations kept
 for backward at once: bytes when known, else rank stashes">peak stash</th></tr></thead>
<tbody>{rows}</tbody></table>
</aside>
</div>
</section>"""


def _summary_table(sections: Sequence[HtmlSection], measured: Sequence[Metrics]) -> str:
    """One row per section, fastest first, with every fact any section has."""
    esc = html.escape
    keys = list(dict.fromkeys(k for s in sections for k in s.facts))
    order = sorted(range(len(sections)), key=lambda i: measured[i].makespan)
    best = measured[order[0]].makespan
    head = "".join(f"<th>{esc(k)}</th>" for k in keys)
    body = []
    for i in order:
        s, m = sections[i], measured[i]
        ratio = f"{m.makespan / best:.2f}×" if best > 0 else "–"
        peak = esc(peak_text(m.peak))
        cells = "".join(f"<td>{esc(_fmt(s.facts[k]))}</td>" if k in s.facts else "<td>–</td>"
                        for k in keys)
        body.append(f'<tr data-section="{i}"><td class="name">{esc(s.title)}</td>'
                    f"<td>{_fmt(m.makespan)} {esc(s.timeline.unit)}</td><td>{ratio}</td>"
                    f"<td>{_pct(m.bubble_fraction)}</td><td>{peak}</td>{cells}</tr>")
    return ('<section class="card compare"><h2>Summary <span class="sub">sorted by makespan'
            '</span></h2><table class="summary-table"><thead><tr><th>timeline</th>'
            "<th>makespan</th><th>vs best</th><th>bubble</th><th>peak stash</th>"
            f"{head}</tr></thead><tbody>{''.join(body)}</tbody></table></section>")


_LEGEND = '<div class="legend">\n' + "".join(
    f'<span><i class="sw op-{op.value}"></i>{op.value} {label}</span>\n'
    for op, label in OP_LABELS.items()) + """\
<span><i class="sw op-F odd"></i>pale: a rank's 2nd, 4th… stage</span>
<span><i class="sw mem"></i>activations kept (memory lane)</span>
<span><i class="sw span"></i>span</span>
<span><i class="sw msg"></i>message</span>
</div>"""

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="pipesim">
<link rel="icon" href="data:,">
<title>{title}</title>
<style>
{css}</style>
</head>
<body>
<header class="top">
<h1>{heading}</h1>
{summary}
</header>
<nav class="toolbar">
<div class="seg" role="group" aria-label="x axis">
<button type="button" id="mode-time" class="on" aria-pressed="true">Time</button>
<button type="button" id="mode-step" aria-pressed="false">Steps</button>
</div>
<label class="check"><input type="checkbox" id="show-messages"> messages</label>
<div class="seg" role="group" aria-label="zoom">
<button type="button" id="zoom-out" title="zoom out (-)">−</button>
<button type="button" id="zoom-in" title="zoom in (+)">+</button>
<button type="button" id="zoom-reset" title="reset (0)">reset</button>
</div>
<span class="hint">wheel zoom · drag pan · keys + − ← → 0</span>
{legend}
</nav>
<main>
{table}
{cards}
</main>
<div id="tooltip" role="tooltip" hidden></div>
<script type="application/json" id="pipesim-data">{data}</script>
<script>
{js}</script>
</body>
</html>
"""
