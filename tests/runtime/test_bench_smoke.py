"""The benchmark harness (benchmarks/harness, not in the wheel) runs one tiny configuration end
to end (no timing assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from benchmarks.harness.common import ResultLog, format_table
from benchmarks.harness.headtohead import Case, run_case
from benchmarks.harness.limits import SyntheticCase, perfect_pipeline_rate, synthetic_ideal
from benchmarks.harness.startup import tutorial_path
from benchmarks.harness.torchpp import TORCH_EQUIVALENT, torch_placement

from pipesim.schedules import get_schedule


def test_head_to_head_tiny_case_gives_both_sides_and_the_same_loss(tmp_path: Path) -> None:
    case = Case("1f1b", 2, microbatches=2, batch=4, hidden=8, layers=2, steps=1, warmup=1)
    log = ResultLog(str(tmp_path / "r.jsonl"), tags={"allocator": "keep"})
    row = log.add("torch", run_case(case))
    for key in ("pipesim_samples_per_s", "torch_samples_per_s", "ratio", "ideal_step_s",
                "ideal_formula_s", "stage_F_ms", "stage_B_ms", "profile", "grad_errors"):
        assert key in row, key
    assert row["pipesim_samples_per_s"] > 0 and row["torch_samples_per_s"] > 0
    assert set(row["grad_errors"]) == {"pipesim_vs_one_process", "torch_vs_one_process",
                                       "torch_vs_pipesim"}
    assert row["max_grad_error"] <= row["grad_rtol"]
    # same initial weights, same data: the same first loss (later steps may differ by rounding)
    assert row["pipesim_loss"][0] == pytest.approx(row["torch_loss"][0], abs=1e-6)
    assert len(row["pipesim_loss"]) == len(row["torch_loss"]) == 2
    assert len(row["profile"]) == 2 and row["profile"][0]["actions_per_step"] == 4
    # every timed step kept, and which side went first: the warm-up step was pipesim's turn
    assert len(row["pipesim_steps_s"]) == len(row["torch_steps_s"]) == 1
    assert row["pipesim_first"] == [False]
    line = json.loads((tmp_path / "r.jsonl").read_text().splitlines()[0])
    assert line["bench"] == "torch" and "load" in line and "machine" in line
    assert line["allocator"] == "keep"
    assert "1f1b" in format_table([row], [("schedule", "schedule", "")])


@pytest.mark.parametrize("side", ["pipesim", "torch"])
def test_a_standalone_run_times_one_side_after_the_same_gradient_check(side: str) -> None:
    """bench_standalone.py's runs: both sides built and checked, only ``side`` timed."""
    case = Case("zb-h1", 2, microbatches=2, batch=4, hidden=8, layers=2, steps=2, warmup=0,
                timed=side)
    row = run_case(case)
    other = "torch" if side == "pipesim" else "pipesim"
    assert row[f"{side}_step_s"] > 0 and f"{other}_step_s" not in row and "ratio" not in row
    assert row["max_grad_error"] <= row["grad_rtol"]
    assert ("ideal_step_s" in row) == (side == "pipesim")


@pytest.mark.parametrize("name", sorted(TORCH_EQUIVALENT))
def test_torch_places_stages_as_pipesim_does(name: str) -> None:
    sched = get_schedule(name, 4, 8)
    assert torch_placement(name, 4) == sched.stage_to_rank


def test_synthetic_ideal_is_the_closed_form_for_1f1b() -> None:
    # (m + p - 1) x (F + B) with F = 20 ms, B = 40 ms, 4 ranks, 8 microbatches
    assert synthetic_ideal(SyntheticCase("1f1b", 4, 8)) == pytest.approx(11 * 0.060)
    assert perfect_pipeline_rate(1000.0, 2, 8) == pytest.approx(1000.0 * 2 * 8 / 9)


def test_the_tutorial_comparison_needs_its_script(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPESIM_TUTORIAL", raising=False)
    assert tutorial_path(None) is None  # skipped, not a guess beside the checkout
    script = tmp_path / "pipeline_simulation.py"
    script.write_text("print('hi')\n")
    monkeypatch.setenv("PIPESIM_TUTORIAL", str(script))
    assert tutorial_path(None) == script
    with pytest.raises(FileNotFoundError):
        tutorial_path(str(tmp_path / "missing.py"))


def test_the_ideal_on_shared_cores_comes_from_cpu_time_when_ranks_outnumber_cores(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks.harness.headtohead import ideal_step

    import pipesim.ranks
    from pipesim.costs import CostModel
    from pipesim.shared import simulate_shared

    case = Case("1f1b", 4, microbatches=8)
    wall = {f"{s}{op}": t for s in range(4) for op, t in (("F", 2.0), ("B", 4.0))}
    cpu = {k: v / 2 for k, v in wall.items()}  # sharing doubled each computation's wall time
    per_rank = [{"durations": wall, "cpu": cpu}] * 4
    monkeypatch.setattr(pipesim.ranks, "available_cores", lambda: 2)
    got = ideal_step(case, per_rank)
    sched = get_schedule("1f1b", 4, 8)
    want = simulate_shared(sched, CostModel.from_lists(4, [1.0] * 4, [1.0] * 4, [1.0] * 4,
                                                       [2.0] * 4, unit="s"), 2).makespan
    assert got["ideal_shared_s"] == pytest.approx(want) and got["cores"] == 2
    assert got["ideal_step_s"] == pytest.approx((8 + 3) * 6.0)  # 4 processors, wall times
    monkeypatch.setattr(pipesim.ranks, "available_cores", lambda: 4)
    assert "ideal_shared_s" not in ideal_step(case, per_rank)  # a core per rank: no sharing


def test_the_ideal_includes_each_ranks_optimizer_as_the_ab_times_a_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The A/B's step ends with the last rank's optimizer update, so the ideal's does: rank r
    updates after its own last action (its wall time alone, its CPU time on shared cores)."""
    from benchmarks.harness.headtohead import ideal_step

    import pipesim.ranks
    from pipesim.costs import CostModel
    from pipesim.shared import simulate_shared
    from pipesim.simulate import simulate

    case = Case("1f1b", 4, microbatches=8, steps=10)
    wall = {f"{s}{op}": t for s in range(4) for op, t in (("F", 2.0), ("B", 4.0))}
    cpu = {k: v / 2 for k, v in wall.items()}
    # per step: rank 0 (the last to end in 1F1B) 3 s of optimizer, the others 40 s: a later
    # rank's update, not rank 0's last B, ends the step
    profile = [{"optimizer": 10 * o, "optimizer_cpu": 10 * o / 2} for o in (3.0, 40, 40, 40)]
    per_rank = [{"durations": wall, "cpu": cpu, "profile": p} for p in profile]
    monkeypatch.setattr(pipesim.ranks, "available_cores", lambda: 2)
    got = ideal_step(case, per_rank)
    sched = get_schedule("1f1b", 4, 8)
    ends = [row[-1].end for row in simulate(sched, CostModel.from_lists(
        4, [2.0] * 4, [2.0] * 4, [2.0] * 4, [4.0] * 4, unit="s")).by_rank()]
    assert ends[0] == (8 + 3) * 6.0  # without updates the step is rank 0's last B
    want = max(e + o for e, o in zip(ends, (3.0, 40.0, 40.0, 40.0), strict=True))
    assert want > ends[0] + 3.0 and got["ideal_step_s"] == pytest.approx(want)
    assert got["optimizer_ms"] == pytest.approx([3e3, 4e4, 4e4, 4e4])
    shared = simulate_shared(sched, CostModel.from_lists(4, [1.0] * 4, [1.0] * 4, [1.0] * 4,
                                                         [2.0] * 4, unit="s"), 2,
                             after=[1.5, 20.0, 20.0, 20.0])
    alone = simulate_shared(sched, CostModel.from_lists(4, [1.0] * 4, [1.0] * 4, [1.0] * 4,
                                                        [2.0] * 4, unit="s"), 2).makespan
    assert got["ideal_shared_s"] == pytest.approx(max(shared.meta["finished"]))
    assert got["ideal_shared_s"] > alone + 20.0  # the updates took CPU from the others


def test_the_noise_benchmark_reads_drift_off_profile_and_run_windows() -> None:
    """bench_noise.drift: run over profile - 1 for every start of (profile, run) turns, a
    window apart. A machine twice as slow from some window on: one profile then one run that
    straddle the change read +50% or +100%; two rounds of each see both speeds alike, 0.
    And a short trace of two real processes."""
    from benchmarks.bench_noise import drift, trace
    slower = [1.0] * 4 + [2.0] * 4
    assert drift(slower, 1.0, 2.0, 1) == pytest.approx([0.5, 1.0, 1.0])
    assert drift([1.0] * 6 + [2.0] * 6, 0.5, 2.0, 2) == pytest.approx([0.0])
    series = trace(2, 0.2, 0.05)
    assert len(series) == 2 and all(s and min(s) > 0 for s in series)


def test_the_prediction_benchmark_runs_one_trial_in_turns(tmp_path: Path) -> None:
    """bench_predict.bench_one at its smallest: two turns of (profile, run) of the MLP on 2
    ranks give one row with the three figures, and the saved runs replay offline."""
    import argparse

    from benchmarks.bench_predict import bench_one

    from pipesim.calibration import load_engine_costs
    from pipesim.ranks import available_cores
    from pipesim.timeline import Timeline
    args = argparse.Namespace(microbatches=4, steps=2, run_seconds=0.0, repeats=2,
                              profile_seconds=0.0, statistic="mean", processes=1, rounds=2,
                              save=str(tmp_path))
    row = bench_one("mlp", "1f1b", 2, args, load_engine_costs())
    assert row["measured_ms"] > 0 and row["predicted_ms"] > 0 and row["replay_ms"] > 0
    assert row["steps"] >= 2 and row["speed_drift"] is not None
    saved = json.loads(next(tmp_path.glob("mlp-1f1b-2r-*.json")).read_text())
    assert len(saved["rounds"]) == 2
    cores = available_cores()  # the ranks share the cores only on a machine with one
    assert Timeline.from_dict(saved["predicted"]).meta["cores"] == (None if cores >= 2 else 1)
