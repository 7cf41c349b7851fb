"""predict/prediction_report without torch: the report's fields and signs on hand-made timelines."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipesim.costs import CostModel
from pipesim.ir import Action, Op, Schedule
from pipesim.layercosts import LayerCost, LayerCosts
from pipesim.predict import median_step, predict, prediction_report, step_times, used_steps
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


def test_prediction_report_has_signed_errors_per_step_and_rank() -> None:
    predicted = _step(1.0)  # makespan 5
    measured = [_step(9.0), _step(1.25), _step(1.0), _step(1.5)]  # step 0 is warm-up
    report = prediction_report(predicted, measured)
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


def test_steps_whose_ranks_timed_the_reference_kernel_are_left_out() -> None:
    """A step before which the ranks timed the reference kernel (``meta["probe"]``) pays for
    it: the comparison leaves it out, and the run's reference time is the probes' mean."""
    from pipesim.predict import run_reference

    def probed(scale: float, probe: list[float]) -> Timeline:
        return dataclasses.replace(_step(scale), meta={"probe": probe})

    measured = [probed(9.0, [3.0, 1.0]), _step(1.25), probed(4.0, [0.0, 2.0]), _step(1.0)]
    assert used_steps(measured) == [1, 3]
    report = prediction_report(_step(1.0), measured)
    assert report["steps_used"] == [1, 3]
    assert report["measured_step_seconds"] == pytest.approx(5.625)  # of 6.25 and 5, not 20
    assert run_reference(measured) == pytest.approx(2.0)  # the 0 is a rank that did not
    assert run_reference([_step(1.0)] * 3) is None


def test_few_steps_are_all_used_and_a_faster_run_gives_a_positive_error() -> None:
    assert used_steps([_step(1)] * 2) == [0, 1] and used_steps([_step(1)] * 3) == [1, 2]
    assert used_steps([_step(1)] * 5) == [2, 3, 4]  # step 1 holds the optimizer's first update
    assert prediction_report(_step(2.0), [_step(1.0)])["prediction_error"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no measured steps"):
        prediction_report(_step(1.0), [])
    with pytest.raises(ValueError, match="2 ranks"):
        prediction_report(_step(1.0), [_timeline([("0F0", 0, 1)])])


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
    report = prediction_report(_step(1.0), [step])
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
    report = prediction_report(_step(1.0), steps)
    assert report["measured_step_seconds"] == 7 and report["measured_pipeline_seconds"] == 5
    assert report["prediction_error"] == pytest.approx(5 / 7 - 1)
    assert step_times([_step(2.0)]) == [10]  # no clock record: its span


def test_predict_puts_each_ranks_optimizer_between_steps() -> None:
    sched = get_schedule("gpipe", 2, 1)
    layers = tuple(LayerCost(1.0, 1.0, 1.0, 2.0, 100.0, optimizer=o) for o in (0.0, 0.5, 10.0))
    timeline = predict(_Cfg(sched, (2, 1), 2), LayerCosts(layers, microbatch_size=2))
    # stages: F 2 and 1, B 4 and 2; one step alone spans 9 (r0 F [0,2] B [5,9])
    assert timeline.meta["optimizer_seconds"] == [0.5, 10.0]
    # the ranks meet between steps (the engine's batch check): rank 1 ends its B at 5 and
    # updates for 10, so both begin the next step at 15; rank 0's 9 + 0.5 waits for it
    assert timeline.meta["step_seconds"] == 15
    # without the meeting rank 1 (F 1 + B 2 + 10) would bound the step, 13, rank 0's F
    # overlapping rank 1's update
    from pipesim.costs import CostModel
    from pipesim.steady import steady_step
    costs = CostModel.from_dict(timeline.meta["costs"])
    alone = steady_step(sched, costs, timeline.meta["between_seconds"])
    assert alone.step == 13
    assert next(e.start for e in alone.timeline.events if e.rank == 1) == 5.5
    with_sync = dataclasses.replace(LayerCosts(layers, microbatch_size=2), engine_sync=0.25)
    assert predict(_Cfg(sched, (2, 1), 2), with_sync).meta["step_seconds"] == 15.25
    report = prediction_report(timeline, [_on_clock(timeline, 0, 15), _on_clock(timeline, 15, 30)])
    assert report["prediction_error"] == 0
    forward = get_schedule("forward", 2, 1)
    # no optimizer in a forward-only step: F 2 then F 1, and the ranks meet (pipe.forward
    # checks the batch too) once rank 1's F is done: the next step begins at 3
    assert predict(_Cfg(forward, (2, 1), 2), LayerCosts(layers, 2)).meta["step_seconds"] == 3


def test_predict_charges_the_data_time_to_the_ranks_that_make_the_batch() -> None:
    """The first and the last stage's ranks make the step's batch between steps; a middle
    rank does not. The cost file keeps the figure."""
    sched = get_schedule("gpipe", 3, 2)
    base = _costs(3)
    with_data = dataclasses.replace(base, data_time=0.25)
    plain = predict(_Cfg(sched, (1, 1, 1), 2), base).meta["between_seconds"]
    timed = predict(_Cfg(sched, (1, 1, 1), 2), with_data).meta["between_seconds"]
    assert [b - a for a, b in zip(plain, timed, strict=True)] == [0.25, 0.0, 0.25]
    one = get_schedule("gpipe", 1, 2)  # one rank holds both ends: charged once
    assert predict(_Cfg(one, (3,), 2), with_data).meta["between_seconds"] == [0.25]
    from pipesim.layercosts import parse_layer_costs
    assert parse_layer_costs(with_data.to_json()).data_time == 0.25


# ----------------------------------------------------------------------------- replay and drift


def _run_like(schedule: Schedule, costs: CostModel, between: list[float], steps: int
              ) -> list[Timeline]:
    """Steps of a run whose actions and messages took what ``costs`` says: the steady step,
    laid end to end on the run's clock as the runtime records it (meta start and end)."""
    from pipesim.steady import steady_step
    steady = steady_step(schedule, costs, between)
    out, start = [], 0.0
    for _ in range(steps):
        out.append(_on_clock(steady.timeline, start, start + steady.timeline.end))
        start += steady.step
    return out


def test_replay_of_a_run_equals_the_simulation_of_its_medians_and_messages() -> None:
    from pipesim.predict import action_means, replay
    from pipesim.steady import steady_step
    sched = get_schedule("1f1b", 2, 4)
    truth = CostModel.from_lists(2, [1.0, 1.5], [1.0, 1.2], [0.5, 0.7], [2.0, 3.0],
                                 comm_latency=0.25, unit="s")
    measured = _run_like(sched, truth, [0.5, 0.75], 4)
    profiled = CostModel.uniform(2, F=1.0, comm_latency=0.5, send_overhead=0.1, unit="s")
    predicted = Timeline(2, (), unit="s", meta={"costs": profiled.to_dict(),
                                                "between_seconds": [0.5, 0.75]})
    assert action_means(measured) == {(0, Op.F): 1.0, (1, Op.F): 1.5, (0, Op.B): 2.0,
                                        (1, Op.B): 3.0}
    again = replay(sched, predicted, measured)
    want = steady_step(sched, truth, [0.5, 0.75]).step
    assert again.meta["step_seconds"] == pytest.approx(want)
    report = prediction_report(predicted | _Meta(want), measured, again, 0.1)  # type: ignore[operator]
    assert report["replay_step_seconds"] == pytest.approx(want)
    assert report["replay_error"] == pytest.approx(0, abs=1e-12)
    assert report["speed_drift"] == 0.1
    # F 1 + 1.5 and B 2 + 3 per microbatch, profiled F 1 + 1 and B 2 + 2
    assert report["action_drift"] == pytest.approx(7.5 / 6 - 1)


def test_replay_takes_the_engines_time_and_each_ranks_time_between_steps_from_the_run() -> None:
    """The run's engine spent 0.125 before each action and rank 0 1.5 between steps, where the
    prediction said 0 and 0.5: the replay reads both off the run and equals it."""
    from pipesim.predict import replay
    from pipesim.steady import steady_step
    for name in ("1f1b", "zb-h1", "gpipe"):
        sched = get_schedule(name, 2, 4)
        truth = CostModel.from_lists(2, [1.0, 1.5], [1.0, 1.2], [0.5, 0.7], [2.0, 3.0],
                                     comm_latency=0.25, action_overhead=0.125, unit="s")
        measured = _run_like(sched, truth, [1.5, 0.75], 4)
        predicted = Timeline(2, (), unit="s", meta={
            "costs": CostModel.uniform(2, unit="s").to_dict(), "between_seconds": [0.5, 0.75]})
        want = steady_step(sched, truth, [1.5, 0.75]).step
        got = replay(sched, predicted, measured).meta["step_seconds"]
        assert got == pytest.approx(want), name
        assert got > steady_step(sched, dataclasses.replace(truth, action_overhead=0.0),
                                 [0.5, 0.75]).step + 1.0  # the run's own times matter here


class _Meta:
    """``timeline | _Meta(step)``: the timeline predicting ``step`` seconds per step."""

    def __init__(self, step: float) -> None:
        self.step = step

    def __ror__(self, timeline: Timeline) -> Timeline:
        from dataclasses import replace
        return replace(timeline, meta={**timeline.meta, "step_seconds": self.step})


def test_run_messages_reads_the_hop_and_the_senders_time_off_a_run() -> None:
    from pipesim.predict import run_messages
    sched = get_schedule("gpipe", 2, 4)
    truth = CostModel.uniform(2, F=1.0, comm_latency=0.25, unit="s")
    assert run_messages(sched, _run_like(sched, truth, [0.0, 0.0], 3)) == (0.25, 0.0)
    one = get_schedule("gpipe", 1, 2)  # one rank: nothing crosses
    assert run_messages(one, _run_like(one, CostModel.uniform(1), [0.0], 3)) == (None, None)


def test_the_senders_time_counts_before_an_action_whose_input_was_already_in_hand() -> None:
    """1F1B p=2 m=2, by hand. After 0F0 rank 0 spends 0.5 sending, then runs 0F1 (no input):
    the sender's time. After 1B0 rank 1 spends 1.0 before 1F1, whose input (0F1's) had left
    before 1B0 began: nothing to wait for, so that gap is the sender's too (where ranks share
    cores a sender that wakes its receiver can lose its core). After 0F1 rank 0 waits for
    1B0's gradient: not the sender's alone. Send: mean(0.5, 1.0)."""
    from pipesim.predict import run_messages
    sched = get_schedule("1f1b", 2, 2)
    step = _timeline([("0F0", 0, 1), ("0F1", 1.5, 2.5), ("0B0", 4.25, 5.25), ("0B1", 7.25, 8.25)],
                     [("1F0", 1.625, 2.625), ("1B0", 2.625, 3.625), ("1F1", 4.625, 5.625),
                      ("1B1", 5.625, 6.625)])
    hop, send = run_messages(sched, [_on_clock(step, 0, 8.25)])
    assert send == pytest.approx(0.75)
    assert hop == 0.0  # 0.625 per message (1F0, 0B0, 0B1) less the sender's 0.75, floored


def test_a_pairs_messages_leave_at_its_end_and_the_replay_reads_the_true_hop() -> None:
    """A pair's F output leaves only when the pair's B ends. Here rank 1 idles until 0F1's
    output comes (1F1 right after 2F0), so reading the hop from 0F1's own end would add the
    pair's B (3B0, 2 s) to it: a measured DualPipeV run said 4.3 ms where the hop was 56 us."""
    from pipesim.predict import replay, run_messages
    from pipesim.schedule_io import parse_text
    from pipesim.steady import steady_step
    sched = parse_text("# pipesim schedule t: ranks=2 stages=4 microbatches=2 "
                       "stage_to_rank=0,1,1,0\n"
                       "0F0 3F0 (0F1;3B0)OVERLAP_F_B 3F1 3B1 0B0 0B1\n"
                       "1F0 2F0 1F1 2B0 1B0 2F1 2B1 1B1\n")
    truth = CostModel.from_lists(4, [1.0, 1.25, 1.5, 0.5], [1.0] * 4, [1.0] * 4, None,
                                 comm_latency=0.125, action_overhead=0.03125, unit="s")
    measured = _run_like(sched, truth, [0.5, 0.5], 4)
    assert run_messages(sched, measured, 0.03125) == pytest.approx((0.125, 0.0))
    predicted = Timeline(2, (), unit="s", meta={
        "costs": CostModel.uniform(4, unit="s").to_dict(), "between_seconds": [0.5, 0.5]})
    got = replay(sched, predicted, measured).meta["step_seconds"]
    assert got == pytest.approx(steady_step(sched, truth, [0.5, 0.5]).step)


def test_speed_drift_is_the_reference_kernels_slowdown() -> None:
    from pipesim.predict import speed_drift
    assert speed_drift(2.0, [2.2, 2.6]) == pytest.approx(0.2)
    assert speed_drift(2.0, [1.5]) == pytest.approx(-0.25)  # faster now
    assert speed_drift(0.0, [1.0]) is None and speed_drift(1.0, []) is None


def test_compare_without_replay_or_drift_says_none_and_json_carries_all_three() -> None:
    from pipesim.predict import prediction_json, prediction_lines
    report = prediction_report(_step(1.0), [_step(1.0)])
    assert report["replay_step_seconds"] is None and report["replay_error"] is None
    assert report["speed_drift"] is None
    assert {"replay_step_seconds", "replay_error", "speed_drift"} <= set(prediction_json(report))
    assert len(prediction_lines(report)) == 1
    both = prediction_report(_step(1.0), [_step(1.0)], _step(1.25), -0.03)
    lines = prediction_lines(both)
    assert "error +25.0%" in lines[1] and "kernel -3.0%" in lines[2]
    assert lines[3].startswith("Reading: the replay misses by +25.0% too")


@pytest.mark.parametrize(("replayed", "drift", "measured", "cores", "reading"), [
    (1.0, 0.25, 1.25, None, "the machine ran 25% slower during the run than while profiled, "
     "which alone makes the prediction -20.0% off: its error is the machine's"),
    (1.0, -0.2, 0.8, None, "the machine ran 20% faster during the run than while profiled, "
     "which alone makes the prediction +25.0% off: its error is the machine's"),
    # slower by the kernel, yet the prediction slower too: not the machine's
    (1.02, 0.12, 1.0, None, "the machine ran 12% slower during the run than while profiled, "
     "which alone makes the prediction -10.7% off; it is +0.0%, and the other +10.7% is not "
     "the machine's speed: the engine's own time"),
    (1.0, 0.01, 1.2, None, "the machine held its speed and the replay follows the run, but the "
     "prediction is -16.7% off: the run's actions took +20.0% against the profile"),
    (1.0, 0.01, 1.2, 2, "the machine held its speed and the replay follows the run, but the "
     "prediction is -16.7% off: ranks that share cores lose more to the sharing"),
    (1.0, 0.01, 0.8, 2, "the machine held its speed and the replay follows the run, but the "
     "prediction is +25.0% off: ranks that share cores lose less to the sharing"),
    # the drift explains -10.7% of a -30.6% error (1 / 1.44 - 1): the sharing cost more than charged
    (1.0, 0.12, 1.44, 2, "the machine ran 12% slower during the run than while profiled, "
     "which alone makes the prediction -10.7% off; it is -30.6%, and the other -19.8% is not "
     "the machine's speed: ranks that share cores lose more to the sharing"),
    (1.01, -0.02, 1.01, None, "the machine held its speed and the model the run"),
    (1.2, -0.02, 1.0, None, "the replay misses by +20.0% too"),
])
def test_the_report_says_whose_error_the_predictions_is(replayed: float, drift: float,
                                                          measured: float, cores: int | None,
                                                          reading: str) -> None:
    """The model's (the replay misses too), the machine's (its reference kernel moved by what
    the error says), or what is left: the sharing of cores, the profile's actions (the kernel
    held, the run's actions did not), the engine's and the messages' times."""
    from pipesim.predict import prediction_lines
    costs = CostModel.from_lists(2, [1.0, 1.0], [1.0, 0.5], [1.0, 0.5], [2.0, 1.0], unit="s")
    predicted = dataclasses.replace(_step(1.0), meta={"costs": costs.to_dict(), "cores": cores})
    # the measured steps' actions take ``measured`` x the profile's
    report = prediction_report(predicted, [_step(measured)] * 3, _step(replayed * measured),
                               drift)
    assert prediction_lines(report)[-1].startswith("Reading: " + reading)
    assert (report["action_drift"] is None) == (cores is not None)


# ----------------------------------------------------------------------------- the engine's time


def test_engine_gaps_reads_back_the_simulated_engines_time() -> None:
    from pipesim.predict import engine_gaps
    for name in ("gpipe", "1f1b", "zb-h1"):
        sched = get_schedule(name, 2, 4)
        costs = CostModel.uniform(2, F=1.0, comm_latency=0.5, action_overhead=0.125, unit="s")
        action, step, sync = engine_gaps(sched, _run_like(sched, costs, [0.75, 0.75], 4))
        assert (action, step) == (pytest.approx(0.125), pytest.approx(0.75)), name
        assert sync == 0.0  # a run recorded without its ranks' meeting shows none


def _run_met(schedule: Schedule, costs: CostModel, between: list[float], barrier: float,
             steps: int) -> list[Timeline]:
    """Steps of a run whose ranks meet between steps, as the runtime records them: each
    step's ``meta["begin"]`` says when each rank began it (its last action of the step before,
    then its ``between``), on the step's clock, whose 0 is when the meeting let them go."""
    from dataclasses import replace

    from pipesim.steady import steady_step
    steady = steady_step(schedule, costs, between, barrier=barrier)
    ends = [row[-1].end for row in steady.timeline.by_rank()]
    begin = [e + b - steady.step for e, b in zip(ends, between, strict=True)]
    return [replace(steady.timeline, meta={"start": k * steady.step, "begin": begin,
                                           "synced": [max(begin) + barrier] * len(begin),
                                           "end": k * steady.step + steady.timeline.end})
            for k in range(steps)]


def test_engine_gaps_and_the_replay_read_the_ranks_meeting_off_a_run() -> None:
    """Ranks that meet 0.5 after the last of them is through its between-steps time (1.5 on
    rank 0, 0.75 on rank 1): the step overhead is every rank's own gap (mean 1.125), sync the
    meeting, and the replay equals the run, also where a rank's step begins by waiting."""
    from pipesim.predict import engine_gaps, replay
    from pipesim.steady import steady_step
    for name in ("gpipe", "1f1b", "zb-h1", "zbv"):
        sched = get_schedule(name, 2, 4)
        truth = CostModel.from_lists(sched.stages, [1.0, 1.5, 1.25, 0.5][:sched.stages],
                                     [1.0] * sched.stages, [0.5] * sched.stages, None,
                                     comm_latency=0.25, action_overhead=0.125, unit="s")
        measured = _run_met(sched, truth, [1.5, 0.75], 0.5, 4)
        action, step, sync = engine_gaps(sched, measured)
        assert (action, step, sync) == (pytest.approx(0.125), pytest.approx(1.125),
                                        pytest.approx(0.5)), name
        predicted = Timeline(2, (), unit="s", meta={
            "costs": CostModel.uniform(sched.stages, unit="s").to_dict(),
            "between_seconds": [0.0, 0.0]})
        want = steady_step(sched, truth, [1.5, 0.75], barrier=0.5).step
        assert replay(sched, predicted, measured).meta["step_seconds"] == pytest.approx(want)
        assert want > steady_step(sched, truth, [1.5, 0.75]).step  # the meeting costs here


def _run_varying(schedule: Schedule, per_step: list[CostModel], between: list[float],
                 barrier: float, slow: list[dict[Action, float]] | None = None
                 ) -> list[Timeline]:
    """A run whose ranks meet between steps and whose step k takes ``per_step[k]``'s times
    (and ``slow[k]``'s actions their own), recorded as the runtime records it (``_run_met``,
    one step at a time)."""
    from dataclasses import replace

    from pipesim.simulate import simulate
    out: list[Timeline] = []
    release, begin = 0.0, [0.0] * schedule.ranks
    for k, costs in enumerate(per_step):
        step = simulate(schedule, costs, durations=slow[k] if slow else None)
        out.append(replace(step, meta={"start": release, "end": release + step.end,
                                       "begin": begin, "synced": [0.0] * schedule.ranks}))
        after = [release + row[-1].end + b for row, b in zip(step.by_rank(), between,
                                                               strict=True)]
        release = max(after) + barrier
        begin = [a - release for a in after]
    return out


def _scaled(costs: CostModel, k: float) -> CostModel:
    """``costs`` with every action k times as long (messages unchanged)."""
    from dataclasses import replace
    return replace(costs, forward=tuple(k * x for x in costs.forward),
                   backward_input=tuple(k * x for x in costs.backward_input),
                   backward_weight=tuple(k * x for x in costs.backward_weight),
                   backward=tuple(k * x for x in costs.backward))


def test_the_replay_of_a_run_whose_steps_vary_replays_each_step() -> None:
    """Steps whose actions take 1x, 1x, 2.5x, 1x, 1.25x, 1x, 1x their times: each replayed
    from its own times, the replay's steps are the run's and its median the run's median; a
    replay of the run's mean action times (what ``replay`` did before) is 15% slower."""
    from pipesim.predict import replay
    from pipesim.steady import steady_step
    for name in ("1f1b", "zb-h1", "zbv"):
        sched = get_schedule(name, 2, 4)
        base = CostModel.from_lists(sched.stages, [1.0, 1.5, 1.25, 0.5][:sched.stages],
                                    [1.0] * sched.stages, [0.5] * sched.stages, None,
                                    comm_latency=0.25, unit="s")
        scales = [1.0, 1.0, 2.5, 1.0, 1.25, 1.0, 1.0]
        per_step = [_scaled(base, k) for k in scales]
        measured = _run_varying(sched, per_step, [1.5, 0.75], 0.5)
        predicted = Timeline(2, (), unit="s", meta={
            "costs": CostModel.uniform(sched.stages, unit="s").to_dict(),
            "between_seconds": [0.0, 0.0]})
        again = replay(sched, predicted, measured)
        times = step_times(measured)
        assert again.meta["replayed_steps"] == pytest.approx(times[2:]), name  # 0, 1: warm-up
        report = prediction_report(predicted, measured, again)
        assert report["replay_error"] == pytest.approx(0.0, abs=1e-12), name
        mean = steady_step(sched, _scaled(base, sum(scales[2:]) / 5), [1.5, 0.75],
                           barrier=0.5).step
        assert mean > 1.1 * report["measured_step_seconds"], name


def test_the_replay_gives_each_action_its_own_time() -> None:
    """Every step has one slow action (a different microbatch's F on stage 0 each step, 4x its
    time), as a rank sharing its core with another now and then has: replayed action by
    action the run is exact; with each (stage, op)'s mean in the step the slow F's delay
    would be spread over its stage's Fs and the waits it causes downstream lost."""
    from pipesim.predict import replay
    sched = get_schedule("1f1b", 2, 4)
    base = CostModel.from_lists(2, [1.0, 1.5], [1.0, 1.0], [0.5, 0.5], None,
                                comm_latency=0.25, unit="s")
    slow = [{Action(0, Op.F, k % 4): 4.0} for k in range(6)]
    measured = _run_varying(sched, [base] * 6, [1.5, 0.75], 0.5, slow)
    predicted = Timeline(2, (), unit="s", meta={
        "costs": CostModel.uniform(2, unit="s").to_dict(), "between_seconds": [0.0, 0.0]})
    again = replay(sched, predicted, measured)
    assert again.meta["replayed_steps"] == pytest.approx(step_times(measured)[2:])
    assert prediction_report(predicted, measured, again)["replay_error"] == pytest.approx(
        0.0, abs=1e-12)


def test_predict_charges_the_engines_time_per_action_and_between_steps() -> None:
    sched = get_schedule("gpipe", 2, 1)
    base = _costs(3)
    plain = predict(_Cfg(sched, (2, 1), 2), base)
    from dataclasses import replace
    engine = replace(base, engine_action_overhead=0.5, engine_step_overhead=1.0)
    slower = predict(_Cfg(sched, (2, 1), 2), engine)
    assert slower.meta["between_seconds"] == [1.0, 1.0]
    assert CostModel.from_dict(slower.meta["costs"]).action_overhead == 0.5
    # on the critical path 0F0 and 1B0 each start 0.5 later; 1F0 and 0B0 spend theirs while
    # waiting for their input; and 1 between steps
    assert slower.meta["step_seconds"] == plain.meta["step_seconds"] + 2 * 0.5 + 1.0


def test_layer_costs_carry_the_engines_time_and_the_reference_kernel() -> None:
    from dataclasses import replace

    from pipesim.layercosts import parse_layer_costs
    from pipesim.stagecosts import stage_costs
    costs = replace(_costs(2), engine_action_overhead=1e-4, engine_step_overhead=5e-4,
                    reference_time=3e-4, shared_compute=1.25)
    again = parse_layer_costs(costs.to_json())
    assert again == costs and again.to_dict()["shared_compute"] == 1.25
    assert stage_costs(again, [1, 1]).action_overhead == 1e-4
    assert "engine_action_overhead" not in _costs(2).to_dict()  # absent when unknown


# ----------------------------------------------------------------------------- the cache


def test_the_calibration_cache_is_keyed_by_machine_and_torch_version(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipesim.calibration import (
        ENV,
        EngineCosts,
        cache_path,
        load_engine_costs,
        torch_version,
    )
    monkeypatch.setenv(ENV, str(tmp_path))
    assert cache_path().parent == tmp_path
    assert load_engine_costs() is None  # nothing measured here yet
    here = EngineCosts(1e-5, 4e-4, "m", "t", fits={"1f1b": [1e-5, 4e-4]})
    cache_path().write_text(here.to_json(), encoding="utf-8")
    assert load_engine_costs() == here
    assert cache_path("other machine") != cache_path() != cache_path(torch="1.0")
    assert cache_path(transport="shm") != cache_path(transport="gloo")
    assert cache_path(torch=torch_version()) == cache_path()
    assert load_engine_costs(cache_path(torch="1.0")) is None  # another torch: measure again
    cache_path().write_text("{not json", encoding="utf-8")
    assert load_engine_costs() is None  # a damaged cache is measured again, not an error
    cache_path().write_text('{"format": "pipesim-engine-costs", "action_overhead": -1}',
                            encoding="utf-8")
    assert load_engine_costs() is None
    cache_path().write_text(here.to_json().replace('"shared_compute": 0.0', '"shared_compute": '
                                                   '"x"'), encoding="utf-8")
    assert load_engine_costs() is None


def test_with_engine_fills_only_a_cost_file_without_its_own() -> None:
    from dataclasses import replace

    from pipesim.calibration import EngineCosts, with_engine
    engine = EngineCosts(1e-5, 4e-4, shared_compute=1.2)
    filled = with_engine(_costs(2), engine)
    assert (filled.engine_action_overhead, filled.engine_step_overhead) == (1e-5, 4e-4)
    assert filled.shared_compute == 1.2
    own = replace(_costs(2), engine_action_overhead=2e-5)
    assert with_engine(own, engine) is own and with_engine(_costs(2), None) == _costs(2)


# ----------------------------------------------------------------------------- shared cores


def test_predict_on_shared_cores_records_them_and_replay_does_not_share() -> None:
    """gpipe p=2 m=2, F=1 B=2 per stage: a core each, the step is the makespan 9; on one core
    it is the core's 12 of work (tests/core/test_shared.py works it out by hand). A replay
    takes the run's own action times, which already include the sharing: it never shares."""
    from pipesim.predict import replay
    from pipesim.steady import steady_step
    sched = get_schedule("gpipe", 2, 2)
    own = predict(_Cfg(sched, (1, 1), 2), _costs(2))
    one = predict(_Cfg(sched, (1, 1), 2), _costs(2), cores=1)
    assert (own.meta["cores"], own.meta["step_seconds"]) == (None, 9)
    assert (one.meta["cores"], one.meta["step_seconds"]) == (1, 12)
    assert predict(_Cfg(sched, (1, 1), 2), _costs(2), cores=2).meta["step_seconds"] == 9
    assert "cores" not in one.meta["costs"]
    truth = CostModel.uniform(2, F=1.5, B=3.0, comm_latency=0.25, unit="s")
    measured = _run_like(sched, truth, [0.0, 0.0], 4)
    again = replay(sched, one, measured)
    assert again.meta["step_seconds"] == replay(sched, own, measured).meta["step_seconds"]
    assert again.meta["step_seconds"] == pytest.approx(steady_step(sched, truth).step)
    assert "cores" not in again.meta


def test_ranks_that_share_cores_take_the_calibrations_factor_of_cpu_time() -> None:
    """With a shared-core calibration (``shared_compute`` 1.5), ranks that share cores take
    1.5 x each profiled time: gpipe p=2 m=2 on one core is its 12 of work x 1.5; a core each,
    or no calibration, leaves the prediction as it was; the optimizer update counts too."""
    from dataclasses import replace
    sched = get_schedule("gpipe", 2, 2)
    calibrated = replace(_costs(2), shared_compute=1.5)
    one = predict(_Cfg(sched, (1, 1), 2), calibrated, cores=1)
    assert one.meta["step_seconds"] == pytest.approx(18) and one.meta["shared_compute"] == 1.5
    assert one.meta["costs"]["forward"] == [1.5, 1.5]
    own = predict(_Cfg(sched, (1, 1), 2), calibrated)
    assert own.meta["step_seconds"] == 9 and own.meta["shared_compute"] == 1.0
    uncalibrated = predict(_Cfg(sched, (1, 1), 2), _costs(2), cores=1)
    assert (uncalibrated.meta["step_seconds"], uncalibrated.meta["shared_compute"]) == (12, 0.0)
    layers = tuple(c._replace(optimizer=2.0) for c in calibrated.layers)
    updated = predict(_Cfg(sched, (1, 1), 2), replace(calibrated, layers=layers), cores=1)
    assert updated.meta["optimizer_seconds"] == [3.0, 3.0]
    from pipesim.predict import prediction_json, prediction_lines
    report = prediction_report(one, [one] * 3)
    assert prediction_json(report)["shared_compute"] == 1.5
    assert "Shared cores (1 for 2 ranks): each action predicted at x1.50" in \
        prediction_lines(report)[1]
    assert not any("hared" in line for line in prediction_lines(prediction_report(own, [own])))
    assert "no calibration of shared cores" in \
        prediction_lines(prediction_report(uncalibrated, [uncalibrated] * 3))[1]


def test_run_cpu_is_the_ranks_cpu_time_per_used_step() -> None:
    from pipesim.predict import run_cpu
    plain = [_step(1.0)] * 3
    cpu = [dataclasses.replace(_step(2.0), meta={"cpu": [3.0, 4.5 + k]}) for k in range(3)]
    assert run_cpu(plain) is None and run_cpu(cpu) == pytest.approx(9.0)  # step 0 left out


def test_the_meeting_waits_for_each_steps_latest_rank_not_the_latest_mean() -> None:
    """Rank 0 and rank 1 take turns arriving last (8 and 9 on the last step's clock): each
    step meets at 9, while their means (8.5 each) say 8.5. The meeting is the wait from the
    latest beginning to a free rank's first action (1.0 here) plus that 0.5."""
    from dataclasses import replace

    from pipesim.predict import _meeting
    sched = get_schedule("gpipe", 2, 1)
    step = _timeline([("0F0", 0.1, 1.1), ("0B0", 4.3, 6.3)], [("1F0", 1.2, 2.2), ("1B0", 2.2, 4.2)])
    steps = [replace(step, meta={"start": 10.0 * k, "begin": b, "synced": [0.0, 0.0]})
             for k, b in enumerate(([-1.0, -1.0], [-2.0, -1.0], [-1.0, -2.0]))]
    found = _meeting(sched, steps, 0.1)
    assert found is not None
    before, sync = found
    assert before[0] == pytest.approx([8 - 6.3, 9 - 6.3]) and sync == pytest.approx(1.5)
