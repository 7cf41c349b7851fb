"""PNG pictures with matplotlib (imported only when a picture is drawn, on the Agg backend).

``render_png`` draws one or more timelines as Gantt charts stacked one above the other (e.g.
predicted above measured): ranks are rows, actions bars coloured by op (F blue, I orange,
W green, B red; a rank's later stages lighter), microbatch numbers inside bars that have room,
makespan and bubble fraction in each title. ``render_bars_png`` draws compare's bar chart.
"""

from __future__ import annotations

import io
import os
import tempfile
from collections.abc import Sequence
from typing import Any

from pipesim.ir import Op
from pipesim.timeline import Timeline, metrics

OP_COLORS = {Op.F: "#4C72B0", Op.I: "#DD8452", Op.W: "#55A868", Op.B: "#C44E52"}
OP_LABELS = {Op.F: "F forward", Op.I: "I backward (input)", Op.W: "W backward (weights)",
             Op.B: "B backward"}
_MAX_LABELS = 4000  # microbatch numbers drawn at most, per timeline


class PlotUnavailableError(RuntimeError):
    """matplotlib is not installed."""


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise PlotUnavailableError("PNG output needs matplotlib: pip install 'pipesim[plot]' "
                                   "(or pip install matplotlib)") from None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def render_png(timelines: Sequence[tuple[str, Timeline]], path: str) -> None:
    """Write ``png_bytes(timelines)`` to ``path`` (whole or not at all)."""
    data = png_bytes(timelines)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pipesim-", suffix=".png", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)  # mkstemp makes it private; a picture is not
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def png_bytes(timelines: Sequence[tuple[str, Timeline]], dpi: int = 110) -> bytes:
    """The Gantt charts of ``(title, timeline)`` pairs, stacked, as PNG bytes."""
    if not timelines:
        raise ValueError("png_bytes needs at least one timeline")
    plt = _pyplot()
    heights = [0.9 + 0.34 * max(tl.ranks, 2) for _, tl in timelines]
    same_unit = len({tl.unit for _, tl in timelines}) == 1
    fig, axes = plt.subplots(len(timelines), 1, figsize=(14, sum(heights) + 0.4),
                             gridspec_kw={"height_ratios": heights}, sharex=same_unit,
                             squeeze=False)
    try:
        for ax, (title, tl) in zip(axes[:, 0], timelines, strict=True):
            _gantt(ax, title, tl, fig.dpi)
        _legend(fig, [tl for _, tl in timelines])
        fig.tight_layout(rect=(0, 0, 1, 0.97 if len(timelines) > 1 else 0.94))
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=dpi)
        return out.getvalue()
    finally:
        plt.close(fig)


def _tint(color: str, chunk: int) -> str:
    """``color`` mixed with white, more for later chunks (a rank's 2nd, 3rd... stage)."""
    if chunk == 0:
        return color
    mix = min(0.6, 0.3 * chunk)
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * mix):02x}" for c in rgb)


def _gantt(ax: Any, title: str, tl: Timeline, dpi: float) -> None:
    origin = tl.start
    chunk_of = _chunks(tl)
    span = tl.makespan or 1.0
    px_per_unit = ax.get_position().width * ax.figure.get_figwidth() * dpi / span
    durations = sorted(e.end - e.start for e in tl.events) or [span]
    # white gaps between bars only where bars are wide enough for them not to wash out
    edge = "white" if durations[len(durations) // 2] * px_per_unit >= 5 else "none"
    bars: dict[str, list[tuple[float, float, int]]] = {}
    for e in tl.events:
        color = _tint(OP_COLORS[e.action.op], chunk_of.get(e.action.stage, 0))
        bars.setdefault(color, []).append((e.start - origin, e.end - e.start, e.rank))
    for color, items in bars.items():
        by_rank: dict[int, list[tuple[float, float]]] = {}
        for x, w, r in items:
            by_rank.setdefault(r, []).append((x, w))
        for r, xs in by_rank.items():
            ax.broken_barh(xs, (r - 0.4, 0.8), facecolors=color, edgecolors=edge,
                           linewidth=0.4)
    for s in tl.spans:
        ax.broken_barh([(s.start - origin, s.end - s.start)], (s.rank + 0.42, 0.12),
                       facecolors="#777777")
    ax.set_xlim(0, span)
    ax.set_ylim(tl.ranks - 0.5, -0.5)
    ax.set_yticks(range(tl.ranks))
    ax.set_yticklabels([f"rank {r}" for r in range(tl.ranks)], fontsize=8)
    ax.set_xlabel(f"time ({tl.unit})", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)
    m = metrics(tl)
    ax.set_title(f"{title}: makespan {m.makespan:.4g} {tl.unit}, bubble "
                 f"{m.bubble_fraction:.1%}", fontsize=10, loc="left")
    _numbers(ax, tl, origin, px_per_unit)


def _chunks(tl: Timeline) -> dict[int, int]:
    """Stage -> its index among its rank's stages (0 for a rank's first)."""
    if not tl.stage_to_rank:
        return {}
    seen: dict[int, int] = {}
    out = {}
    for s, r in enumerate(tl.stage_to_rank):
        out[s] = seen.get(r, 0)
        seen[r] = out[s] + 1
    return out


def _numbers(ax: Any, tl: Timeline, origin: float, px_per_unit: float) -> None:
    """Microbatch numbers inside the bars wide enough to hold them."""
    char_px = 6.5
    fits = [e for e in tl.events
            if (e.end - e.start) * px_per_unit >= char_px * (len(str(e.action.microbatch)) + 0.6)]
    if len(fits) > _MAX_LABELS or tl.ranks > 32:
        return
    for e in fits:
        ax.text((e.start + e.end) / 2 - origin, e.rank, str(e.action.microbatch),
                ha="center", va="center", fontsize=7, color="white")


def _legend(fig: Any, timelines: Sequence[Timeline]) -> None:
    from matplotlib.patches import Patch
    ops = {e.action.op for tl in timelines for e in tl.events}
    handles = [Patch(facecolor=OP_COLORS[op], label=OP_LABELS[op]) for op in Op if op in ops]
    if any(max(_chunks(tl).values(), default=0) > 0 for tl in timelines):
        handles.append(Patch(facecolor=_tint("#777777", 1), label="lighter: a rank's later stage"))
    fig.legend(handles=handles, loc="upper right", ncol=len(handles), fontsize=8, frameon=False)


def render_bars_png(rows: Sequence[tuple[str, float, float, str]], title: str,
                    unit: str = "units", dpi: int = 110) -> bytes:
    """compare's chart: per schedule (name, makespan, bubble fraction, peak stash as text)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 0.45 * len(rows) + 1.4))
    try:
        best = min(r[1] for r in rows) if rows else 0.0
        names = [r[0] for r in rows]
        spans = [r[1] for r in rows]
        colors = ["#55A868" if r[1] == best else "#4C72B0" for r in rows]
        ax.barh(range(len(rows)), spans, color=colors)
        ax.set_yticks(range(len(rows)))
        ax.set_yticklabels(names, fontsize=9)
        ax.invert_yaxis()
        for i, (_, span, bubble, peak) in enumerate(rows):
            ax.text(span, i, f"  {span:.4g}  (bubble {bubble:.1%}, peak stash {peak})",
                    va="center", fontsize=8)
        ax.set_xlim(0, max(spans, default=1.0) * 1.45)
        ax.set_xlabel(f"makespan ({unit}); green = best", fontsize=9)
        ax.set_title(title, fontsize=10, loc="left")
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=dpi)
        return out.getvalue()
    finally:
        plt.close(fig)
