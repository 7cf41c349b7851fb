"""``pipesim schedule``: print a generated schedule as text, CSV, a step grid or JSON."""

from __future__ import annotations

import argparse
from typing import Any

from pipesim.commands import (
    UserError,
    add_schedule_args,
    dump_json,
    schedule_from_args,
    write_atomic,
)
from pipesim.ir import Schedule
from pipesim.schedule_io import format_csv, format_text
from pipesim.schedules import SCHEDULES
from pipesim.validate import InvalidScheduleError, peak_in_rank_stashes, validate
from pipesim.views.grid import format_step_grid


def register(sub: Any) -> None:
    p = sub.add_parser("schedule", help="print a schedule (text, csv, grid or json)",
                       description="Generate a registered schedule and print it.")
    add_schedule_args(p)
    p.add_argument("--output-format", "--as", dest="output", default="grid",
                   choices=["text", "csv", "grid"], help="how to print it (default grid)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead")
    p.add_argument("-o", "--out", help="write to this file instead of stdout")
    p.add_argument("--list", action="store_true", help="list the registered schedules")
    p.set_defaults(func=run)


def schedule_json(args: argparse.Namespace) -> dict[str, Any]:
    sched = schedule_from_args(args)
    return {
        "schedule": sched.name, "ranks": sched.ranks, "stages": sched.stages,
        "microbatches": sched.microbatches, "stage_to_rank": list(sched.stage_to_rank),
        "actions": [[str(a) for a in row] for row in sched.actions],
        **({"pairs": [[str(f), str(b)] for f, b in sorted(sched.pairs)]} if sched.pairs else {}),
        "peak_activations": list(validate(sched).peak_activations),
        "peak_stash": list(peak_in_rank_stashes(sched)),
    }


def _grid(sched: Schedule) -> str:
    try:
        grid = format_step_grid(sched)
    except InvalidScheduleError as err:
        reason = err.report.errors[0].splitlines()[0]
        raise UserError(f"cannot draw {sched.name or 'the schedule'}, it is not valid: {reason} "
                        f"('pipesim validate' shows all)", code=1) from None
    return (f"{sched.name}: {sched.ranks} ranks, {sched.stages} stages, {sched.microbatches} "
            f"microbatches (one column per unit step)\n{grid}\n")


def run(args: argparse.Namespace) -> int:
    if args.list:
        width = max(map(len, SCHEDULES))
        text = "\n".join(f"{n:<{width}}  {s.summary}" for n, s in SCHEDULES.items()) + "\n"
    elif args.json:
        text = dump_json(schedule_json(args)) + "\n"
    else:
        sched = schedule_from_args(args)
        if args.output == "text":
            text = format_text(sched)
        elif args.output == "csv":
            text = format_csv(sched)
        else:
            text = _grid(sched)
    if args.out:
        write_atomic(args.out, text)
    else:
        print(text, end="")
    return 0


__all__ = ["register", "run", "schedule_json"]
