"""Issue 16 (items 2, 4, 7, 8): one vocabulary across subcommands, cost file kinds, progress and
the smaller fixes, through ``cli.main`` and the torch-free helpers. ``run`` is in
tests/runtime/test_cli_vocab_run.py (it imports torch)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from pipesim.commands._progress import Status, working
from pipesim.commands._runreport import LineHook
from pipesim.commands._vocab import (
    DEFAULT_MICROBATCHES,
    VocabError,
    resolve_sizes,
    warn_oversubscribed,
)
from pipesim.costs import CostModel
from pipesim.layercosts import LayerCost, LayerCosts, cost_file_kind
from pipesim.schedule_io import parse_schedule
from pipesim.schedules import get_schedule
from pipesim.stagecosts import costs_for_stages
from pipesim.validate import validate
from tests.cli import run_cli as cli


def layer_file(tmp_path: Path, layers: int = 8) -> str:
    costs = LayerCosts(tuple(LayerCost(1e-3 * (1 + i % 3), 1e-3, 1e-3, 2e-3, 1e3, 4e3, 1e4,
                                       f"l{i}") for i in range(layers)), 1)
    path = tmp_path / "layers.json"
    path.write_text(costs.to_json())
    return str(path)


# ----------------------------------------------------------------------------- item 2: vocabulary


@pytest.mark.parametrize(("ranks", "dp", "world", "expected"), [
    (None, None, None, (4, 1, 4)), (2, None, None, (2, 1, 2)), (None, None, 8, (8, 1, 8)),
    (2, None, 8, (2, 4, 8)), (None, 2, 8, (4, 2, 8)), (2, 3, None, (2, 3, 6)),
    (2, 2, 4, (2, 2, 4)), (None, 2, None, (4, 2, 8)),
])
def test_any_two_of_ranks_dp_world_give_the_third(ranks: int | None, dp: int | None,
                                                  world: int | None,
                                                  expected: tuple[int, int, int]) -> None:
    assert tuple(resolve_sizes(ranks, dp, world)) == expected


@pytest.mark.parametrize(("args", "words"), [
    ((2, 2, 8), ["-w 8", "-p 2", "--dp 2"]), ((3, None, 8), ["-p 3", "-w 8"]),
    ((None, 3, 8), ["--dp 3", "-w 8"]),
])
def test_contradicting_sizes_name_both(args: tuple[int | None, int | None, int | None],
                                       words: list[str]) -> None:
    with pytest.raises(VocabError) as info:
        resolve_sizes(*args)
    assert all(w in str(info.value) for w in words), info.value


def test_simulate_and_compare_take_w_and_schedule_and_any_case(
        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "simulate", "--schedule", "1F1B", "-w", "2", "-m", "4")
    assert code == 0 and out.startswith("1f1b: 2 ranks, 2 stages, 4 microbatches"), out
    code, out, _ = cli(capsys, "compare", "--schedule", "ZB-H1,1f1b", "-w", "2")
    assert code == 0 and "compare: 2 ranks" in out
    rows = [line.split()[0].strip("*") or line.split()[1] for line in out.splitlines()[4:6]]
    assert sorted(r for r in rows if r) == ["1f1b", "zb-h1"], out


def test_one_microbatch_default_everywhere(capsys: pytest.CaptureFixture[str]) -> None:
    _, sim, _ = cli(capsys, "simulate", "1f1b")
    _, cmp, _ = cli(capsys, "compare", "1f1b")
    _, grid, _ = cli(capsys, "schedule", "1f1b")
    m = f"{DEFAULT_MICROBATCHES} microbatches"
    assert m in sim.splitlines()[0] and m in cmp.splitlines()[0] and m in grid.splitlines()[0]


@pytest.mark.parametrize("argv", [
    ["simulate", "gpipe", "--schedule", "1f1b"],
    ["simulate", "1f1b", "-m", "2", "--num-microbatches", "4"],
    ["simulate", "1f1b", "-p", "2", "--ranks", "3"],
    ["simulate", "1f1b", "-p", "2", "-w", "8", "--dp", "2"],
    ["schedule", "1f1b", "-p", "3", "-w", "4"],
    ["compare", "-w", "4", "-p", "3"],
])
def test_flags_that_say_different_things_are_an_error(capsys: pytest.CaptureFixture[str],
                                                      argv: list[str]) -> None:
    code, _, err = cli(capsys, *argv)
    assert code == 2 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert "say different things" in err or "does not divide" in err, err


def test_plan_w_is_the_world_and_p_w_fix_the_split(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    path = layer_file(tmp_path)
    code, out, _ = cli(capsys, "plan", "--costs", path, "-w", "4", "--batch", "8", "--json")
    data = json.loads(out)
    assert code == 0 and data["best"]["pp"] * data["best"]["dp"] == 4
    code, out, _ = cli(capsys, "plan", "--costs", path, "-p", "2", "-w", "4", "--batch", "8",
                       "--json", "1F1B")
    data = json.loads(out)
    assert code == 0 and {(c["pp"], c["dp"]) for c in data["candidates"]} == {(2, 2)}
    assert {c["schedule"] for c in data["candidates"]} == {"1f1b"}
    code, _, err = cli(capsys, "plan", "--costs", path, "-p", "2", "-b", "4", "--batch", "8")
    assert code == 2 and "-b" in err


# ----------------------------------------------------------------------------- item 4: cost files


def test_cost_files_carry_their_kind(tmp_path: Path) -> None:
    layers = json.loads(Path(layer_file(tmp_path)).read_text())
    stages = CostModel.uniform(2).to_dict()
    assert layers["kind"] == "per-layer" and stages["kind"] == "per-stage"
    assert cost_file_kind(layers) == "per-layer" and cost_file_kind(stages) == "per-stage"
    del layers["kind"], stages["kind"]  # files written before the field: told by their shape
    assert cost_file_kind(layers) == "per-layer" and cost_file_kind(stages) == "per-stage"
    assert CostModel.from_dict(CostModel.uniform(2).to_dict()) == CostModel.uniform(2)


def test_per_layer_costs_convert_to_any_stage_count(tmp_path: Path) -> None:
    data = json.loads(Path(layer_file(tmp_path)).read_text())
    for stages in (2, 4, 8):
        costs = costs_for_stages(data, stages)
        assert costs.stages == stages
        assert sum(costs.forward) == pytest.approx(sum(1e-3 * (1 + i % 3) for i in range(8)))


def test_simulate_and_compare_read_the_profile_file(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = layer_file(tmp_path)
    code, out, err = cli(capsys, "simulate", "1f1b", "-p", "2", "--costs", path)
    assert code == 0, err
    costs_line = out.splitlines()[1]
    assert "per stage" in costs_line and "F=per stage" not in costs_line, costs_line
    code, out, err = cli(capsys, "compare", "-p", "2", "--costs", path, "--json")
    assert code == 0, err
    names = {e["schedule"] for e in json.loads(out)["schedules"]}
    assert {"1f1b", "zbv", "interleaved-1f1b", "dualpipev"} <= names  # 2 and 4 stages alike


def test_plan_says_which_kind_it_wants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stages.json"
    path.write_text(json.dumps(CostModel.uniform(2).to_dict()))
    code, _, err = cli(capsys, "plan", "--costs", str(path), "-p", "2", "--batch", "4")
    assert code == 2 and "per-stage" in err and "pipesim profile -o" in err, err


def test_compare_skips_schedules_a_per_stage_file_does_not_fit(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "stages.json"
    path.write_text(json.dumps(CostModel.uniform(2, F=2).to_dict()))
    code, out, _ = cli(capsys, "compare", "-p", "2", "--costs", str(path))
    assert code == 0 and "skipped zbv: the per-stage costs have 2 stages, the schedule 4" in out


# ----------------------------------------------------------------------------- item 7: progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_draws_on_a_terminal_and_erases_itself() -> None:
    stream = _Tty()
    with working("profiling", stream=stream, delay=0) as status:
        status._stop.wait(0.05)  # let the thread draw at least once
        while not status._drawn:
            status._stop.wait(0.01)
    text = stream.getvalue()
    assert "profiling ..." in text and text.endswith("\r\033[K")


def test_progress_is_silent_off_a_terminal_and_when_disabled() -> None:
    for stream, enabled in ((io.StringIO(), True), (_Tty(), False)):
        with working("planning", enabled=enabled, stream=stream, delay=0):
            pass
        assert stream.getvalue() == ""
    assert Status("x", io.StringIO(), 0).line().startswith("| x ... 0 s")


def test_action_lines_carry_the_step(capfd: pytest.CaptureFixture[str]) -> None:
    sched = get_schedule("1f1b", 2, 2)
    hook = LineHook(sched, steps=3)
    for _ in range(2):
        for a in sched.actions[0]:
            hook(0, a, {})
    lines = capfd.readouterr().out.splitlines()
    assert lines[0].startswith("[step 1/3] [Stage 0] Microbatch 0: Forward")
    assert lines[-1].startswith("[step 2/3]") and len(lines) == 2 * len(sched.actions[0])
    LineHook(sched)(0, sched.actions[0][0], {})  # one step: the tutorial's lines, unchanged
    assert capfd.readouterr().out.startswith("[Stage 0]")


# ----------------------------------------------------------------------------- item 8: smaller


def test_the_default_grid_output_validates(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("1f1b", "zbv", "interleaved-1f1b"):
        code, grid, _ = cli(capsys, "schedule", name, "-p", "2", "-m", "4")
        path = tmp_path / f"{name}.txt"
        path.write_text(grid)
        code, out, err = cli(capsys, "validate", str(path))
        assert code == 0 and out.startswith("valid: 2 ranks, "), (out, err)
        assert parse_schedule(grid) == get_schedule(name, 2, 4)


def test_validate_blames_the_misplaced_action() -> None:
    report = validate(parse_schedule("0F0 0F1 1F1 0B0 0B1\n1F0 1B0 1B1\n"))
    assert not report.ok and len(report.errors) == 1
    assert report.errors[0].startswith("1F1 is on rank 0, but stage 1 belongs to rank 1")


def test_compare_limited_to_named_schedules(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "compare", "1f1b", "gpipe", "--json")
    data = json.loads(out)
    assert code == 0 and {e["schedule"] for e in data["schedules"]} == {"1f1b", "gpipe"}
    assert data["skipped"] == []
    code, _, err = cli(capsys, "compare", "nope")
    assert code == 2 and "unknown schedule 'nope'" in err


def test_files_written_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    html = tmp_path / "s.html"
    code, out, err = cli(capsys, "simulate", "1f1b", "-p", "2", "--html", str(html))
    assert code == 0 and f"wrote {html}" in err
    code, out, err = cli(capsys, "compare", "-p", "2", "--html", str(html), "--json")
    assert code == 0 and json.loads(out) and f"wrote {html}" in err


def test_ascii_chart_says_a_column_in_the_unit(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "simulate", "1f1b", "-p", "2", "--width", "60")
    assert code == 0 and "1 units" not in out


def test_pure_data_parallel_is_named_so(tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "plan", "--costs", layer_file(tmp_path), "-w", "4", "--dp", "4",
                       "--batch", "8")
    assert code == 0 and "best: pure data parallel, 4 replicas" in out, out
    assert "-0.0%" not in out and "interleaved" not in out


def test_oversubscription_warning() -> None:
    assert warn_oversubscribed(2, cpus=2) is None
    line = warn_oversubscribed(4, cpus=2)
    assert line is not None and "4 processes on 2 CPU cores" in line and "\n" not in line


def test_the_tutorial_diagram_names_no_missing_flag() -> None:
    from pipesim.views.tutorial import render_tutorial_diagram
    text = render_tutorial_diagram(get_schedule("1f1b", 4, 64))
    assert "first" in text and "max_width" not in text
