"""``pipesim simulate`` and ``pipesim compare`` through ``cli.main``, plus the torch-free core."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli import run_cli as run

WriteFile = Callable[[str, str], str]



# ----------------------------------------------------------------------------- simulate


def test_simulate_prints_summary_and_chart(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", "1f1b", "-p", "4", "-m", "8")
    assert code == 0
    assert "makespan 33 units, bubble 27.3%" in out
    table = [line.split() for line in out.splitlines() if line[:4].strip().isdigit()]
    assert [row[0] for row in table] == ["0", "1", "2", "3"]
    assert [row[-1] for row in table] == ["4", "3", "2", "1"]  # peak activations per rank
    assert "rank 3 |......F0B0--" in out  # the chart follows


def test_simulate_json_is_one_object(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "simulate", "gpipe", "-p", "4", "-m", "8", "--cost", "F=2,B=5",
                       "--json")
    assert code == 0
    data = json.loads(out)
    assert list(data) == ["schedule", "ranks", "stages", "microbatches", "makespan",
                          "steady_step", "bubble_fraction", "per_rank", "costs"]
    assert data["makespan"] == (8 + 4 - 1) * 7  # (m + p - 1)(F + B)
    assert data["steady_step"] == data["makespan"]  # gpipe: every rank ends with its last B
    assert data["bubble_fraction"] == pytest.approx(3 / 11)
    assert [r["peak_activations"] for r in data["per_rank"]] == [8] * 4
    assert set(data["per_rank"][0]) == {"busy", "idle", "bubble_fraction", "peak_activations",
                                        "peak_stash"}
    assert data["costs"]["forward"] == [2.0] * 4 and data["costs"]["backward"] == [5.0] * 4


def test_simulate_comm_flags_change_the_result(capsys: pytest.CaptureFixture[str]) -> None:
    base = json.loads(run(capsys, "simulate", "1f1b", "-p", "2", "-m", "1", "--json")[1])
    slow = json.loads(run(capsys, "simulate", "1f1b", "-p", "2", "-m", "1", "--json",
                          "--comm-latency", "0.5", "--activation-bytes", "4",
                          "--comm-bandwidth", "2", "--unit", "ms")[1])
    # two messages (activation down, gradient up), each 0.5 + 4/2 = 2.5 later
    assert slow["makespan"] == base["makespan"] + 2 * 2.5
    assert slow["costs"]["unit"] == "ms"
    # a message's bytes are a stage's output, not what it stashes: no bytes are claimed
    assert "peak_activation_bytes" not in slow["per_rank"][0]


def test_simulate_memory_in_bytes_from_a_cost_files_stash(capsys: pytest.CaptureFixture[str],
                                                         tmp_path: Path) -> None:
    # stash 4 MB per block, output 512 kB: 1f1b's rank 0 keeps 2 stashes (8 MB), not 2 outputs
    costs = tmp_path / "stages.json"
    costs.write_text(json.dumps({"forward": [1, 1], "backward": [2, 2], "unit": "ms",
                                 "activation_bytes": [524288, 524288],
                                 "stash_bytes": [4e6, 4e6]}))
    code, out, _ = run(capsys, "simulate", "1f1b", "-p", "2", "-m", "4", "--costs", str(costs))
    assert code == 0
    table = [line.split() for line in out.splitlines() if line[:4].strip().isdigit()]
    assert [row[-2:] for row in table[:2]] == [["8.0", "MB"], ["4.0", "MB"]]  # decimal, labelled
    data = json.loads(run(capsys, "simulate", "1f1b", "-p", "2", "-m", "4", "--costs",
                          str(costs), "--json")[1])
    assert [r["peak_activation_bytes"] for r in data["per_rank"]] == [8e6, 4e6]
    assert [r["peak_stash"] for r in data["per_rank"]] == [2.0, 1.0]


def test_simulate_views_are_written(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    trace, plot = tmp_path / "t.json", tmp_path / "p.png"
    argv = ["simulate", "zbv", "-p", "2", "-m", "4", "--ascii", "--trace", str(trace)]
    if _has_matplotlib():
        argv += ["--plot", str(plot)]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and out.startswith("zbv: 2 ranks")  # --ascii: the chart alone
    events = json.loads(trace.read_text())["traceEvents"]
    assert sum(e["ph"] == "X" for e in events) == 48  # 4 stages x 4 microbatches x F, I, W
    if _has_matplotlib():
        assert plot.read_bytes().startswith(b"\x89PNG")


def test_simulate_a_file(capsys: pytest.CaptureFixture[str], write_file: WriteFile) -> None:
    path = write_file("mine.txt", "0F0 0F1 0B0 0B1\n1F0 1B0 1F1 1B1\n")
    code, out, _ = run(capsys, "simulate", "--file", path, "--json")
    assert code == 0
    data = json.loads(out)
    assert (data["schedule"], data["ranks"], data["microbatches"]) == ("mine.txt", 2, 2)
    assert data["makespan"] == 9.0


def test_simulate_an_invalid_file_exits_1(capsys: pytest.CaptureFixture[str],
                                          write_file: WriteFile) -> None:
    path = write_file("bad.txt", "0F0 0B0\n1B0 1F0\n")  # rank 1 backs up before it forwards
    code, out, _ = run(capsys, "simulate", "--file", path)
    assert code == 1
    assert out.startswith(f"invalid: {path}") and "1F0" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["simulate", "nope"], "unknown schedule 'nope'; valid: forward, gpipe"),
    (["simulate", "1f1b", "-p", "0"], "must be >= 1, got 0"),
    (["simulate", "1f1b", "-m", "-3"], "must be >= 1, got -3"),
    (["simulate", "1f1b", "--cost", "F=fast"], "--cost F: 'fast' is not a number"),
    (["simulate", "1f1b", "--cost", "X=1"], "OP=NUMBER pairs"),
    (["simulate", "1f1b", "--comm-latency", "soon"], "'soon' is not a number"),
    (["simulate", "1f1b", "--comm-bandwidth", "0"], "must be a number > 0"),
    (["simulate", "1f1b", "--unit", "hours"], "invalid choice: 'hours'"),
    (["simulate", "1f1b", "--costs", "/nonexistent.json"], "cannot read cost file"),
    (["simulate", "--file", "/nonexistent.txt"], "does not exist"),
    (["simulate", "interleaved-1f1b", "-p", "4", "-m", "9"], "divisible"),
    (["simulate", "1f1b", "--trace", "/nonexistent/dir/t.json"], "does not exist"),
    (["compare", "-p", "0"], "must be >= 1"),
    (["compare", "--cost", "F=1,B=two"], "'two' is not a number"),
])
def test_mistakes_are_one_line_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str],
                                      message: str) -> None:
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_cost_files_exit_2(capsys: pytest.CaptureFixture[str],
                               write_file: WriteFile) -> None:
    wrong = write_file("wrong.json", json.dumps({"forward": [1, 1, 1], "backward": [2, 2, 2]}))
    broken = write_file("broken.json", "{\"forward\": [1, ")
    words = write_file("words.json", json.dumps({"forward": ["a"] * 4, "backward": [2] * 4}))
    for path, message in ((wrong, "the per-stage costs have 3 stages, the schedule 4"),
                          (broken, "is not JSON"),
                          (words, "'a' is not a finite number")):
        code, _, err = run(capsys, "simulate", "1f1b", "-p", "4", "--costs", path)
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


# ----------------------------------------------------------------------------- compare


def test_compare_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "compare", "-p", "4", "-m", "4")
    assert code == 0
    rows = {line.split()[-5]: line for line in out.splitlines()
            if "%" in line and line[-1].isdigit()}
    assert "1f1b" in rows and "zb-h1" in rows and "forward" not in rows
    assert "skipped forward: forward only" in out
    assert "skipped dualpipev: dualpipev needs at least as many microbatches" in out
    best = [name for name, line in rows.items() if line.startswith("*")]
    assert best and all(n in ("zbv", "zb-h1") for n in best)  # they tie at 15


def test_compare_json_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["compare", "-p", "4", "-m", "8", "--cost", "F=1,I=1,W=1", "--json"]
    plot = tmp_path / "c.png"
    if _has_matplotlib():
        argv += ["--plot", str(plot)]
    code, out, _ = run(capsys, *argv)
    assert code == 0
    data = json.loads(out)
    spans = {s["schedule"]: s["makespan"] for s in data["schedules"]}
    assert spans["1f1b"] == (8 + 3) * 3 and spans["zb-h1"] == 8 * 3 + 3  # closed forms
    assert data["best"] == min(spans, key=spans.__getitem__)
    peaks = {s["schedule"]: s["peak_activations"] for s in data["schedules"]}
    assert peaks["gpipe"] == 8 and peaks["1f1b"] == 4
    # in rank stashes a v=2 chunk counts 1/2: zbv keeps as much as 1f1b, not twice as much
    stash = {s["schedule"]: s["peak_stash"] for s in data["schedules"]}
    assert stash["zbv"] == stash["1f1b"] == 4 and stash["gpipe"] == 8
    assert stash["interleaved-1f1b"] == peaks["interleaved-1f1b"] / 2
    assert [s["schedule"] for s in data["skipped"]] == ["forward"]
    if _has_matplotlib():
        assert plot.read_bytes().startswith(b"\x89PNG")


# ----------------------------------------------------------------------------- no torch


def test_core_imports_and_simulates_without_torch_or_numpy() -> None:
    script = textwrap.dedent("""
        import sys
        sys.modules["torch"] = None  # any import of torch or numpy now fails
        sys.modules["numpy"] = None
        import pipesim, pipesim.simulate, pipesim.costs, pipesim.timeline
        import pipesim.views.ascii, pipesim.views.chrome_trace, pipesim.views.tutorial
        import pipesim.views.png  # matplotlib only when a picture is drawn
        from pipesim.cli import main
        assert main(["simulate", "1f1b", "--json"]) == 0
        assert main(["compare", "-p", "2", "-m", "4", "--json"]) == 0
        loaded = [m for m in ("torch", "numpy", "matplotlib") if sys.modules.get(m)]
        assert not loaded, loaded
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert '"makespan": 21.0' in done.stdout  # (m + p - 1)(F + B) for p = m = 4


# ----------------------------------------------------------------------------- simulate --dp


def test_simulate_dp_reports_the_exposed_allreduce(capsys: pytest.CaptureFixture[str]) -> None:
    # 1F1B, 2 ranks, 2 microbatches, F=1 B=2: stage 1's last B ends at 7, stage 0's at 9; 2
    # replicas on a bandwidth-1 link move 2(D-1)/D x 3 = 3 bytes per rank in 3 units
    flags = ["--dp", "2", "--param-bytes", "3", "--dp-bandwidth", "1", "--dp-latency", "0",
             "--ranks-per-node", "1"]
    code, out, _ = run(capsys, "simulate", "1f1b", "-p", "2", "-m", "2", *flags)
    assert code == 0
    assert "data parallel: 2 replicas, step 12 units = makespan 9 + exposed all-reduce 3" in out
    data = json.loads(run(capsys, "simulate", "1f1b", "-p", "2", "-m", "2", *flags, "--json")[1])
    assert (data["dp"], data["step_time"], data["exposed_allreduce"]) == (2, 12.0, 3.0)
    assert [r["allreduce_end"] for r in data["allreduce"]] == [12.0, 10.0]


def test_simulate_dp_needs_param_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "simulate", "1f1b", "--dp", "4")
    assert code == 2 and "give --param-bytes BYTES" in err



def test_a_stage_cost_file_brings_its_senders_and_engines_time(
        capsys: pytest.CaptureFixture[str], write_file: Callable[[str, str], str]) -> None:
    path = write_file("s.json", json.dumps({"forward": [1, 1], "backward": [2, 2],
                                            "send_overhead": 0.5, "action_overhead": 0.25}))
    code, out, _ = run(capsys, "simulate", "gpipe", "-p", "2", "-m", "1", "--costs", path,
                       "--json")
    # 0F0 [0.25, 1.75] 1F0 [1.75, 2.75] 1B0 [3.0, 5.5] 0B0 [5.5, 7.5], as in test_simulate
    assert code == 0 and json.loads(out)["makespan"] == 7.25
