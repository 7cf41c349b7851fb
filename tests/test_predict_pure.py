"""predict/compare without torch: the report's fields and signs on hand-made timelines."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipesim.ir import Action, Op, Schedule
from pipesim.layercosts import LayerCost, LayerCosts
from pipesim.predict import compare, median_step, predict, step_times, used_steps
from pipesim.schedules import get_schedule
from pipesim.timeline import Event, Timeline


def _timeline(*rows: list[tuple[str, float, float]]) -> Timeline:
    """One step: per rank, (action text, start, end)."""
    from pipesim.ir import parse_action
    events = tuple(Event(r, parse_action(a), s, e) for r, row in enumerate(rows) for a, s, e in row)
    return Timeline(len(rows), events, unit="s", name="1f1b")


def _step(scale: float) -> Timeline:
    return _timeline([("0F0", 0, 1 * scale), ("0B0", 3 * scale, 5 * scale)],
                     [("1F0", 1 * scale, 2 * scale), ("1B0", 2 * scale, 3 * scale)])


def test_compare_reports_signed_error_per_step_and_rank() -> None:
    predicted = _step(1.0)  # makespan 5
    measured = [_step(9.0), _step(1.25), _step(1.0), _step(1.5)]  # step 0 is warm-up
    report = compare(predicted, measured)
    assert report["steps_used"] == [1, 2, 3]
    assert report["measured_step_seconds"] == pytest.approx(6.25)  # median of 6.25, 5, 7.5
    assert report["predicted_step_seconds"] == 5
    assert report["prediction_error"] == pytest.approx(-0.2)  # the run was slower
    assert [s["error"] for s in report["per_step"]][2] == 0
    rank0, rank1 = report["per_rank"]
    assert (rank0["predicted_finish"], rank1["predicted_finish"]) == (5, 3)
    assert rank1["measured_finish"] == pytest.approx(3.75)
    assert rank0["predicted_busy"] == 3 and rank0["busy_error"] == pytest.approx(-0.2)
    assert median_step(measured) is measured[1]


def test_few_steps_are_all_used_and_a_faster_run_gives_a_positive_error() -> None:
    assert used_steps([_step(1)] * 2) == [0, 1] and used_steps([_step(1)] * 3) == [1, 2]
    assert compare(_step(2.0), [_step(1.0)])["prediction_error"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no measured steps"):
        compare(_step(1.0), [])
    with pytest.raises(ValueError, match="2 ranks"):
        compare(_step(1.0), [_timeline([("0F0", 0, 1)])])


@dataclass(frozen=True)
class _Cfg:
    schedule: Schedule
    balance: tuple[int, ...]
    batch_size: int

    def stage_balance(self) -> list[int]:
        return list(self.balance)


def _costs(n: int, comm: float = 0.0) -> LayerCosts:
    return LayerCosts(tuple(LayerCost(1.0, 1.0, 1.0, 2.0, 100.0) for _ in range(n)),
                      microbatch_size=2, comm_latency=comm)


def test_predict_sums_layers_into_the_runs_stages_and_scales_the_microbatch() -> None:
    sched = get_schedule("gpipe", 2, 1)
    timeline = predict(_Cfg(sched, (2, 1), 2), _costs(3))
    got = {(e.action.stage, e.action.op): e.duration for e in timeline.events}
    assert got == {(0, Op.F): 2, (1, Op.F): 1, (1, Op.B): 2, (0, Op.B): 4}
    assert timeline.makespan == 9 and timeline.meta["predicted"]
    assert predict(_Cfg(sched, (2, 1), 4), _costs(3)).makespan == 18  # twice the samples
    slow = predict(_Cfg(sched, (2, 1), 2), _costs(3, comm=0.5), comm_latency=0.25)
    assert slow.makespan == 9.5  # two messages cross ranks, each 0.25
    with pytest.raises(ValueError, match="has 3 layers"):
        predict(_Cfg(sched, (2, 2), 2), _costs(3))
    assert Action(0, Op.F, 0) in {e.action for e in timeline.events}


def test_predict_and_calibration_modules_do_not_import_torch() -> None:
    code = ("import sys, pipesim.predict, pipesim.calibration; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_a_rank_that_starts_early_and_waits_does_not_lengthen_the_step() -> None:
    from pipesim.predict import step_span
    # rank 1 began its step at 0 and waited inside F0 for rank 0, which began at 2
    step = _timeline([("0F0", 2, 3), ("0B0", 5, 7)], [("1F0", 0, 4), ("1B0", 4, 5)])
    assert step.makespan == 7 and step_span(step) == 5
    report = compare(_step(1.0), [step])
    assert report["measured_step_seconds"] == 5 and report["measured_makespan_seconds"] == 7
    assert report["prediction_error"] == 0


def test_plot_draws_prediction_above_measurement(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from pipesim.commands._runreport import _plot_prediction
    out = tmp_path / "p.png"
    _plot_prediction(_step(1.0), [_step(1.0), _step(1.2)], str(out))
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _on_clock(step: Timeline, start: float, end: float) -> Timeline:
    """A measured step as the runtime records it: where it lies on the run's clock."""
    from dataclasses import replace
    return replace(step, meta={"start": start, "end": end})


def test_a_measured_step_runs_from_the_previous_steps_end_to_its_own() -> None:
    # spans 5 each, but the steps end 7 apart: 2 of optimizer and data between steps
    steps = [_on_clock(_step(1.0), 0, 5), _on_clock(_step(1.0), 6, 12),
             _on_clock(_step(1.0), 13, 19), _on_clock(_step(1.0), 20, 26)]
    assert step_times(steps) == [5, 7, 7, 7]
    report = compare(_step(1.0), steps)
    assert report["measured_step_seconds"] == 7 and report["measured_pipeline_seconds"] == 5
    assert report["prediction_error"] == pytest.approx(5 / 7 - 1)
    assert step_times([_step(2.0)]) == [10]  # no clock record: its span


def test_predict_puts_each_ranks_optimizer_between_steps() -> None:
    sched = get_schedule("gpipe", 2, 1)
    layers = tuple(LayerCost(1.0, 1.0, 1.0, 2.0, 100.0, optimizer=o) for o in (0.0, 0.5, 10.0))
    timeline = predict(_Cfg(sched, (2, 1), 2), LayerCosts(layers, microbatch_size=2))
    # stages: F 2 and 1, B 4 and 2; one step alone spans 9 (r0 F [0,2] B [5,9])
    assert timeline.meta["optimizer_seconds"] == [0.5, 10.0]
    # rank 1 (F 1 + B 2 + 10) bounds the step, and rank 0 waits for its B's input
    assert timeline.meta["step_seconds"] == 13
    rank1 = [e for e in timeline.events if e.rank == 1]
    assert rank1[0].start == 5.5  # it begins the step 5.5 after rank 0 in the steady state
    report = compare(timeline, [_on_clock(timeline, 0, 13), _on_clock(timeline, 13, 26)])
    assert report["prediction_error"] == 0
    forward = get_schedule("forward", 2, 1)
    # no optimizer in a forward-only step: F 2 then F 1, and rank 0 starts the next at 2
    assert predict(_Cfg(forward, (2, 1), 2), LayerCosts(layers, 2)).meta["step_seconds"] == 2
