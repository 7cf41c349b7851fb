"""``pipesim validate FILE``: is a schedule runnable? Exit 1 if not, 2 if unreadable."""

from __future__ import annotations

import argparse
from typing import Any

from pipesim.commands import dump_json, load_schedule
from pipesim.validate import peak_in_rank_stashes, validate


def register(sub: Any) -> None:
    p = sub.add_parser("validate", help="check a schedule file (text or CSV)",
                       description="Check that a schedule file can run without deadlock.")
    p.add_argument("file", metavar="FILE", help="schedule as text (one rank per line) or CSV")
    p.add_argument("--format", dest="file_format", choices=["auto", "text", "csv"],
                   default="auto", help="file format (default: detect)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    sched = load_schedule(args.file, args.file_format)
    report = validate(sched)
    if args.json:
        print(dump_json({"valid": report.ok, "ranks": sched.ranks, "stages": sched.stages,
                         "microbatches": sched.microbatches,
                         "stage_to_rank": list(sched.stage_to_rank),
                         "errors": list(report.errors), "warnings": list(report.warnings),
                         "peak_activations": list(report.peak_activations),
                         "peak_stash": list(peak_in_rank_stashes(sched))}))
        return 0 if report.ok else 1
    if not report.ok:
        print(f"invalid: {args.file}")
        for err in report.errors:
            print(f"  {err}")
        return 1
    print(f"valid: {sched.ranks} ranks, {sched.stages} stages, {sched.microbatches} "
          f"microbatches, {sched.num_actions} actions")
    print("peak stash per rank: " + " ".join(f"{x:.3g}" for x in peak_in_rank_stashes(sched))
          + " rank stashes (stashes of one stage: "
          + " ".join(str(n) for n in report.peak_activations) + ")")
    for warning in report.warnings:
        print(f"warning: {warning}")
    return 0


__all__ = ["register", "run"]
