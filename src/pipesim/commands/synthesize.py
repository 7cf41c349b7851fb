"""``pipesim synthesize``: search a schedule for your stage costs and memory; write, show, compare.

    pipesim synthesize -p 4 -m 12 --costs examples/costs/uneven-4.json --max-stashed 4
    pipesim synthesize -p 8 -m 32 --cost F=1,I=1,W=1 --max-stashed 16 -o synth.csv
    pipesim synthesize -p 4 -m 8 --placement v --objective makespan --json

The result is an ordinary schedule: ``pipesim validate``, ``simulate --file`` and ``run --file``
take the file ``-o`` writes (``.csv``: torch.distributed.pipelining's layout; else pipesim text).
"""

from __future__ import annotations

import argparse
from typing import Any

from pipesim.commands import UserError, dump_json, positive_float, positive_int, write_atomic
from pipesim.commands._costargs import add_cost_args, costs_from_args, describe
from pipesim.commands._vocab import bytes_arg
from pipesim.commands.simulate import chart_width, write_views
from pipesim.costs import CostModel
from pipesim.ir import Schedule
from pipesim.planner.synthesize import OBJECTIVES, PLACEMENTS, Synthesis, SynthesisError, synthesis
from pipesim.schedule_io import format_csv, format_text
from pipesim.schedules import same_placement
from pipesim.schedules._common import v_placement
from pipesim.simulate import simulate
from pipesim.steady import steady_step
from pipesim.validate import peak_activations
from pipesim.views.ascii import render_ascii


def register(sub: Any) -> None:
    p = sub.add_parser(
        "synthesize", help="search the best schedule for given stage costs and memory",
        description="Build a schedule for your per-stage F/I/W costs and memory cap by search "
                    "(list scheduling under many priorities, then a hill climb), never worse "
                    "than a registered schedule of the same placement that fits.")
    p.add_argument("-p", "--ranks", type=positive_int, required=True, help="pipeline ranks")
    p.add_argument("-m", "--microbatches", type=positive_int, required=True,
                   help="microbatches per step")
    add_cost_args(p)
    p.add_argument("--max-stashed", type=positive_int, metavar="N",
                   help="most microbatches' activations stashed on a rank at once, as "
                        "'pipesim validate' counts them (1F1B's peak is p; default none)")
    p.add_argument("--memory-limit", metavar="BYTES", type=bytes_arg,
                   help="most stashed activation bytes on a rank (2GB, 512MiB); each F stashes "
                        "its stage's activation_bytes")
    p.add_argument("--objective", choices=OBJECTIVES, default="step",
                   help="step: per-step time with steps back to back (default); makespan: one "
                        "step from a standing start")
    p.add_argument("--placement", choices=PLACEMENTS, default="one",
                   help="one stage per rank (default) or two in a V (ZB-V's placement)")
    p.add_argument("--time-limit", type=positive_float, default=10.0, metavar="S",
                   help="stop the search after this many seconds with the best found (default 10)")
    out = p.add_argument_group("output")
    out.add_argument("-o", "--output", metavar="OUT.txt|OUT.csv",
                     help="write the schedule (.csv: torch's layout; else pipesim text)")
    out.add_argument("--json", action="store_true", help="print one JSON object")
    out.add_argument("--ascii", action="store_true", help="print only the ASCII chart")
    out.add_argument("--width", type=int, default=None, metavar="COLUMNS", help="chart width")
    out.add_argument("--html", metavar="OUT.html", help="write an offline HTML page")
    out.add_argument("--plot", metavar="OUT.png", help="write a PNG Gantt chart (matplotlib)")
    out.add_argument("--trace", metavar="OUT.json", help="write a Chrome trace")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    placement = tuple(range(args.ranks)) if args.placement == "one" else v_placement(args.ranks)
    shape = Schedule(args.ranks, len(placement), args.microbatches, placement,
                     tuple(() for _ in range(args.ranks)))
    costs = costs_from_args(args, shape)
    try:
        found = synthesis(args.ranks, args.microbatches, costs, max_stashed=args.max_stashed,
                          memory_limit=args.memory_limit, objective=args.objective,
                          placement=args.placement, time_limit=args.time_limit)
    except SynthesisError as err:
        raise UserError(str(err)) from None
    sched = found.schedule
    if args.output:
        text = format_csv(sched) if args.output.endswith(".csv") else format_text(sched)
        write_atomic(args.output, text)
    timeline = simulate(sched, costs)
    others = registered(sched, costs)
    write_views(args, [(f"{sched.name} (synthesized)", timeline),
                       *((f"{name} (registered)", simulate(s, costs)) for name, s, *_ in others)])
    if args.json:
        print(dump_json(found.to_dict() | {
            "ranks": sched.ranks, "stages": sched.stages, "microbatches": sched.microbatches,
            "stage_to_rank": list(sched.stage_to_rank), "output": args.output,
            "schedule": [" ".join(map(str, row)) for row in sched.actions],
            "registered": {name: {"steady_step": step, "makespan": span, "peak": peak}
                           for name, _, step, span, peak in others}}))
    elif args.ascii:
        print(render_ascii(timeline, chart_width(args)))
    else:
        print(summary(found, costs, others, args.output))
        print()
        print(render_ascii(timeline, chart_width(args)))
    return 0


Row = tuple[str, Schedule, float, float, int]  # name, schedule, steady step, makespan, peak


def registered(sched: Schedule, costs: CostModel) -> list[Row]:
    """The registered training schedules of the same placement, measured on the same costs."""
    return [(name, other, steady_step(other, costs).step, simulate(other, costs).makespan,
             max(peak_activations(other)))
            for name, other in same_placement(sched.ranks, sched.microbatches,
                                              sched.stage_to_rank)]


def summary(found: Synthesis, costs: CostModel, others: list[Row], output: str | None) -> str:
    """What was found, its bounds, and the registered schedules beside it."""
    s, b, unit = found.schedule, found.bounds, costs.unit
    memory = (f"; memory bound {b.memory:g} (gap {round(found.value / b.memory - 1, 12) + 0.0:.1%})"
              if b.memory is not None and found.objective == "step" else "")
    lines = [
        f"synthesized: {s.ranks} ranks, {s.stages} stages, {s.microbatches} microbatches "
        f"({found.origin}; {found.evaluations} candidates measured)",
        f"costs: {describe(costs)}",
        f"objective {found.objective}: {found.value:g} {unit}; lower bound {b.work:g} "
        f"(gap {found.gap:.1%}){memory}",
        f"steady step {found.steady_step:g}, makespan {found.makespan:g}, peak stashed per rank "
        f"{','.join(map(str, found.peak_activations))}",
        f"written to {output}" if output else "write it with -o OUT.txt or -o OUT.csv",
        "", f"{'schedule':<12} {'steady step':>11} {'makespan':>9} {'peak':>5}",
        f"{'synthesized':<12} {found.steady_step:>11.4g} {found.makespan:>9.4g} "
        f"{max(found.peak_activations):>5}"]
    lines += [f"{name:<12} {step:>11.4g} {span:>9.4g} {peak:>5}"
              for name, _, step, span, peak in others]
    return "\n".join(lines)


__all__ = ["register", "registered", "run", "summary"]
