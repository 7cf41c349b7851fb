"""PNG pictures with matplotlib (imported only when a picture is drawn, on the Agg backend).

``render_png`` draws one or more timelines as Gantt charts stacked one above the other (e.g.
predicted above measured): ranks are rows, actions bars coloured by op (``style.OP_COLORS``:
F blue, I orange, W green, B red; a rank's later stages lighter), microbatch numbers inside bars
that have room, makespan and bubble fraction in each title. Under each chart, its memory lanes:
per rank, the activations kept for backward over time (``timeline.stash_over_time``), with the
rank's peak at the right. Every panel covers all its timeline draws, all-reduce spans included;
timelines in one unit share one axis wide enough for the longest. Times read in s, ms or us as
the span suits. ``png_figure`` returns the figure itself (for its axes' limits and labels);
``render_bars_png`` draws compare's bar chart.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from pipesim.fileio import write_atomic
from pipesim.ir import Op
from pipesim.timeline import StashChange, Timeline, metrics, stash_over_time
from pipesim.views.style import (
    OP_COLORS,
    OP_LABELS,
    STASH_COLOR,
    drawn_range,
    memory_unit,
    peak_of,
    time_unit,
)

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
    write_atomic(path, png_bytes(timelines))


def png_bytes(timelines: Sequence[tuple[str, Timeline]], dpi: int = 110) -> bytes:
    """The Gantt charts of ``(title, timeline)`` pairs, stacked, as PNG bytes."""
    plt = _pyplot()
    fig = png_figure(timelines)
    try:
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=dpi)
        return out.getvalue()
    finally:
        plt.close(fig)


def png_figure(timelines: Sequence[tuple[str, Timeline]]) -> Any:
    """The matplotlib figure ``png_bytes`` saves: per timeline its chart (axes labelled
    ``timeline i``) and its memory lanes (``memory i``). The caller closes it."""
    if not timelines:
        raise ValueError("png_bytes needs at least one timeline")
    plt = _pyplot()
    heights = []
    for _, tl in timelines:
        heights += [0.9 + 0.34 * max(tl.ranks, 2), 0.7 + 0.3 * max(tl.ranks, 2)]
    fig, axes = plt.subplots(len(heights), 1, figsize=(14, sum(heights) + 0.4),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    try:
        spans = _x_spans([tl for _, tl in timelines])
        stashes = [stash_over_time(tl) for _, tl in timelines]
        peaks = _memory_peaks([tl for _, tl in timelines], stashes)
        for i, (title, tl) in enumerate(timelines):
            gantt, lanes = axes[2 * i, 0], axes[2 * i + 1, 0]
            gantt.set_label(f"timeline {i}")
            lanes.set_label(f"memory {i}")
            _gantt(gantt, title, tl, fig.dpi, spans[i])
            _memory(lanes, tl, stashes[i], peaks[i], spans[i])
        _legend(fig, [tl for _, tl in timelines])
        fig.tight_layout(rect=(0, 0, 1, 0.97 if len(timelines) > 1 else 0.94))
    except BaseException:
        plt.close(fig)
        raise
    return fig


def _x_spans(timelines: Sequence[Timeline]) -> list[float]:
    """Each panel's x extent: all it draws; timelines in one unit share the longest."""
    own = [drawn_range(tl)[1] - drawn_range(tl)[0] for tl in timelines]
    longest: dict[str, float] = {}
    for tl, x in zip(timelines, own, strict=True):
        longest[tl.unit] = max(longest.get(tl.unit, 0.0), x)
    return [longest[tl.unit] or 1.0 for tl in timelines]


def _memory_peaks(timelines: Sequence[Timeline],
                  stashes: Sequence[list[list[StashChange]]]) -> list[float]:
    """The level a full lane stands for: the highest of the timelines that count alike."""
    def kind(tl: Timeline) -> bool:
        return bool(tl.stash_bytes)
    top: dict[bool, float] = {}
    for tl, st in zip(timelines, stashes, strict=True):
        top[kind(tl)] = max(top.get(kind(tl), 0.0), peak_of(st))
    return [top[kind(tl)] for tl in timelines]


def _time_axis(ax: Any, tl: Timeline, span: float) -> None:
    """x from 0 to ``span``, its ticks and label in s, ms or us as the span suits."""
    from matplotlib.ticker import FuncFormatter
    factor, unit = time_unit(span, tl.unit)
    ax.set_xlim(0, span)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x * factor:.6g}"))
    ax.set_xlabel(f"time ({unit})", fontsize=8)
    ax.tick_params(axis="x", labelsize=8)
    ax.grid(axis="x", color="#dddddd", linewidth=0.5)
    ax.set_axisbelow(True)


def _memory(ax: Any, tl: Timeline, stash: list[list[StashChange]], peak: float,
            span: float) -> None:
    """One lane per rank: its stashed activations over time, full height = ``peak``."""
    origin = drawn_range(tl)[0]
    factor, unit = memory_unit(tl, peak)
    for rank, changes in enumerate(stash):
        xs = [0.0] + [c.time - origin for c in changes] + [span]
        ys = [0.0] + [c.level for c in changes]
        ys.append(ys[-1])
        scale = 0.8 / peak if peak > 0 else 0.0
        ax.axhspan(rank - 0.4, rank + 0.4, color="#f2f2f2", linewidth=0, zorder=0)
        ax.fill_between(xs, rank + 0.4, [rank + 0.4 - y * scale for y in ys], step="post",
                        color=STASH_COLOR, linewidth=0)
        top = max(ys)
        ax.text(1.003, rank, f"{top * factor:.3g}", transform=ax.get_yaxis_transform(),
                va="center", fontsize=7)
    ax.set_ylim(tl.ranks - 0.5, -0.5)
    ax.set_yticks(range(tl.ranks))
    ax.set_yticklabels([f"rank {r}" for r in range(tl.ranks)], fontsize=8)
    _time_axis(ax, tl, span)
    full = f"{peak * factor:.3g} {unit}" if peak > 0 else "nothing kept"
    ax.set_title(f"activations kept for backward, per rank ({unit}; a full lane = {full})",
                 fontsize=9, loc="left")


def _tint(color: str, chunk: int) -> str:
    """``color`` mixed with white, more for later chunks (a rank's 2nd, 3rd... stage)."""
    if chunk == 0:
        return color
    mix = min(0.6, 0.3 * chunk)
    rgb = [int(color[i:i + 2], 16) for i in (1, 3, 5)]
    return "#" + "".join(f"{round(c + (255 - c) * mix):02x}" for c in rgb)


def _gantt(ax: Any, title: str, tl: Timeline, dpi: float, span: float) -> None:
    origin = drawn_range(tl)[0]
    chunk_of = _chunks(tl)
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
    ax.set_ylim(tl.ranks - 0.5, -0.5)
    ax.set_yticks(range(tl.ranks))
    ax.set_yticklabels([f"rank {r}" for r in range(tl.ranks)], fontsize=8)
    _time_axis(ax, tl, span)
    m = metrics(tl)
    factor, unit = time_unit(span, tl.unit)
    ax.set_title(f"{title}: makespan {m.makespan * factor:.4g} {unit}, bubble "
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
    handles = [Patch(facecolor=OP_COLORS[op], label=f"{op.value} {OP_LABELS[op]}")
               for op in Op if op in ops]
    if any(max(_chunks(tl).values(), default=0) > 0 for tl in timelines):
        handles.append(Patch(facecolor=_tint("#777777", 1), label="lighter: a rank's later stage"))
    handles.append(Patch(facecolor=STASH_COLOR, label="activations kept"))
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
        ax.set_xlim(0, max(spans, default=1.0) * 1.75)
        ax.set_xlabel(f"makespan ({unit}); green = best", fontsize=9)
        ax.set_title(title, fontsize=10, loc="left")
        fig.tight_layout()
        out = io.BytesIO()
        fig.savefig(out, format="png", dpi=dpi)
        return out.getvalue()
    finally:
        plt.close(fig)


__all__ = [
    "OP_COLORS", "OP_LABELS", "PlotUnavailableError", "png_bytes", "render_bars_png", "render_png"
]
