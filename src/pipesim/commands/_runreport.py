"""What ``pipesim run`` prints and writes: per-action lines, progress, summary, JSON, views."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from dataclasses import replace
from typing import Any

from pipesim.commands import dump_json, write_atomic, wrote
from pipesim.ir import Action, Op, Schedule
from pipesim.timeline import Timeline, metrics

# ----------------------------------------------------------------------------- per-action lines


def _line(rank: int, a: Action, d: dict[str, Any], sched: Schedule) -> str:
    s, mb = a.stage, a.microbatch
    head = f"[Stage {s}] Microbatch {mb}:"
    if a.op is Op.F and sched.forward_only:
        lines = []
        if "created" in d:
            lines.append(f"{head} Created input (shape: {list(d['created'])})")
        if "from" in d:
            lines.append(f"{head} Received from stage {s - 1}")
        if "output" in d:
            mean = float(d["output"][0].float().mean())
            lines.append(f"{head} Completed! Output mean: {mean:.4f}")
        elif "to" in d:
            lines.append(f"{head} Sent to stage {s + 1}")
        return "\n".join(lines)
    name = {Op.F: "Forward", Op.B: "Backward", Op.I: "Backward (input)",
            Op.W: "Backward (weights)"}[a.op]
    parts = []
    if "from" in d:
        parts.append(f"received from stage {s - 1 if a.op is Op.F else s + 1}")
    if "to" in d:
        parts.append(f"sent to stage {s + 1 if a.op is Op.F else s - 1}")
    if "loss" in d:
        parts.append(f"loss {float(d['loss']):.4f}")
    return f"{head} {name}" + (f" ({', '.join(parts)})" if parts else "")


class LineHook:
    """Prints each action's lines as one write, so ranks never interleave inside a line.

    With more than one step, each line starts with its step (``[step 3/30]``): a rank runs its
    actions in order every step, so the step is how many times it has run its whole list.
    """

    def __init__(self, sched: Schedule, steps: int = 1, first_step: int = 0) -> None:
        self.sched, self.steps, self.first_step = sched, steps, first_step
        self._done: dict[int, int] = {}  # actions run so far, per rank (each rank's own copy)

    def __call__(self, rank: int, action: Action, detail: dict[str, Any]) -> None:
        done = self._done.get(rank, 0)
        self._done[rank] = done + 1
        text = _line(rank, action, detail, self.sched)
        if text and self.steps > 1:
            step = self.first_step + done // max(1, len(self.sched.actions[rank])) + 1
            text = "\n".join(f"[step {step}/{self.steps}] {line}" for line in text.split("\n"))
        if text:
            os.write(sys.stdout.fileno(), (text + "\n").encode())


class Progress:
    """One line per step (a redrawn line on a terminal): step, loss, throughput."""

    def __init__(self, samples_per_step: int, training: bool) -> None:
        self.samples = samples_per_step
        self.training = training

    def __call__(self, step: int, steps: int, loss: float, seconds: float) -> None:
        rate = self.samples / seconds if seconds > 0 else 0.0
        loss_text = f"  loss {loss:.4f}" if self.training else ""
        text = f"step {step + 1}/{steps}{loss_text}  {rate:,.0f} samples/s"
        if sys.stderr.isatty():
            end = "\n" if step + 1 == steps else ""
            os.write(sys.stderr.fileno(), f"\r{text}{end}".encode())
        else:
            os.write(sys.stderr.fileno(), f"{text}\n".encode())


def print_header(cfg: Any) -> None:
    s = cfg.schedule
    print("=" * 60)
    print(f" PIPELINE {'PARALLELISM SIMULATION' if s.forward_only else 'TRAINING'}"
          f" ({s.name}, {cfg.backend})")
    print("=" * 60)
    replicas = f" x {cfg.dp} data-parallel replicas" if cfg.dp > 1 else ""
    print(f"Number of stages: {s.stages} on {s.ranks} ranks{replicas}")
    print(f"Batch size: {cfg.batch_size}")
    print(f"Hidden size: {cfg.hidden_size}")
    print(f"Microbatches: {s.microbatches}")
    print("=" * 60 + "\n", flush=True)


def result_json(cfg: Any, result: Any) -> dict[str, Any]:
    sched = cfg.schedule
    timeline = Timeline.from_dict(result.timeline)
    m = metrics(timeline)
    median = statistics.median(result.step_seconds)
    out: dict[str, Any] = {
        "schedule": sched.name, "ranks": sched.ranks, "stages": sched.stages,
        "microbatches": sched.microbatches, "batch_size": cfg.batch_size, "dp": cfg.dp,
        "loss": result.losses if not sched.forward_only else [],
        "step_seconds": result.step_seconds,
        "samples_per_second": cfg.global_microbatches * cfg.batch_size / median
        if median else 0.0,
        **m.to_dict(),
    }
    if result.verify_max_abs_diff is not None:
        out["verify_max_abs_diff"] = result.verify_max_abs_diff
    return out


def _tolerance(cfg: Any) -> float:
    return 1e-9 if cfg.dtype == "float64" else 1e-4


def report(args: argparse.Namespace, cfg: Any, result: Any, wall: float,
           predicted: Timeline | None = None, drift: float | None = None) -> int:
    data = result_json(cfg, result)
    timeline = Timeline.from_dict(result.timeline)
    prediction = None
    if predicted is not None:  # pipesim run --predict: prediction, replay, drift
        from pipesim.predict import prediction_json, prediction_lines, prediction_report, replay
        # the profile's stash sizes are this run's too: its memory lanes read in bytes
        timeline = replace(timeline, stash_bytes=predicted.stash_bytes)
        measured = [replace(Timeline.from_dict(t), stash_bytes=predicted.stash_bytes)
                    for t in result.timelines]
        replayed = replay(cfg.schedule, predicted, measured)
        comparison = prediction_report(predicted, measured, replayed, drift)
        data.update(prediction_json(comparison))
        prediction = (predicted, measured, "\n".join(prediction_lines(comparison)))
    _write_views(args, timeline, data, prediction)
    ok = result.verify_max_abs_diff is None or result.verify_max_abs_diff <= _tolerance(cfg)
    if args.json:
        print(json.dumps(data))
        return 0 if ok else 1
    sched = cfg.schedule
    print("\n" + "=" * 60)
    print(f"PIPELINE {'SIMULATION' if sched.forward_only else 'RUN'} COMPLETE")
    print("=" * 60)
    print(f"Stages: {sched.stages} on {sched.ranks} ranks ({sched.name}, {cfg.backend})")
    print(f"Microbatches: {sched.microbatches}")
    print(f"Batch size per microbatch: {cfg.batch_size}")
    print(f"Hidden size: {cfg.hidden_size}")
    median = statistics.median(result.step_seconds)
    print(f"Step time (median of {len(result.step_seconds)}): {median * 1e3:.2f} ms, "
          f"throughput {data['samples_per_second']:,.0f} samples/s")
    if prediction is not None:
        print(prediction[2])
    print(f"Measured bubble fraction: {data['bubble_fraction']:.1%}")
    for r, pr in enumerate(data["per_rank"]):
        stages = ",".join(str(s) for s in sched.stages_of(r))
        print(f"  rank {r} (stage {stages}): busy {pr['busy'] * 1e3:8.2f} ms, "
              f"bubble {pr['bubble_fraction']:6.1%}")
    if data["loss"]:
        print("Loss per step: " + ", ".join(f"{x:.4f}" for x in data["loss"]))
    if result.verify_max_abs_diff is not None:
        verdict = "OK" if ok else "MISMATCH"
        print(f"Verify: largest |pipelined - single-process| weight difference "
              f"{result.verify_max_abs_diff:.3g} ({verdict}, tolerance {_tolerance(cfg):g})")
    print(f"Run time (ranks started to results in): {wall:.2f} s")
    print("=" * 60)
    return 0 if ok else 1


def _write_views(args: argparse.Namespace, timeline: Timeline, data: dict[str, Any],
                 prediction: tuple[Timeline, list[Timeline], str] | None = None) -> None:
    """--html, --timeline, --trace and --plot; each file named on stderr once written."""
    _write_files(args, timeline, data, prediction)
    for flag in ("html", "timeline", "trace", "plot"):
        if getattr(args, flag, None):
            wrote(getattr(args, flag), flag)


def _write_files(args: argparse.Namespace, timeline: Timeline, data: dict[str, Any],
                 prediction: tuple[Timeline, list[Timeline], str] | None = None) -> None:
    if args.html:
        from pipesim.views.html import HtmlSection, render_html
        facts: dict[str, str | float] = {
            "samples/s": f"{data['samples_per_second']:,.0f}",
            "step time (median)": f"{statistics.median(data['step_seconds']) * 1e3:.2f} ms",
        }
        if data["loss"]:
            facts["loss per step"] = " ".join(f"{x:.4f}" for x in data["loss"])
        sections = [HtmlSection(f"{timeline.name} measured (last step)", timeline, facts)]
        if prediction is not None:  # --predict: the simulated step above the measured one
            sections.insert(0, HtmlSection(f"{timeline.name} predicted", prediction[0],
                                           {"prediction": prediction[2]}))
        write_atomic(args.html, render_html(sections, title=f"pipesim run: {timeline.name}"))
    if args.timeline:
        write_atomic(args.timeline, dump_json(timeline.to_dict()))
    if args.trace:
        from pipesim.views.chrome_trace import render_chrome_trace
        trace = render_chrome_trace(timeline)
        write_atomic(args.trace, trace if isinstance(trace, str) else json.dumps(trace))
    if args.plot and prediction is not None:  # predicted above measured
        _plot_prediction(prediction[0], prediction[1], args.plot)
    elif args.plot:
        from pipesim.views.png import render_png
        render_png([(f"{timeline.name} (measured)", timeline)], args.plot)


def _plot_prediction(predicted: Timeline, measured: list[Timeline], path: str) -> None:
    """A PNG with the predicted step above the median measured step (same time axis unit)."""
    from pipesim.predict import median_step, prediction_report
    from pipesim.views.png import render_png  # matplotlib, imported only here
    error = prediction_report(predicted, measured)["prediction_error"]
    step = median_step(measured)
    render_png([(f"{predicted.name} predicted", predicted),
                (f"{step.name} measured (median step"
                 + (f"; prediction {error:+.1%})" if error is not None else ")"), step)], path)
