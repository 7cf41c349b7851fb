"""``pipesim compare``: every registered training schedule on one configuration, side by side.

    pipesim compare -p 4 -m 8
    pipesim compare -p 8 -m 32 -v 2 --cost F=1,I=1,W=1 --comm-latency 0.05 --plot cmp.png

Schedules that do not accept the configuration are listed as skipped with the reason; the
forward-only one is left out (it does not train). The best (least makespan) is marked.
Output writers are looked up in ``OUTPUTS`` (flag -> writer), so a new format such as
``--html`` is one function and one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pipesim.commands import UserError, dump_json, positive_int, write_atomic, wrote
from pipesim.commands._costargs import (
    StageCountError,
    add_cost_args,
    costs_from_args,
    describe_args,
)
from pipesim.commands._vocab import (
    VocabError,
    add_microbatches,
    add_ranks,
    resolve_microbatches,
    resolve_sizes,
    schedule_names,
)
from pipesim.costs import CostModel
from pipesim.schedules import SCHEDULES, ConfigError, get_schedule
from pipesim.simulate import simulate
from pipesim.timeline import Metrics, RankMetrics, Timeline, metrics
from pipesim.views.style import PEAK_NOTE, peak_text


@dataclass(frozen=True)
class Entry:
    """One schedule's result."""

    name: str
    stages: int
    costs: CostModel
    timeline: Timeline
    metrics: Metrics

    @property
    def peak_activations(self) -> int:
        return max((r.peak_activations for r in self.metrics.per_rank), default=0)

    @property
    def peak(self) -> RankMetrics:
        return self.metrics.peak


@dataclass(frozen=True)
class Comparison:
    ranks: int
    microbatches: int
    virtual_stages: int | None
    entries: tuple[Entry, ...]
    skipped: tuple[tuple[str, str], ...] = field(default=())  # (name, reason)
    costs_note: str = ""  # what the cost flags said, for the header

    @property
    def best(self) -> Entry | None:
        return min(self.entries, key=lambda e: e.metrics.makespan, default=None)


def register(sub: Any) -> None:
    p = sub.add_parser("compare", help="simulate every schedule on one configuration",
                       description="Simulate every registered training schedule for the same "
                                   "ranks, microbatches and costs, and rank them.")
    p.add_argument("names", nargs="*", metavar="NAME", type=str.lower,
                   help="compare only these schedules (default every training schedule)")
    p.add_argument("--schedule", "--schedules", dest="schedules", metavar="A,B",
                   type=schedule_names, action="append", default=[],
                   help="the same as NAME: schedules to compare, comma-separated")
    add_ranks(p, dp=False)
    add_microbatches(p)
    p.add_argument("-v", "--virtual-stages", type=positive_int, default=None,
                   help="stages per rank for the schedules that take any (default 2)")
    add_cost_args(p)
    out = p.add_argument_group("output")
    out.add_argument("--json", action="store_true", help="print one JSON object instead")
    for flag, (metavar, text, _) in OUTPUTS.items():
        out.add_argument(f"--{flag}", metavar=metavar, help=text)
    p.set_defaults(func=run)


def _selected(args: argparse.Namespace) -> list[str]:
    """NAME... and --schedules, each a registered name; default every schedule."""
    names = list(args.names) + [n for group in args.schedules for n in group]
    unknown = [n for n in names if n not in SCHEDULES]
    if unknown:
        raise UserError(f"unknown schedule {unknown[0]!r}; valid: {', '.join(SCHEDULES)}")
    return list(dict.fromkeys(names)) or list(SCHEDULES)


def compare(args: argparse.Namespace) -> Comparison:
    """Simulate each schedule that accepts the configuration; the API behind the command."""
    try:
        args.ranks = resolve_sizes(args.ranks, None, args.world_size).ranks
    except VocabError as err:
        raise UserError(str(err)) from None
    args.microbatches = resolve_microbatches(args)
    entries, skipped = [], []
    for name in _selected(args):
        spec = SCHEDULES[name]
        if not spec.training:
            skipped.append((name, "forward only (inference), not a training step"))
            continue
        v = args.virtual_stages if spec.virtual == "any" else None
        try:
            sched = get_schedule(name, args.ranks, args.microbatches, v)
        except ConfigError as err:
            skipped.append((name, str(err)))
            continue
        try:
            costs = costs_from_args(args, sched, raise_mismatch=True)
        except StageCountError as err:  # a per-stage file made for another stage count
            skipped.append((name, str(err)))
            continue
        tl = simulate(sched, costs)
        entries.append(Entry(name, sched.stages, costs, tl, metrics(tl)))
    if not entries:
        raise UserError(f"no schedule accepts {args.ranks} ranks and {args.microbatches} "
                        "microbatches: " + "; ".join(f"{n}: {r}" for n, r in skipped))
    return Comparison(args.ranks, args.microbatches, args.virtual_stages, tuple(entries),
                      tuple(skipped), describe_args(args))


def run(args: argparse.Namespace) -> int:
    result = compare(args)
    for flag, (_, _, writer) in OUTPUTS.items():
        path = getattr(args, flag.replace("-", "_"))
        if path:
            write_atomic(path, writer(result))
            wrote(path, flag)
    if args.json:
        print(dump_json(compare_json(result)))
    else:
        print(format_table(result))
    return 0


def format_table(result: Comparison) -> str:
    first = result.entries[0].costs
    lines = [f"compare: {result.ranks} ranks, {result.microbatches} microbatches",
             result.costs_note, ""]
    width = max(len(e.name) for e in result.entries)
    lines.append(f"  {'schedule':<{width}}  {'stages':>6}  {'makespan':>10}  {'bubble':>7}  "
                 f"{'peak stash':>10}")
    best = result.best
    for e in sorted(result.entries, key=lambda e: e.metrics.makespan):
        mark = "*" if best is not None and e.metrics.makespan == best.metrics.makespan else " "
        lines.append(f"{mark} {e.name:<{width}}  {e.stages:>6}  {e.metrics.makespan:>10.4g}  "
                     f"{e.metrics.bubble_fraction:>7.1%}  {peak_text(e.peak):>10}")
    lines.append("")
    lines.append(f"* least makespan ({first.unit})")
    lines.append(PEAK_NOTE)
    for name, reason in result.skipped:
        lines.append(f"skipped {name}: {reason}")
    return "\n".join(lines)


def compare_json(result: Comparison) -> dict[str, Any]:
    best = result.best
    return {
        "ranks": result.ranks, "microbatches": result.microbatches,
        "virtual_stages": result.virtual_stages,
        "best": best.name if best else None,
        "schedules": [
            {"schedule": e.name, "stages": e.stages, "makespan": e.metrics.makespan,
             "bubble_fraction": e.metrics.bubble_fraction,
             "peak_activations": e.peak_activations, "peak_stash": e.peak.peak_stash,
             **({"peak_activation_bytes": e.peak.peak_activation_bytes}
                if e.peak.peak_activation_bytes is not None else {}),
             "costs": e.costs.to_dict()}
            for e in result.entries],
        "skipped": [{"schedule": n, "reason": r} for n, r in result.skipped],
    }


def _plot(result: Comparison) -> bytes:
    from pipesim.views.png import PlotUnavailableError, render_bars_png
    rows = [(e.name, e.metrics.makespan, e.metrics.bubble_fraction, peak_text(e.peak)
             + ("" if e.peak.peak_activation_bytes is not None else " rank stashes"))
            for e in sorted(result.entries, key=lambda e: e.metrics.makespan)]
    try:
        return render_bars_png(rows, f"compare: {result.ranks} ranks, {result.microbatches} "
                                     f"microbatches", result.entries[0].costs.unit)
    except PlotUnavailableError as err:
        raise UserError(str(err)) from None


def _html(result: Comparison) -> str:
    from pipesim.views.html import HtmlSection, render_html
    sections = [HtmlSection(e.name, e.timeline) for e in
                sorted(result.entries, key=lambda e: e.metrics.makespan)]
    return render_html(sections, title=f"pipesim compare: {result.ranks} ranks, "
                       f"{result.microbatches} microbatches",
                       summary={"costs": result.costs_note} if result.costs_note else None)


# flag -> (metavar, help, writer of the file's content)
OUTPUTS: dict[str, tuple[str, str, Callable[[Comparison], str | bytes]]] = {
    "plot": ("OUT.png", "write a bar chart of makespans (matplotlib)", _plot),
    "html": ("OUT.html", "write an offline HTML page with every timeline", _html),
}


__all__ = [
    "OUTPUTS",
    "Comparison",
    "Entry",
    "compare",
    "compare_json",
    "format_table",
    "register",
    "run"
]
