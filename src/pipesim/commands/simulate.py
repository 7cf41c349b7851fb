"""``pipesim simulate``: time a schedule under a cost model; print a summary and an ASCII chart.

    pipesim simulate 1f1b -p 4 -m 8
    pipesim simulate interleaved-1f1b -p 8 -m 32 -v 2 --cost F=1,B=2 --comm-latency 0.1
    pipesim simulate --file mine.txt --json
    pipesim simulate zbv -p 4 -m 8 --trace zbv.json --plot zbv.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from typing import Any

from pipesim.commands import (
    UserError,
    add_schedule_args,
    dump_json,
    schedule_from_args,
    write_atomic,
)
from pipesim.commands._costargs import add_cost_args, costs_from_args, describe
from pipesim.costs import CostModel
from pipesim.ir import Schedule
from pipesim.simulate import DeadlockError, simulate
from pipesim.timeline import Metrics, Timeline, metrics
from pipesim.validate import validate
from pipesim.views.ascii import render_ascii


def register(sub: Any) -> None:
    p = sub.add_parser(
        "simulate", help="time a schedule under a cost model (summary, chart, trace, plot)",
        description="Simulate a registered or hand-written schedule: each rank runs its "
                    "actions in order, each waits for its inputs and their messages.")
    add_schedule_args(p)
    add_cost_args(p)
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
    costs = costs_from_args(args, sched)
    try:
        timeline = simulate(sched, costs)
    except DeadlockError as err:  # only a schedule that skipped validation gets here
        print(err)
        return 1
    measured = metrics(timeline, stash_bytes(costs))
    write_views(args, [(f"{sched.name or 'schedule'} (simulated)", timeline)])
    if args.json:
        print(dump_json(simulate_json(sched, costs, measured)))
    elif args.ascii:
        print(render_ascii(timeline, chart_width(args)))
    else:
        print(summary(sched, costs, measured))
        print()
        print(render_ascii(timeline, chart_width(args)))
    return 0


def stash_bytes(costs: CostModel) -> tuple[float, ...] | None:
    """Bytes an F stashes per stage, when the cost model knows activation sizes."""
    return costs.activation_bytes if any(costs.activation_bytes) else None


def chart_width(args: argparse.Namespace) -> int:
    if args.width is not None:
        if args.width < 40:
            raise UserError(f"--width must be at least 40, got {args.width}")
        return int(args.width)
    if sys.stdout.isatty():
        return max(60, min(shutil.get_terminal_size((100, 24)).columns, 200))
    return 100


def write_views(args: argparse.Namespace, timelines: list[tuple[str, Timeline]]) -> None:
    """--trace, --plot and --html; each file written whole or not at all."""
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


def simulate_json(sched: Schedule, costs: CostModel, measured: Metrics) -> dict[str, Any]:
    data = measured.to_dict()
    return {
        "schedule": sched.name, "ranks": sched.ranks, "stages": sched.stages,
        "microbatches": sched.microbatches, "makespan": data["makespan"],
        "bubble_fraction": data["bubble_fraction"], "per_rank": data["per_rank"],
        "costs": costs.to_dict(),
    }


def summary(sched: Schedule, costs: CostModel, measured: Metrics) -> str:
    """The short report: what was simulated, makespan, bubble, and a per-rank table."""
    unit = costs.unit
    lines = [
        f"{sched.name or 'schedule'}: {sched.ranks} ranks, {sched.stages} stages, "
        f"{sched.microbatches} microbatches, {sched.num_actions} actions",
        f"costs: {describe(costs)}",
        f"makespan {measured.makespan:g} {unit}, bubble {measured.bubble_fraction:.1%}",
        "",
        f"{'rank':>4}  {'busy':>10}  {'idle':>10}  {'bubble':>7}  {'peak act.':>9}",
    ]
    for r, m in enumerate(measured.per_rank):
        peak = f"{m.peak_activations:>9}"
        if m.peak_activation_bytes is not None:
            peak += f" ({_bytes(m.peak_activation_bytes)})"
        lines.append(f"{r:>4}  {m.busy:>10.4g}  {m.idle:>10.4g}  {m.bubble_fraction:>7.1%}  "
                     f"{peak}")
    return "\n".join(lines)


def _bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.4g} {unit}"
        n /= 1024
    return f"{n:.4g} GB"
