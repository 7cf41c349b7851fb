"""``pipesim plan``: the fastest schedule, microbatch count and partition that fit in memory.

    pipesim plan --costs examples/costs/gpt-10b-48l.json --ranks 8 --batch 64 --memory-limit 80GB

Plans from a per-layer cost file alone (no model, no torch), so a cluster of hundreds of ranks
can be planned on a laptop. ``--model NAME`` (profile a torch model first) is reserved for the
runtime; both paths meet in ``plan_from_layer_costs``.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipesim.commands import UserError, dump_json, positive_int
from pipesim.layercosts import CostFileError, LayerCosts, load_layer_costs
from pipesim.partition import check_balance, parse_balance
from pipesim.plan import PARTITIONS, PlanError, PlanResult, format_bytes, parse_bytes, plan

_BALANCE_WIDTH = 28  # the table shortens longer balances; the command has them in full


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="search schedules x microbatches x partitions for the fastest step",
        description="Rank pipeline configurations by simulated step time from per-layer costs "
                    "(a file written by 'pipesim profile' or by hand; see pipesim.layercosts).")
    p.add_argument("--costs", metavar="FILE.json", help="per-layer cost file")
    p.add_argument("--model", metavar="NAME",
                   help="profile this model first instead of --costs (needs the runtime)")
    p.add_argument("-p", "-w", "--ranks", type=positive_int, required=True,
                   help="pipeline ranks (processes)")
    p.add_argument("--batch", type=positive_int, required=True,
                   help="global samples per step, split into microbatches")
    p.add_argument("--memory-limit", metavar="BYTES", type=_bytes_arg,
                   help="per-rank memory limit: 80GB, 512MiB or plain bytes (default none)")
    p.add_argument("--schedules", metavar="A,B", type=_names_arg,
                   help="schedules to try (default every training schedule)")
    p.add_argument("--microbatches", metavar="M,M", type=_ints_arg,
                   help="microbatch counts to try (default divisors of the batch up to 4 x ranks)")
    p.add_argument("--virtual", metavar="V,V", type=_ints_arg, default=[1, 2],
                   help="stages per rank to try (default 1,2)")
    p.add_argument("--partition", choices=PARTITIONS, default="auto",
                   help="how to split layers into stages: balanced by time, by parameters, "
                        "uniform counts, or auto = time and uniform (default)")
    p.add_argument("--balance", metavar="N,N", help="explicit layers per stage, e.g. 2,3,3,2")
    p.add_argument("--optimizer-factor", type=float, default=4.0,
                   help="memory per parameter byte: weights + grads + Adam moments (default 4)")
    p.add_argument("--top", type=positive_int, default=10, help="rows to print (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=run)


def _bytes_arg(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _ints_arg(text: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of "
                                         f"integers") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"{text!r}: every value must be >= 1")
    return values


def _names_arg(text: str) -> list[str]:
    return [x.strip() for x in text.split(",") if x.strip()]


def run(args: argparse.Namespace) -> int:
    result = plan_from_layer_costs(_layer_costs(args), args)
    if args.json:
        print(dump_json(result.to_dict()))
    else:
        print(format_plan(result, args.top), end="")
    return 0 if result.best else 1


def _layer_costs(args: argparse.Namespace) -> LayerCosts:
    """From --costs now; --model is the runtime's hook (profile, then the same planner)."""
    if args.costs and args.model:
        raise UserError("give --costs FILE.json or --model NAME, not both")
    if args.model:
        raise UserError("plan --model needs the runtime's profiler, which is not available "
                        "here; write costs with 'pipesim profile' and pass --costs FILE.json")
    if not args.costs:
        raise UserError("give --costs FILE.json (per-layer costs; see examples/costs/)")
    try:
        return load_layer_costs(args.costs)
    except CostFileError as err:
        raise UserError(str(err)) from None


def plan_from_layer_costs(layer_costs: LayerCosts, args: argparse.Namespace) -> PlanResult:
    """The one place the planner is called from the CLI, whatever produced the costs."""
    partition: str | list[int] = args.partition
    if args.balance and args.partition != "auto":
        raise UserError("give --partition or --balance, not both")
    if args.balance:
        try:
            partition = check_balance(parse_balance(args.balance), len(layer_costs))
        except ValueError as err:
            raise UserError(f"--balance: {err}") from None
    try:
        return plan(layer_costs, args.ranks, args.batch, args.memory_limit, args.schedules,
                    args.microbatches, args.virtual, partition, args.optimizer_factor)
    except PlanError as err:
        raise UserError(str(err)) from None


def format_plan(result: PlanResult, top: int = 10) -> str:
    """The ranked table, the best configuration's command, then the rejected."""
    meta = result.meta
    model = f"{meta['model']} " if meta.get("model") else ""
    limit = meta.get("memory_limit_bytes")
    lines = [f"plan: {model}({meta['layers']} layers) on {meta['ranks']} ranks, batch "
             f"{meta['batch']}, memory limit {format_bytes(limit) if limit else 'none'}",
             f"{_count(len(result.candidates), 'configuration')} fit, "
             f"{len(result.rejected)} over the memory limit, {len(result.skipped)} not "
             f"accepted by their schedule", ""]
    if result.candidates:
        lines += _table(result, top)
    best = result.best
    if best:
        c = best.config
        lines += ["", f"best: {c.schedule}, {c.microbatches} microbatches of "
                  f"{c.microbatch_size}, {c.virtual_stages} stage(s) per rank, "
                  f"{best.predicted_step_seconds:.3f} s per step", f"  {best.command}"]
    else:
        lines += ["no configuration fits; raise --memory-limit, add ranks or shrink the batch"]
    if result.rejected:
        lines += ["", "rejected (over the memory limit):"]
        lines += [f"  {r.config.schedule:<17} m={r.config.microbatches:<4} "
                  f"v={r.config.virtual_stages} {r.config.partition:<8} {r.reason}"
                  for r in result.rejected[:top]]
        if len(result.rejected) > top:
            lines.append(f"  ... and {len(result.rejected) - top} more (--json lists all)")
    return "\n".join(lines) + "\n"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _table(result: PlanResult, top: int) -> list[str]:
    header = (f"{'#':>3}  {'schedule':<17} {'m':>4} {'v':>2} {'mb':>4}  {'step (s)':>9}  "
              f"{'bubble':>6}  {'peak mem':>9}  {'partition':<9} balance")
    rows = [header]
    for i, c in enumerate(result.candidates[:top], start=1):
        cfg = c.config
        balance = ",".join(map(str, cfg.balance))
        if len(balance) > _BALANCE_WIDTH:
            balance = balance[:_BALANCE_WIDTH - 3] + "..."
        rows.append(f"{i:>3}  {cfg.schedule:<17} {cfg.microbatches:>4} {cfg.virtual_stages:>2} "
                    f"{cfg.microbatch_size:>4}  {c.predicted_step_seconds:>9.3f}  "
                    f"{c.bubble_fraction:>6.1%}  {format_bytes(max(c.peak_memory_bytes)):>9}  "
                    f"{cfg.partition:<9} {balance}")
    if len(result.candidates) > top:
        rows.append(f"     ... {len(result.candidates) - top} more (--top N, or --json)")
    return rows
