"""The HTML page as text: self-contained, escaped, and carrying the right data (no browser)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from pipesim import CostModel, get_schedule, simulate
from pipesim.ir import Action, Op
from pipesim.timeline import Event, MessageEvent, Span, Timeline, metrics
from pipesim.views.grid import step_grid
from pipesim.views.html import HtmlSection, render_html, render_timeline_html

HOSTILE = "</script><b>x</b>&\"'<!--"


def page_data(page: str) -> dict[str, Any]:
    match = re.search(r'<script type="application/json" id="pipesim-data">(.*?)</script>', page,
                      re.S)
    assert match is not None
    data: dict[str, Any] = json.loads(match.group(1))
    return data


def compare_page() -> tuple[str, list[HtmlSection]]:
    sections = [HtmlSection(name, simulate(get_schedule(name, 4, 8)), {"note": name})
                for name in ("1f1b", "zb-h1", "interleaved-1f1b")]
    return render_html(sections, "compare", {"ranks": 4}), sections


def measured_timeline() -> Timeline:
    """A hand-written 2-rank run in seconds that starts at t=100, with an all-reduce span."""
    a, b, c, d = Action(0, Op.F, 0), Action(1, Op.F, 0), Action(1, Op.B, 0), Action(0, Op.B, 0)
    events = (Event(0, a, 100.0, 100.25), Event(1, b, 100.5, 100.75),
              Event(1, c, 100.75, 101.25), Event(0, d, 101.5, 102.0))
    messages = (MessageEvent(0, 1, a, b, 100.25, 100.5), MessageEvent(1, 0, c, d, 101.25, 101.5))
    spans = (Span(0, "all-reduce", 102.0, 102.5), Span(1, "all-reduce", 101.25, 102.5))
    return Timeline(2, events, messages, "s", "measured", (0, 1), 1, spans)


def test_page_fetches_nothing_and_is_one_file() -> None:
    page, _ = compare_page()
    low = page.lower()
    assert "http://" not in low and "https://" not in low
    assert " src=" not in low and "@import" not in low and "<link rel=\"stylesheet\"" not in low
    assert low.count("<script") == 2 and low.count("<style") == 1
    assert page.startswith("<!doctype html>")


def test_every_action_and_message_is_in_the_data() -> None:
    page, sections = compare_page()
    data = page_data(page)
    for sec, drawn in zip(sections, data["sections"], strict=True):
        tl = sec.timeline
        assert sorted(e[1] for e in drawn["events"]) == sorted(str(e.action) for e in tl.events)
        assert len(drawn["messages"]) == len(tl.messages)
        assert drawn["extent"] == tl.makespan
        assert drawn["ranks"] == tl.ranks and drawn["unit"] == "units"


def test_dependencies_name_what_each_action_waited_for() -> None:
    data = page_data(render_timeline_html(simulate(get_schedule("zb-h1", 4, 8))))
    sec = data["sections"][0]
    names = [e[1] for e in sec["events"]]
    waited = {names[i]: {names[j]: ready for j, ready in d} for i, d in enumerate(sec["deps"])}
    assert waited["0F0"] == {}
    assert waited["2F0"] == {"1F0": 2}  # made by rank 1 at [1, 2], no latency
    assert set(waited["2I3"]) == {"2F3", "3I3"}
    assert waited["1W5"] == {"1I5": pytest.approx(sec["events"][names.index("1I5")][3])}


@pytest.mark.parametrize("name,v", [("gpipe", None), ("1f1b", None), ("zb-h1", None),
                                    ("interleaved-1f1b", 2), ("zbv", None), ("dualpipev", None)])
def test_steps_match_the_unit_grid(name: str, v: int | None) -> None:
    schedule = get_schedule(name, 4, 8, v)
    costs = CostModel.from_lists(schedule.stages, 1.0, 2.0, 3.0, 4.0)  # steps ignore real costs
    sec = page_data(render_timeline_html(simulate(schedule, costs)))["sections"][0]
    grid = step_grid(schedule)
    drawn = {(e[0], e[4]): e[1] for e in sec["events"]}
    expected = {(r, s): cell for r, row in enumerate(grid) for s, cell in enumerate(row)
                if cell != "."}
    assert drawn == expected
    assert sec["steps"] == len(grid[0])


def test_hostile_names_are_escaped_everywhere() -> None:
    tl = measured_timeline()
    tl = Timeline(tl.ranks, tl.events, tl.messages, HOSTILE, HOSTILE, tl.stage_to_rank,
                  tl.microbatches, tuple(s._replace(name=HOSTILE) for s in tl.spans))
    page = render_html([HtmlSection(HOSTILE, tl, {HOSTILE: HOSTILE}),
                        HtmlSection("b", tl)], HOSTILE, {HOSTILE: HOSTILE})
    assert "<b>" not in page and "<!--" not in page
    assert page.lower().count("</script>") == 2
    assert "<title>&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;&amp;&quot;&#x27;&lt;!--</title>" in page
    data = page_data(page)
    assert data["sections"][0]["title"] == HOSTILE  # JSON escapes decode back to the text
    assert data["sections"][0]["spans"][0][1] == HOSTILE


def test_numbers_beside_each_timeline() -> None:
    page, sections = compare_page()
    for sec in sections:
        m = metrics(sec.timeline)
        assert f'<dd class="makespan">{m.makespan:g} units</dd>' in page
        assert f'<dd class="bubble">{100 * m.bubble_fraction:.1f}%</dd>' in page
    zb_card = page.split('class="card" data-section="1"', 1)[1]
    card = zb_card.split("</section>", 1)[0]
    peaks = re.findall(r"<tr><td>\d+</td><td>[\d.]+%</td><td>([\d.]+)</td></tr>", card)
    assert [float(p) for p in peaks] == [r.peak_stash
                                         for r in metrics(sections[1].timeline).per_rank]
    assert "<dt>note</dt><dd>zb-h1</dd>" in card
    assert "<dt>ranks</dt><dd>4</dd>" in page  # the summary mapping


def test_summary_table_is_sorted_by_makespan() -> None:
    page, sections = compare_page()
    table = page.split('class="summary-table"', 1)[1].split("</table>", 1)[0]
    order = [int(i) for i in re.findall(r'<tr data-section="(\d+)">', table)]
    spans = [sections[i].timeline.makespan for i in order]
    assert sorted(order) == [0, 1, 2] and spans == sorted(spans)
    assert "1.00×" in table


def test_single_timeline_has_no_summary_table_and_takes_its_name() -> None:
    tl = simulate(get_schedule("1f1b", 2, 2))
    page = render_timeline_html(tl, facts={"throughput": 812.3456})
    assert 'class="summary-table"' not in page
    assert "<title>1f1b</title>" in page
    assert "<dd>812.3</dd>" in page


def test_measured_times_start_at_zero_with_spans_and_unit() -> None:
    sec = page_data(render_timeline_html(measured_timeline()))["sections"][0]
    assert sec["unit"] == "s"
    assert sec["events"][0][1:4] == ["0F0", 0, 0.25]
    assert sec["spans"] == [[0, "all-reduce", 2, 2.5], [1, "all-reduce", 1.25, 2.5]]
    assert sec["extent"] == 2.5
    deps_of_0b0 = sec["deps"][[e[1] for e in sec["events"]].index("0B0")]
    assert [ready for _, ready in deps_of_0b0] == [0.25, 1.5]  # own F; 1B0's message arrival


def test_memory_lane_data_per_rank_in_rank_stashes_or_bytes() -> None:
    page, sections = compare_page()
    data = page_data(page)["sections"]
    for sec, section in zip(data, sections, strict=True):
        mem, tl = sec["memory"], section.timeline
        assert (mem["kind"], mem["unit"], mem["scale"]) == ("stashes", "rank stashes", 1)
        assert mem["full"] == 5.5  # the page's highest peak: interleaved-1f1b's rank 0
        levels = [[c[2] for c in rank] for rank in mem["ranks"]]
        assert [max(x) for x in levels] == [r.peak_stash for r in metrics(tl).per_rank]
        for rank, changes in enumerate(mem["ranks"]):  # each change sits on its rank's event
            assert all(sec["events"][i][0] == rank and edge in (0, 1) for i, edge, _ in changes)
    # one F's stash is half a rank stash when the rank holds two stages
    assert data[2]["memory"]["ranks"][0][0] == [0, 0, 0.5]
    sized = simulate(get_schedule("1f1b", 2, 3),
                     CostModel.from_lists(2, 1.0, 1.0, 1.0, stash_bytes=[3e6, 1e6]))
    mem = page_data(render_timeline_html(sized))["sections"][0]["memory"]
    assert (mem["kind"], mem["unit"], mem["full"], mem["scale"]) == ("bytes", "MB", 6e6, 1e-6)
    assert "<td>6.0 MB</td>" in render_timeline_html(sized)


def test_one_colour_map_and_time_units_that_suit_the_span() -> None:
    from pipesim.views.style import OP_COLORS, STASH_COLOR
    page = render_timeline_html(measured_timeline())
    style = page.split("<style>", 1)[1].split("</style>", 1)[0]
    for op, colour in OP_COLORS.items():  # the PNG's colours, defined once in the page
        assert style.count(f"--op-{op.value}:") == 1 and f"--op-{op.value}: {colour};" in style
    assert f"--stash: {STASH_COLOR};" in style
    sec = page_data(page)["sections"][0]
    assert (sec["timeScale"], sec["timeUnit"]) == (1, "s")  # 2.5 s
    short = Timeline(1, (Event(0, Action(0, Op.F, 0), 0.0, 0.0005),), unit="s", name="t")
    sec = page_data(render_timeline_html(short))["sections"][0]
    assert (sec["timeScale"], sec["timeUnit"]) == (1e6, "us")  # 500 us, not 0.0005 s


def test_timeline_without_placement_or_in_impossible_order_still_renders() -> None:
    # rank 1 runs 1B0 before its own 1F0: a cycle no real run has; the step grid must still end
    f0, b0, f1, b1 = (Action(0, Op.F, 0), Action(0, Op.B, 0), Action(1, Op.F, 0),
                      Action(1, Op.B, 0))
    events = (Event(0, f0, 0, 1), Event(0, b0, 4, 5), Event(1, b1, 1, 2), Event(1, f1, 2, 3))
    sec = page_data(render_timeline_html(Timeline(2, events), "odd"))["sections"][0]
    steps = {e[1]: e[4] for e in sec["events"]}
    assert steps["0F0"] < steps["0B0"] and steps["1B0"] < steps["1F0"]
    ghost = Timeline(1, (Event(0, Action(3, Op.F, 0), 0, 1),))  # stages 0-2 nowhere: no deps
    assert page_data(render_timeline_html(ghost))["sections"][0]["deps"] == [[]]


def test_large_page_stays_small() -> None:
    schedule = get_schedule("interleaved-1f1b", 16, 64, 2)
    page = render_timeline_html(simulate(schedule))
    assert schedule.num_actions == 4096
    assert len(page.encode()) < 2_000_000
    assert len(page_data(page)["sections"][0]["events"]) == 4096


def test_no_sections_is_an_error_but_an_empty_timeline_is_not() -> None:
    with pytest.raises(ValueError, match="at least one section"):
        render_html([])
    sec = page_data(render_timeline_html(Timeline(2, ()), "empty"))["sections"][0]
    assert sec["events"] == [] and sec["extent"] == 0 and sec["steps"] == 0
