"""pipesim run end to end: the demo's lines, exactly one JSON object, views of a real run."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pipesim.cli import main


def test_the_demo_prints_whole_lines_per_stage_and_a_summary() -> None:
    out = subprocess.run([sys.executable, "-m", "pipesim", "run"], capture_output=True,
                         text=True, timeout=300, check=True).stdout
    lines = out.splitlines()
    for mb in range(4):
        assert f"[Stage 0] Microbatch {mb}: Created input (shape: [32, 64])" in lines
        assert f"[Stage 1] Microbatch {mb}: Received from stage 0" in lines
        assert f"[Stage 2] Microbatch {mb}: Sent to stage 3" in lines
        assert any(re.fullmatch(rf"\[Stage 3\] Microbatch {mb}: Completed! Output mean: "
                                r"-?\d+\.\d{4}", ln) for ln in lines)
    # every stage line is whole: nothing else shares a line with it
    assert all(ln.startswith("[Stage ") for ln in lines if "[Stage " in ln)
    assert "PIPELINE SIMULATION COMPLETE" in out and "Measured bubble fraction" in out


def test_json_is_exactly_one_object_and_views_are_written(tmp_path, capsys) -> None:
    html, png = str(tmp_path / "run.html"), str(tmp_path / "run.png")
    trace = str(tmp_path / "trace.json")
    assert main(["run", "--schedule", "zb-h1", "-w", "2", "-m", "4", "--hidden-size", "8",
                 "-b", "2", "--steps", "2", "--json", "--html", html, "--plot", png,
                 "--trace", trace]) == 0
    out = capsys.readouterr().out
    data = json.loads(out)
    assert out.count("\n") == 1 and len(data["loss"]) == 2 and data["samples_per_second"] > 0
    assert {"makespan", "bubble_fraction", "per_rank", "step_seconds"} <= data.keys()
    assert Path(png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    events = json.loads(Path(trace).read_text())["traceEvents"]
    assert sum(e.get("ph") == "X" for e in events) == 2 * 4 * 3  # stages x mb x (F, I, W)
    assert "zb-h1" in Path(html).read_text(encoding="utf-8")


def test_predict_puts_the_simulated_step_above_the_measured_one(tmp_path, capsys) -> None:
    html = str(tmp_path / "run.html")
    assert main(["run", "--schedule", "1f1b", "-w", "2", "-m", "2", "--hidden-size", "8",
                 "-b", "2", "--steps", "3", "--predict", "--html", html, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["predicted_step_seconds"] > 0 and data["measured_step_seconds"] > 0
    assert data["prediction_error"] == pytest.approx(data["predicted_step_seconds"]
                                                     / data["measured_step_seconds"] - 1)
    # the replay (this run's own action and message times) and the machine's speed drift
    assert data["replay_step_seconds"] > 0
    assert data["replay_error"] == pytest.approx(data["replay_step_seconds"]
                                                 / data["measured_step_seconds"] - 1)
    assert isinstance(data["speed_drift"], float) and data["speed_drift"] > -1
    from pipesim.ranks import available_cores
    if available_cores() >= 2:  # else the ranks share a core: no action drift (each action's
        assert isinstance(data["action_drift"], float) and data["action_drift"] > -1
    else:  # time holds its waits for the core)
        assert data["action_drift"] is None
    page = Path(html).read_text(encoding="utf-8")
    # the cards in the order drawn (the summary table above them sorts by makespan, which of
    # the two is larger depends on the machine's load)
    cards = re.findall(r'<section class="card" data-section="(\d+)">\s*<h2>(.*?) <span', page)
    assert cards == [("0", "1f1b predicted"), ("1", "1f1b measured (last step)")]
    summary = page[page.index('class="summary-table"'):page.index('<section class="card"')]
    assert sorted(re.findall(r'<td class="name">(.*?)</td>', summary)) == [
        "1f1b measured (last step)", "1f1b predicted"]
