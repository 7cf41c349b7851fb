"""``pipesim simulate``: time a schedule under a cost model; print a summary and an ASCII chart.

    pipesim simulate 1f1b -p 4 -m 8
    pipesim simulate interleaved-1f1b -p 8 -m 32 -v 2 --cost F=1,B=2 --comm-latency 0.1
    pipesim simulate --file mine.txt --json
    pipesim simulate zbv -p 4 -m 8 --trace zbv.json --plot zbv.png
    pipesim simulate 1f1b -p 4 -m 8 --dp 8 --param-bytes 4e9 --unit s --cost F=0.05,B=0.1
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from dataclasses import replace
from typing import Any

from pipesim.commands import (
    UserError,
    add_schedule_args,
    dump_json,
    non_negative_float,
    schedule_from_args,
    write_atomic,
    wrote,
)
from pipesim.commands._costargs import add_cost_args, costs_from_args, describe
from pipesim.commands.plan import add_network_args, network_from_args
from pipesim.costs import CostModel
from pipesim.ir import Schedule
from pipesim.planner.dataparallel import DPResult, simulate_dp
from pipesim.simulate import DeadlockError
from pipesim.steady import steady_step
from pipesim.timeline import Metrics, Timeline, metrics
from pipesim.validate import validate
from pipesim.views.ascii import render_ascii
from pipesim.views.style import PEAK_NOTE, peak_text


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="time a schedule under a cost model (summary, chart, trace, plot)",
        description="Simulate a registered or hand-written schedule: each rank runs its "
                    "actions in order, each waits for its inputs and their messages.")
    add_schedule_args(p, dp=True)
    add_cost_args(p)
    dp = p.add_argument_group(
        "data parallel", "D replicas of the pipeline; each stage's gradients are averaged by a "
        "ring all-reduce after its last backward (pipesim.planner.dataparallel), in the cost unit")
    dp.add_argument("--param-bytes", type=non_negative_float, metavar="BYTES",
                    help="parameter (= gradient) bytes of one rank's share of the model; with v "
                         "stages per rank each stage has 1/v of it")
    dp.add_argument("--optimizer-time", type=non_negative_float, default=0.0, metavar="T",
                    help="the optimizer step after the last all-reduce (default 0)")
    add_network_args(dp)
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object instead")
    out.add_argument("--ascii", action="store_true", help="print only the ASCII chart")
    out.add_argument("--width", type=int, default=None, metavar="COLUMNS",
                     help="chart width (default: the terminal's, else 100)")
    out.add_argument("--trace", metavar="OUT.json",
                     help="write a Chrome trace (chrome://tracing, ui.perfetto.dev)")
    out.add_argument("--plot", metavar="OUT.png", help="write a PNG Gantt chart (matplotlib)")
    out.add_argument("--html", metavar="OUT.html", help="write an offline HTML page")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sched = schedule_from_args(args)
    if args.file:
        report = validate(sched)
        if not report.ok:
            print(f"invalid: {args.file}")
            for err in report.errors:
                print(f"  {err}")
            return 1
    costs = with_param_bytes(args, sched, costs_from_args(args, sched))
    try:
        result = simulate_dp(sched, costs, network_from_args(args, args.dp, args.optimizer_time))
    except DeadlockError as err:  # only a schedule that skipped validation gets here
        print(err)
        return 1
    timeline = result.timeline
    measured = metrics(timeline)
    steady = steady_step(sched, costs).step  # steps back to back, no optimizer barrier
    write_views(args, [(f"{sched.name or 'schedule'} (simulated)", timeline)])
    if args.json:
        data = simulate_json(sched, costs, measured, steady)
        if args.dp > 1:
            data |= {"dp": args.dp, "step_time": result.step_time,
                     "exposed_allreduce": result.exposed_allreduce,
                     "allreduce": result.to_dict()["per_rank"]}
        print(dump_json(data))
    elif args.ascii:
        print(render_ascii(timeline, chart_width(args)))
    else:
        print(summary(sched, costs, measured, steady))
        if args.dp > 1:
            print(dp_summary(result, costs.unit))
        print()
        print(render_ascii(timeline, chart_width(args)))
    return 0


def with_param_bytes(args: argparse.Namespace, sched: Schedule, costs: CostModel) -> CostModel:
    """--param-bytes spread over each rank's stages; --dp > 1 needs some parameter bytes."""
    if args.param_bytes is not None:
        share = args.param_bytes * sched.ranks / sched.stages
        costs = replace(costs, param_bytes=(share,) * sched.stages)
    if args.dp > 1 and not any(costs.param_bytes):
        raise UserError(f"--dp {args.dp} all-reduces gradients: give --param-bytes BYTES (one "
                        f"rank's share of the model's parameters)")
    return costs


def dp_summary(result: DPResult, unit: str) -> str:
    """Step = makespan + exposed all-reduce (+ optimizer); each rank's all-reduce."""
    dp = result.dp
    lines = [f"data parallel: {dp.replicas} replicas, step {result.step_time:g} {unit} = "
             f"makespan {result.makespan:g} + exposed all-reduce {result.exposed_allreduce:g}"
             + (f" + optimizer {dp.optimizer_time:g}" if dp.optimizer_time else ""), "",
             f"{'rank':>4}  {'compute end':>11}  {'all-reduce':>10}  {'ends':>10}  link"]
    for r, x in enumerate(result.per_rank):
        link = "intra-node" if x.intra_node else "inter-node"
        lines.append(f"{r:>4}  {x.compute_end:>11.4g}  {x.allreduce_busy:>10.4g}  "
                     f"{x.allreduce_end:>10.4g}  {link}")
    return "\n".join(lines)


def chart_width(args: argparse.Namespace) -> int:
    if args.width is not None:
        if args.width < 40:
            raise UserError(f"--width must be at least 40, got {args.width}")
        return int(args.width)
    if sys.stdout.isatty():
        return max(60, min(shutil.get_terminal_size((100, 24)).columns, 200))
    return 100


def write_views(args: argparse.Namespace, timelines: list[tuple[str, Timeline]]) -> None:
    """--trace, --plot and --html; each file written whole or not at all, then named."""
    _write_views(args, timelines)
    for flag in ("html", "trace", "plot"):
        if getattr(args, flag, None):
            wrote(getattr(args, flag), flag)


def _write_views(args: argparse.Namespace, timelines: list[tuple[str, Timeline]]) -> None:
    if getattr(args, "html", None):
        from pipesim.views.html import HtmlSection, render_html
        write_atomic(args.html, render_html([HtmlSection(t, tl) for t, tl in timelines],
                                            title=f"pipesim simulate: {timelines[0][0]}"))
    if args.trace:
        from pipesim.views.chrome_trace import render_chrome_trace
        write_atomic(args.trace, json.dumps(render_chrome_trace(timelines[0][1])))
    if args.plot:
        from pipesim.views.png import PlotUnavailableError, png_bytes
        try:
            write_atomic(args.plot, png_bytes(timelines))
        except PlotUnavailableError as err:
            raise UserError(str(err)) from None


def simulate_json(sched: Schedule, costs: CostModel, measured: Metrics,
                  steady: float | None = None) -> dict[str, Any]:
    data = measured.to_dict()
    return {
        "schedule": sched.name, "ranks": sched.ranks, "stages": sched.stages,
        "microbatches": sched.microbatches, "makespan": data["makespan"],
        **({} if steady is None else {"steady_step": steady}),
        "bubble_fraction": data["bubble_fraction"], "per_rank": data["per_rank"],
        "costs": costs.to_dict(),
    }


def summary(sched: Schedule, costs: CostModel, measured: Metrics,
            steady: float | None = None) -> str:
    """The short report: what was simulated, makespan, bubble, and a per-rank table.

    ``steady``: the step time when steps run back to back (``steady.steady_step``)."""
    unit = costs.unit
    lines = [
        f"{sched.name or 'schedule'}: {sched.ranks} ranks, {sched.stages} stages, "
        f"{sched.microbatches} microbatches, {sched.num_actions} actions",
        f"costs: {describe(costs)}",
        f"makespan {measured.makespan:g} {unit}, bubble {measured.bubble_fraction:.1%}"
        + ("" if steady is None else f"; steady step {steady:g} {unit} (steps back to back)"),
        "",
        f"{'rank':>4}  {'busy':>10}  {'idle':>10}  {'bubble':>7}  {'peak stash':>10}",
    ]
    for r, m in enumerate(measured.per_rank):
        lines.append(f"{r:>4}  {m.busy:>10.4g}  {m.idle:>10.4g}  {m.bubble_fraction:>7.1%}  "
                     f"{peak_text(m):>10}")
    lines.append(PEAK_NOTE)
    return "\n".join(lines)


__all__ = [
    "chart_width", "dp_summary", "register", "run", "simulate_json", "summary",
    "with_param_bytes", "write_views"
]
