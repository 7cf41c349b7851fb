"""Views of a Timeline: the ASCII chart (golden), Chrome trace, PNG, the tutorial's diagram."""

from __future__ import annotations

import json
import re
from itertools import pairwise
from typing import Any

import pytest

from pipesim.costs import CostModel
from pipesim.ir import Action, Op
from pipesim.schedules import get_schedule
from pipesim.simulate import simulate
from pipesim.timeline import Event, Span, Timeline, metrics
from pipesim.views.ascii import LEGEND, render_ascii
from pipesim.views.chrome_trace import render_chrome_trace
from pipesim.views.tutorial import render_tutorial_diagram


def lines(text: str) -> str:
    return "\n".join(line[8:] for line in text.strip("\n").splitlines()).rstrip()


# ----------------------------------------------------------------------------- ascii


def test_ascii_golden_1f1b() -> None:
    # F=1, B=2, two columns per unit: F0 fills its two columns, B0-- its four
    # under each rank its memory lane: rank 0 holds 1, then 2 stashes (the chart's peak, a full
    # block) from F1's start to B1's end; rank 1 never more than 1, half the peak
    chart = render_ascii(simulate(get_schedule("1f1b", 2, 3)), width=60, legend=False)
    assert chart == lines("""
        1f1b: 2 ranks, makespan 12 units, bubble 25.0%; 1 column = 0.5 units
                0         5         10
        rank 0 |F0F1....B0--F2B1--..B2--| 25.0%
               |▄▄████████████████▄▄▄▄▄▄  2 rank stashes
        rank 1 |..F0B0--F1B1--F2B2--....| 25.0%
               |  ▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄▄      1 rank stash
    """)


def lane_peaks(chart: str) -> list[str]:
    """The peak printed at the right of each memory lane."""
    return re.findall(r"^ +\|.*  ([\d.]+ [a-zA-Z ]+)$", chart, re.MULTILINE)


def test_ascii_memory_lane_shows_gpipe_keeping_every_microbatch() -> None:
    gpipe = render_ascii(simulate(get_schedule("gpipe", 4, 8)), width=80)
    ofb = render_ascii(simulate(get_schedule("1f1b", 4, 8)), width=80)
    assert lane_peaks(gpipe) == ["8 rank stashes"] * 4
    assert lane_peaks(ofb) == ["4 rank stashes", "3 rank stashes", "2 rank stashes",
                               "1 rank stash"]
    assert "█ = 8 rank stashes" in gpipe.splitlines()[-1]
    # zbv's two half-size chunks per rank count 1/2 each: 4 rank stashes, as 1f1b, not 8
    zbv = render_ascii(simulate(get_schedule("zbv", 4, 8)), width=80)
    assert lane_peaks(zbv) == ["4 rank stashes"] * 4


def test_ascii_memory_lane_in_bytes_when_the_timeline_knows_them() -> None:
    costs = CostModel.from_lists(2, 1.0, 1.0, 1.0, stash_bytes=[3e6, 1e6])
    chart = render_ascii(simulate(get_schedule("1f1b", 2, 3), costs), width=60)
    assert lane_peaks(chart) == ["6 MB", "1 MB"]


def test_ascii_time_axis_in_ms_or_us_as_the_span_suits() -> None:
    events = (Event(0, Action(0, Op.F, 0), 0.0, 0.0002),
              Event(0, Action(0, Op.B, 0), 0.0002, 0.0005))
    chart = render_ascii(Timeline(1, events, unit="s", name="t"), width=40, legend=False)
    assert chart.splitlines()[0] == "t: 1 ranks, makespan 500 us, bubble 0.0%; 1 column = 20 us"
    assert chart.splitlines()[1].split() == ["0", "200", "400"]


def test_ascii_compresses_to_the_width() -> None:
    tl = simulate(get_schedule("interleaved-1f1b", 8, 64, 2))
    chart = render_ascii(tl, width=80)
    rows = [line for line in chart.splitlines() if line.startswith("rank")]
    assert len(rows) == 8
    assert all(len(row) <= 80 for row in rows)
    assert "1 column = 10 units" in chart  # 405 units in at most 64 columns: a round 10
    assert set("".join(r.split("|")[1] for r in rows)) <= set("FB.")
    assert LEGEND in chart


def test_ascii_keeps_idle_and_short_labels_honest() -> None:
    # one rank: 0F12 for 1 unit, idle 3, 0B12 for 2 units; at one column per unit the label
    # "F12" does not fit its column, so only the op letter is drawn (never a cut number)
    events = (Event(0, Action(0, Op.F, 12), 0.0, 1.0), Event(0, Action(0, Op.B, 12), 4.0, 6.0))
    tl = Timeline(1, events, name="t", stage_to_rank=(0,), microbatches=13)
    row = next(x for x in render_ascii(tl, width=24).splitlines() if x.startswith("rank"))
    assert row.split("|")[1] == "F...B-"


def test_ascii_draws_each_ranks_spans_below_it_even_past_the_last_action() -> None:
    # rank 0 all-reduces from 2 to 4 (inside its idle time), rank 1 from 3 to 8.2: past the
    # makespan (6), so the chart grows to 9 columns; the last 0.2 fills under half a column
    # and is not drawn
    events = (Event(0, Action(0, Op.F, 0), 0.0, 1.0), Event(0, Action(0, Op.B, 0), 4.0, 6.0),
              Event(1, Action(1, Op.F, 0), 1.0, 2.0), Event(1, Action(1, Op.B, 0), 2.0, 3.0))
    spans = (Span(0, "allreduce stage 0", 2.0, 4.0), Span(1, "allreduce stage 1", 3.0, 8.0),
             Span(1, "allreduce stage 1", 8.0, 8.2))
    tl = Timeline(2, events, name="t", stage_to_rank=(0, 1), microbatches=1, spans=spans)
    chart = render_ascii(tl, width=30, memory=False).splitlines()
    assert [line.split("|")[1] for line in chart[2:6]] == [
        "F...B0...", "  ==     ", ".FB......", "   ===== "]
    assert chart[-1].endswith("; = all-reduce")
    plain = render_ascii(simulate(get_schedule("1f1b", 2, 3)), width=60, memory=False)
    assert len(plain.splitlines()) == 6 and "all-reduce" not in plain  # no spans, no lines


# ----------------------------------------------------------------------------- chrome trace


def test_chrome_trace_has_one_event_per_action_and_flows() -> None:
    sched = get_schedule("zbv", 2, 4)
    costs = CostModel.uniform(sched.stages, unit="ms", comm_latency=0.5)
    tl = simulate(sched, costs)
    trace = json.loads(json.dumps(render_chrome_trace(tl)))
    events = trace["traceEvents"]
    xs = [e for e in events if e["ph"] == "X"]
    assert len(xs) == sched.num_actions
    assert {(e["pid"], e["args"]["action"]) for e in xs} == {
        (r, str(a)) for r, row in enumerate(sched.actions) for a in row}
    names = {e["pid"]: e["args"]["name"] for e in events if e.get("name") == "process_name"}
    assert names == {0: "rank 0", 1: "rank 1"}
    first = next(e for e in xs if e["args"]["action"] == "3F0")
    ev = next(e for e in tl.events if str(e.action) == "3F0")
    assert first["name"] == "F0" and first["args"]["stage"] == 3
    assert first["ts"] == pytest.approx(ev.start * 1000) and first["dur"] == 1000.0  # ms -> us
    starts = [e for e in events if e["ph"] == "s"]
    ends = [e for e in events if e["ph"] == "f"]
    assert len(starts) == len(ends) == len(tl.messages) > 0
    assert sorted(e["id"] for e in starts) == sorted(e["id"] for e in ends)
    # a memory counter per rank, in rank stashes (zbv's chunks count 1/2), peaking as metrics
    counters = [e for e in events if e["ph"] == "C"]
    assert {e["name"] for e in counters} == {"activations kept"}
    peaks = [max(e["args"]["rank stashes"] for e in counters if e["pid"] == r) for r in (0, 1)]
    assert peaks == [r.peak_stash for r in metrics(tl).per_rank]


def test_chrome_trace_units_and_spans() -> None:
    events = (Event(0, Action(0, Op.F, 0), 1.0, 1.5),)
    tl = Timeline(1, events, unit="s", spans=(Span(0, "allreduce", 1.5, 2.0),))
    trace = render_chrome_trace(tl)
    xs = [e for e in trace["traceEvents"] if e["ph"] == "X"]
    assert [(e["name"], e["ts"], e["dur"]) for e in xs] == [("F0", 0.0, 500000.0),
                                                           ("allreduce", 500000.0, 500000.0)]


# ----------------------------------------------------------------------------- png


def test_png_renders_stacked_timelines(tmp_path: pytest.TempPathFactory) -> None:
    pytest.importorskip("matplotlib")
    from pipesim.views.png import png_bytes, render_bars_png, render_png
    a = simulate(get_schedule("1f1b", 4, 8))
    b = simulate(get_schedule("zb-h1", 4, 8))
    data = png_bytes([("1f1b", a), ("zb-h1", b)])
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    height = int.from_bytes(data[20:24], "big")
    single = png_bytes([("1f1b", a)])
    assert height > int.from_bytes(single[20:24], "big")  # two charts are taller than one
    path = tmp_path / "out.png"  # type: ignore[operator]
    render_png([("1f1b", a)], str(path))
    assert path.read_bytes().startswith(b"\x89PNG")
    bars = render_bars_png([("1f1b", 33.0, 0.27, 4), ("zb-h1", 27.0, 0.11, 4)], "compare")
    assert bars.startswith(b"\x89PNG")


def _figure_axes(timelines: list[tuple[str, Timeline]]) -> dict[str, Any]:
    import matplotlib.pyplot as plt

    from pipesim.views.png import png_figure
    fig = png_figure(timelines)
    axes = {ax.get_label(): ax for ax in fig.axes}
    plt.close(fig)
    return axes


def test_png_panels_cover_every_timeline_and_span() -> None:
    # run --predict --plot: a predicted step longer than the measured one must not be cut by the
    # measured panel's axis; an all-reduce past the last action must not run off the axis
    pytest.importorskip("matplotlib")
    predicted = simulate(get_schedule("1f1b", 2, 4), CostModel.uniform(2, F=0.001, unit="s"))
    measured = Timeline(2, tuple(Event(e.rank, e.action, e.start * 0.8, e.end * 0.8)
                                 for e in predicted.events), unit="s", name="1f1b",
                        spans=(Span(1, "allreduce stage 1", 0.0095, 0.0125),))
    axes = _figure_axes([("predicted", predicted), ("measured", measured)])
    assert set(axes) == {"timeline 0", "memory 0", "timeline 1", "memory 1"}
    for ax in axes.values():  # one axis for both, as long as the predicted step (15 ms)
        assert ax.get_xlim() == pytest.approx((0, 0.015))
        assert ax.get_xlabel() == "time (ms)"
    assert "makespan 15 ms" in axes["timeline 0"].get_title(loc="left")
    alone = _figure_axes([("measured", measured)])  # actions end at 12 ms, the span at 12.5
    assert alone["timeline 0"].get_xlim() == pytest.approx((0, 0.0125))
    ax = axes["timeline 1"]
    ticks = ax.xaxis.get_major_formatter()
    assert ticks(0.01, 0) == "10"  # 0.01 s reads 10 (ms), not 0.01


def test_png_memory_lanes_and_one_colour_map() -> None:
    pytest.importorskip("matplotlib")
    from pipesim.views.style import OP_COLORS
    axes = _figure_axes([("gpipe", simulate(get_schedule("gpipe", 4, 8)))])
    lanes = axes["memory 0"]
    assert "a full lane = 8 rank stashes" in lanes.get_title(loc="left")
    assert [t.get_text() for t in lanes.get_yticklabels()] == [
        f"rank {r}" for r in range(4)]
    assert [t.get_text() for t in lanes.texts] == ["8"] * 4
    from matplotlib.colors import to_hex
    colours = {to_hex(c.get_facecolor()[0]) for c in axes["timeline 0"].collections}
    assert colours == {OP_COLORS[Op.F].lower(), OP_COLORS[Op.B].lower()}


# ----------------------------------------------------------------------------- tutorial


def test_tutorial_diagram_of_the_tutorial_pipeline() -> None:
    text = render_tutorial_diagram(get_schedule("forward", 4, 4))
    rows = [line for line in text.splitlines() if "Stage" in line and ":" in line]
    assert len(rows) == 4
    # stage s starts at step s: its first box sits one cell further right per stage
    starts = [row.index("[MB0 Fwd]") for row in rows]
    assert [b - a for a, b in pairwise(starts)] == [11, 11, 11]
    assert rows[0].count("─►") == 3 and rows[0].count("[MB") == 4
    framed = "\n".join(line for line in text.splitlines() if line.startswith("    │"))
    assert framed.count("▼") == 12  # every hand-off: 3 boundaries x 4 microbatches
    assert "Busy: 16 of 28 rank-steps (57%)" in text
    assert "at step 3 every rank is busy (rank 0 MB3, rank 1 MB2, rank 2 MB1" in text


def test_tutorial_diagram_follows_the_real_schedule() -> None:
    sched = get_schedule("1f1b", 2, 2)
    text = render_tutorial_diagram(sched)
    rows = [line for line in text.splitlines() if "Stage" in line and ":" in line]
    # 1f1b, 2 ranks: rank 1 runs MB0 Fwd, MB0 Bwd back to back; rank 0's MB0 Bwd waits for it
    assert "[MB0 Fwd]─►[MB0 Bwd]─►[MB1 Fwd]─►[MB1 Bwd]" in rows[1]
    assert rows[0].index("[MB0 Bwd]") > rows[1].index("[MB0 Bwd]")
    framed = "\n".join(line for line in text.splitlines() if line.startswith("    │"))
    assert framed.count("▲") == 2  # each of rank 0's backwards gets its gradient from below
    assert framed.count("▼") == 2  # each of rank 1's forwards gets its input from above
    many = render_tutorial_diagram(get_schedule("1f1b", 4, 16), max_width=100)
    assert "(first" in many and all(len(x) <= 100 for x in many.splitlines())


# ----------------------------------------------------------------------------- overlapped pairs


def test_every_view_draws_a_pair_as_its_two_adjacent_events(tmp_path: pytest.TempPathFactory
                                                            ) -> None:
    from pipesim.views.html import render_timeline_html
    from pipesim.views.png import render_png
    sched = get_schedule("dualpipev", 2, 4)
    tl = simulate(sched, CostModel.uniform(4, overlap=0.8))
    assert tl.pairs == sched.pairs and Timeline.from_json(tl.to_json()) == tl
    ends = {e.action: e for e in tl.events}
    for first, second in tl.pairs:
        assert ends[first].end == ends[second].start  # side by side, F then B
    assert "rank 1 |" in render_ascii(tl)
    names = [e["name"] for e in render_chrome_trace(tl)["traceEvents"] if e.get("ph") == "X"]
    assert len(names) == sched.num_actions
    assert render_timeline_html(tl).startswith("<!doctype html>")
    pytest.importorskip("matplotlib")
    render_png([("dualpipev", tl)], str(tmp_path / "pairs.png"))  # type: ignore[operator]
