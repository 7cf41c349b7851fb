"""Predict a run's step from profiled per-layer costs, and compare it with what was measured.

    predict(cfg, layer_costs)        simulate cfg's schedule with the layers summed into its
                                     stages (cfg's balance, scaled to cfg.batch_size), step
                                     after step until the step repeats
    prediction_report(predicted, measured)
                                     predicted vs measured step time, per step and per rank

A step's time is what a training loop pays per step: from one step's end to the next one's
(the last rank's), so it includes each rank's optimizer update between steps, during which the
ranks that wait on it wait. The prediction is the simulator's (``simulate.steady_step``): every
action takes its profiled time, a message costs ``comm_latency + bytes / comm_bandwidth`` and
its sender ``comm_send_overhead`` (from the cost file; ``pipesim profile`` measures them between
2 ranks), and rank r spends its stages' profiled ``optimizer`` time between steps. It knows
nothing of the engine's own Python work per action or of two ranks sharing CPU cores; see
benchmarks/RESULTS_predict.md.

This module imports neither torch nor numpy (``cfg`` is read by attribute), so
``prediction_report`` works on saved timelines anywhere.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
from collections.abc import Sequence
from typing import Any

from pipesim.layercosts import LayerCosts, stage_costs, stage_optimizer
from pipesim.simulate import steady_step
from pipesim.timeline import Timeline


def predict(cfg: Any, layer_costs: LayerCosts, comm_latency: float | None = None,
            comm_bandwidth: float | None = None, send_overhead: float | None = None
            ) -> Timeline:
    """The simulated Timeline (seconds) of one steady step of ``cfg`` (a RunConfig).

    Its ``meta["step_seconds"]`` is the step time (``steady_step``; each rank's optimizer
    time, ``meta["optimizer_seconds"]``, lies between steps unless the schedule is
    forward-only). ``comm_latency``/``comm_bandwidth``/``send_overhead`` override the cost
    file's message model.
    """
    balance = cfg.stage_balance()
    if len(layer_costs) != sum(balance):
        raise ValueError(f"the cost file has {len(layer_costs)} layers; the run's model has "
                         f"{sum(balance)} (profile the same model and --layers)")
    costs = stage_costs(layer_costs, balance, cfg.batch_size)
    if comm_latency is not None:
        costs = dataclasses.replace(costs, comm_latency=comm_latency)
    if comm_bandwidth is not None:
        costs = dataclasses.replace(costs, comm_bandwidth=comm_bandwidth)
    if send_overhead is not None:
        costs = dataclasses.replace(costs, send_overhead=send_overhead)
    sched = cfg.schedule
    between = [0.0] * sched.ranks
    if not sched.forward_only:
        for stage, seconds in enumerate(stage_optimizer(layer_costs, balance)):
            between[sched.stage_to_rank[stage]] += seconds
    steady = steady_step(sched, costs, between)
    return dataclasses.replace(steady.timeline, meta={
        **steady.timeline.meta, "predicted": True, "step_seconds": steady.step,
        "optimizer_seconds": between})


def predict_run(cfg: Any, costs_path: str | None = None) -> Timeline:
    """``pipesim run --predict [COSTS.json]``: predict from a cost file, or profile now.

    Without a file, ``cfg``'s model is profiled at its microbatch size, in as many processes
    at once as the run puts ranks on this machine (at most one per CPU: the cores are as busy
    as in the run), median of 20 passes (a machine whose speed changes from one half second to
    the next needs the profile to last about as long as the run it predicts), and
    ``measure_comm`` measures messages between 2 ranks (``pipesim.profiling.profiler``). Raises
    ValueError (CostFileError) for an unusable file.
    """
    if costs_path:
        from pipesim.layercosts import load_layer_costs
        return predict(cfg, load_layer_costs(costs_path))
    from pipesim.profiling.profiler import measure_comm, profile_model
    processes = max(1, min(cfg.grid.world, os.cpu_count() or 1))
    layer_costs = profile_model(cfg, repeats=20, warmup=2, processes=processes)
    if cfg.schedule.ranks == 1 or len(layer_costs) == 1:
        return predict(cfg, layer_costs)
    largest = int(max(c.activation_bytes for c in layer_costs.layers[:-1]))
    return predict(cfg, layer_costs, *measure_comm(largest))


def prediction_json(report: dict[str, Any]) -> dict[str, Any]:
    """The fields ``pipesim run --predict --json`` adds to its object."""
    keys = ("predicted_step_seconds", "measured_step_seconds", "prediction_error",
            "predicted_pipeline_seconds", "measured_pipeline_seconds")
    return {k: report[k] for k in keys} | {"prediction_per_rank": report["per_rank"]}


def prediction_line(report: dict[str, Any]) -> str:
    """One line for the text report."""
    error = report["prediction_error"]
    return (f"Predicted step: {report['predicted_step_seconds'] * 1e3:.2f} ms; measured "
            f"{report['measured_step_seconds'] * 1e3:.2f} ms (median of steps "
            f"{report['steps_used'][0]}-{report['steps_used'][-1]}); error "
            + ("n/a" if error is None else f"{error:+.1%}")
            + f" (the pipeline alone, without the optimizer: predicted "
              f"{report['predicted_pipeline_seconds'] * 1e3:.2f} ms, measured "
              f"{report['measured_pipeline_seconds'] * 1e3:.2f} ms)")


def _rank_finish(timeline: Timeline) -> list[float]:
    """Each rank's last end, from the timeline's start (a rank with no events: 0)."""
    t0 = timeline.start
    return [max((e.end for e in row), default=t0) - t0 for row in timeline.by_rank()]


def step_span(timeline: Timeline) -> float:
    """The longest rank's span (its last end - its first start): the pipeline's part of a step.

    Not the makespan: in a run, a rank that finished the previous step early starts the next
    one early and only waits for its first input.
    """
    spans = [row[-1].end - row[0].start for row in timeline.by_rank() if row]
    return max(spans, default=0.0)


def step_times(measured: Sequence[Timeline]) -> list[float]:
    """Each measured step's time: from the previous step's end to this one's (``meta["end"]``,
    seconds on the run's clock); the first step from its own start. A step without that
    record (a timeline from elsewhere) counts its ``step_span``.
    """
    out = []
    for s, step in enumerate(measured):
        before = measured[s - 1].meta.get("end") if s else step.meta.get("start")
        end = step.meta.get("end")
        out.append(end - before if end is not None and before is not None
                   else step_span(step))
    return out


def predicted_step(predicted: Timeline) -> float:
    """The predicted step time (``predict``'s ``meta["step_seconds"]``; else the span)."""
    step: float = predicted.meta.get("step_seconds", step_span(predicted))
    return step


def _rank_busy(timeline: Timeline) -> list[float]:
    return [sum(e.duration for e in row) for row in timeline.by_rank()]


def _error(predicted: float, measured: float) -> float | None:
    """Signed relative error: > 0 when the prediction is slower than what was measured."""
    return (predicted - measured) / measured if measured > 0 else None


def used_steps(measured: Sequence[Timeline]) -> list[int]:
    """Steps that count: all of them, but step 0 (warm-up) when there are 3 or more."""
    return list(range(1 if len(measured) >= 3 else 0, len(measured)))


def prediction_report(predicted: Timeline, measured: Sequence[Timeline]) -> dict[str, Any]:
    """Predicted vs measured step time (``predicted_step``, ``step_times``), in total and per rank.

    ``measured_step_seconds`` is the median step time of the used steps (``used_steps``);
    ``prediction_error`` = (predicted - measured) / measured, signed: negative means the run
    was slower than predicted. The pipeline's part alone (``step_span``, no optimizer) is
    ``*_pipeline_seconds``. Per rank: finish time (last end from the step's start) and busy
    time (sum of action durations: compute, from inputs in hand to output made).
    """
    if not measured:
        raise ValueError("no measured steps to compare with")
    if any(t.ranks != predicted.ranks for t in measured):
        raise ValueError(f"the prediction has {predicted.ranks} ranks; a measured step has "
                         f"{next(t.ranks for t in measured if t.ranks != predicted.ranks)}")
    steps, times = used_steps(measured), step_times(measured)
    want = statistics.median(times[s] for s in steps)
    pred = predicted_step(predicted)
    p_finish, p_busy = _rank_finish(predicted), _rank_busy(predicted)
    m_finish = [statistics.median(_rank_finish(measured[s])[r] for s in steps)
                for r in range(predicted.ranks)]
    m_busy = [statistics.median(_rank_busy(measured[s])[r] for s in steps)
              for r in range(predicted.ranks)]
    return {
        "predicted_step_seconds": pred,
        "measured_step_seconds": want,
        "prediction_error": _error(pred, want),
        "steps_used": steps,
        "predicted_pipeline_seconds": step_span(predicted),
        "measured_pipeline_seconds": statistics.median(step_span(measured[s]) for s in steps),
        "measured_makespan_seconds": statistics.median(measured[s].makespan for s in steps),
        "per_step": [{"step": s, "measured_seconds": times[s], "error": _error(pred, times[s])}
                     for s in range(len(measured))],
        "per_rank": [{"rank": r, "predicted_finish": p_finish[r], "measured_finish": m_finish[r],
                      "finish_error": _error(p_finish[r], m_finish[r]),
                      "predicted_busy": p_busy[r], "measured_busy": m_busy[r],
                      "busy_error": _error(p_busy[r], m_busy[r])}
                     for r in range(predicted.ranks)],
    }


def median_step(measured: Sequence[Timeline]) -> Timeline:
    """The used step whose step time is the median (the one to draw)."""
    times = step_times(measured)
    steps = sorted(used_steps(measured), key=lambda s: times[s])
    return measured[steps[len(steps) // 2]]


def plot_prediction(predicted: Timeline, measured: Sequence[Timeline], path: str) -> None:
    """A PNG with the predicted step above the median measured step (same time axis unit)."""
    from pipesim.views.png import render_png  # matplotlib, imported only here
    report = prediction_report(predicted, measured)
    step = median_step(measured)
    error = report["prediction_error"]
    render_png([(f"{predicted.name} predicted", predicted),
                (f"{step.name} measured (median step"
                 + (f"; prediction {error:+.1%})" if error is not None else ")"), step)], path)


__all__ = [
    "median_step", "plot_prediction", "predict", "predict_run", "predicted_step",
    "prediction_json", "prediction_line", "prediction_report", "step_span", "step_times",
    "used_steps"
]
