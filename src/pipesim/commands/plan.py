"""``pipesim plan``: the fastest schedule, microbatch count and partition that fit in memory.

    pipesim plan --costs examples/costs/gpt-10b-48l.json --ranks 8 --batch 64 --memory-limit 80GB
    pipesim plan --costs examples/costs/gpt-10b-48l.json --world-size 1024 --batch 4096 \
        --memory-limit 80GB          # every split into D replicas x P pipeline ranks

Plans from a per-layer cost file alone (no model, no torch), so a cluster of hundreds of ranks
can be planned on a laptop. ``--model NAME`` (profile a torch model first) is reserved for the
runtime; both paths meet in ``plan_from_layer_costs``.
"""

from __future__ import annotations

import argparse
from typing import Any

from pipesim.balance import check_balance
from pipesim.commands import UserError, dump_json, non_negative_float, positive_float, positive_int
from pipesim.commands._progress import working
from pipesim.commands._vocab import add_batch_size, bytes_arg, int_list, schedule_names
from pipesim.layercosts import CostFileError, LayerCosts, load_layer_costs
from pipesim.planner.dataparallel import BUCKET_BYTES, DPConfig
from pipesim.planner.search import Candidate, PlanResult, plan, plan_world
from pipesim.planner.space import PARTITIONS, PlanError, format_bytes
from pipesim.ranks import ORDERS

_BALANCE_WIDTH = 28  # the table shortens longer balances; the command has them in full


def register(sub: Any) -> None:
    p = sub.add_parser(
        "plan", help="search schedules x microbatches x partitions for the fastest step",
        description="Rank pipeline configurations by simulated step time from per-layer costs "
                    "(a file written by 'pipesim profile' or by hand; see pipesim.layercosts).")
    p.add_argument("--costs", metavar="FILE.json", help="per-layer cost file")
    p.add_argument("--model", metavar="NAME",
                   help="profile this model (mlp or gpt) first instead of --costs (needs torch)")
    model = p.add_argument_group("--model", "the model to profile (as 'pipesim profile' takes it)")
    model.add_argument("--hidden-size", type=positive_int, default=None,
                       help="model width (mlp 64, gpt 128)")
    model.add_argument("--layers", type=positive_int, default=None,
                       help="layers (mlp: Linear+ReLU, default 4; gpt: blocks + 2, default 6)")
    add_batch_size(model, None, "samples per microbatch to profile at (mlp 32, gpt 8); times "
                   "scale linearly to the planned microbatch sizes", "microbatch_size",
                   ("--microbatch-size",))
    p.add_argument("names", nargs="*", metavar="NAME", type=str.lower,
                   help="schedules to try (default every training schedule)")
    p.add_argument("--schedule", "--schedules", dest="schedules", metavar="A,B",
                   type=schedule_names, action="append", default=[],
                   help="the same as NAME, comma-separated")
    p.add_argument("-p", "--ranks", type=positive_int, default=None,
                   help="ranks of one pipeline (with -w or --dp: that split only)")
    p.add_argument("-w", "--world-size", type=positive_int, metavar="N",
                   help="GPUs in all: try every split into D replicas x P pipeline ranks")
    p.add_argument("--batch", type=positive_int, required=True,
                   help="global samples per step, split into microbatches")
    p.add_argument("--memory-limit", metavar="BYTES", type=bytes_arg,
                   help="per-rank memory limit: 80GB, 512MiB or plain bytes (default none)")
    p.add_argument("-m", "--microbatches", metavar="M,M", type=int_list,
                   help="microbatch counts to try (default divisors of the batch up to 4 x ranks)")
    p.add_argument("-v", "--virtual", "--virtual-stages", dest="virtual", metavar="V,V",
                   type=int_list, default=[1, 2],
                   help="stages per rank to try (default 1,2)")
    p.add_argument("--partition", choices=PARTITIONS, default="auto",
                   help="how to split layers into stages: balanced by time, by parameters, "
                        "uniform counts, or auto = time and uniform (default)")
    p.add_argument("--balance", metavar="N,N", type=int_list,
                   help="explicit layers per stage, e.g. 2,3,3,2")
    p.add_argument("--optimizer-factor", type=float, default=4.0,
                   help="memory per parameter byte: weights + grads + Adam moments (default 4)")
    p.add_argument("--synthesize", nargs="?", const=1.0, type=positive_float, metavar="S",
                   help="also search a schedule for each configuration's own costs (synth, "
                        "synth-v), S seconds each (default 1); write one with 'pipesim "
                        "synthesize -o'")
    p.add_argument("--top", type=positive_int, default=10, help="rows to print (default 10)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    _add_network_args(p)
    p.set_defaults(func=run)


def _add_network_args(p: Any) -> None:
    g = p.add_argument_group(
        "data parallel (--world-size)", "the gradient all-reduce among a stage's D replicas: a "
        "ring per bucket (see pipesim.planner.dataparallel); the defaults are illustrative, "
        "not measured")
    g.add_argument("--dp", metavar="D,D", type=int_list,
                   help="replica counts to try (default every divisor of -w); with -p, one "
                        "count fixes the split (-w = P x D)")
    add_network_args(g, "second")
    g.add_argument("--no-prune", action="store_true",
                   help="simulate every split, not only those that can reach the --top rows")


def add_network_args(group: Any, unit: str = "time unit") -> None:
    """The all-reduce's link flags (``plan``, and ``simulate --dp``); see network_from_args."""
    d = DPConfig()
    group.add_argument("--dp-bandwidth", type=positive_float, default=d.bandwidth,
                       metavar="B", help=f"inter-node bytes per {unit} per GPU (default "
                                         f"{d.bandwidth:g}: 200 Gb/s in bytes per second)")
    group.add_argument("--dp-latency", type=non_negative_float, default=d.latency, metavar="T",
                       help=f"inter-node {unit}s per ring step (default {d.latency:g} s)")
    group.add_argument("--intra-node-bandwidth", type=positive_float, metavar="B",
                       default=d.intra_node_bandwidth,
                       help=f"bytes per {unit} inside a node (default "
                            f"{d.intra_node_bandwidth:g} per second, NVLink-class)")
    group.add_argument("--intra-node-latency", type=non_negative_float, metavar="T",
                       default=d.intra_node_latency,
                       help=f"{unit}s per ring step inside a node (default "
                            f"{d.intra_node_latency:g} s)")
    group.add_argument("--ranks-per-node", type=positive_int, default=d.ranks_per_node,
                       help=f"GPUs per node (default {d.ranks_per_node})")
    group.add_argument("--bucket-bytes", type=bytes_arg, default=BUCKET_BYTES, metavar="BYTES",
                       help="gradient bytes per all-reduce (default 25MiB, as DDP)")
    group.add_argument("--rank-order", choices=ORDERS, default=d.order,
                       help="global rank = replica x P + pipeline rank (pipeline-first, default: "
                            "a pipeline fills a node first) or pipeline rank x D + replica")


def network_from_args(args: argparse.Namespace, replicas: int = 1,
                      optimizer_time: float = 0.0) -> DPConfig:
    """The DPConfig that add_network_args' flags describe."""
    return DPConfig(replicas, args.dp_latency, args.dp_bandwidth, args.intra_node_latency,
                    args.intra_node_bandwidth, args.ranks_per_node, args.bucket_bytes,
                    args.rank_order, optimizer_time)




def run(args: argparse.Namespace) -> int:
    _sizes(args)  # before profiling: a mistake in the sizes costs nothing
    with working(f"profiling {args.model}" if args.model else "reading the costs",
                 enabled=not args.json) as status:
        costs = _layer_costs(args)
        status.update("planning: simulating configurations")
        result = plan_from_layer_costs(costs, args)
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
        return _profiled(args)
    if not args.costs:
        raise UserError("give --costs FILE.json (per-layer costs; see examples/costs/)")
    try:
        return load_layer_costs(args.costs)
    except CostFileError as err:
        raise UserError(str(err)) from None


def _profiled(args: argparse.Namespace) -> LayerCosts:
    """--model: profile it here (one thread, as a rank runs), then plan from those costs."""
    from pipesim.commands.profile import DEFAULT_BATCH, DEFAULT_LAYERS
    from pipesim.models import MODELS
    from pipesim.profiling.profiler import ProfileConfig, profile_model
    from pipesim.schedules import get_schedule
    if args.model not in MODELS:
        raise UserError(f"unknown model {args.model!r}; valid: {', '.join(MODELS)}")
    args.hidden_size = args.hidden_size or (128 if args.model == "gpt" else 64)
    args.layers = args.layers or DEFAULT_LAYERS.get(args.model, 4)
    cfg = ProfileConfig(schedule=get_schedule("gpipe", 1, 1), model=args.model,
                        hidden_size=args.hidden_size, layers=args.layers,
                        batch_size=args.microbatch_size or DEFAULT_BATCH.get(args.model, 32),
                        loss="cross-entropy" if args.model == "gpt" else "mse")
    from pipesim.calibration import load_engine_costs, with_engine
    try:  # this machine's engine calibration, when it has one (pipesim profile --engine)
        return with_engine(profile_model(cfg, repeats=5, warmup=2), load_engine_costs())
    except ValueError as err:
        raise UserError(str(err)) from None


def plan_from_layer_costs(layer_costs: LayerCosts, args: argparse.Namespace) -> PlanResult:
    """The one place the planner is called from the CLI, whatever produced the costs."""
    partition: str | list[int] = args.partition
    if args.balance and args.partition != "auto":
        raise UserError("give --partition or --balance, not both")
    if args.balance:
        try:
            partition = check_balance(list(args.balance), len(layer_costs))
        except ValueError as err:
            raise UserError(f"--balance: {err}") from None
    _sizes(args)
    names = list(args.names) + [n for group in args.schedules for n in group]
    schedules = list(dict.fromkeys(names)) or None
    try:
        if args.world_size:
            return plan_world(layer_costs, args.world_size, args.batch, args.memory_limit,
                              schedules, args.microbatches, args.virtual, partition,
                              args.optimizer_factor, network_from_args(args), args.dp,
                              None if args.no_prune else args.top,
                              synthesize=args.synthesize)
        return plan(layer_costs, args.ranks, args.batch, args.memory_limit, schedules,
                    args.microbatches, args.virtual, partition, args.optimizer_factor,
                    synthesize=args.synthesize)
    except PlanError as err:
        raise UserError(str(err)) from None


def _sizes(args: argparse.Namespace) -> None:
    """-p, --dp and -w as every command reads them: -p alone plans one pipeline; -w (or -p with
    one --dp) every split of the GPUs, or the one -p fixes; a contradiction is an error."""
    if args.ranks is None and args.world_size is None:
        raise UserError("--dp needs -w N (GPUs in all) or -p P (ranks of one pipeline)"
                        if args.dp else
                        "give -p/--ranks P (one pipeline) or -w/--world-size N (GPUs in all)")
    if args.ranks is not None and args.dp is not None:
        if len(args.dp) > 1:
            raise UserError(f"-p {args.ranks} fixes the pipeline; give one --dp, not "
                            f"{','.join(map(str, args.dp))}")
        world = args.ranks * args.dp[0]
        if args.world_size is not None and args.world_size != world:
            raise UserError(f"-w {args.world_size} and -p {args.ranks} x --dp {args.dp[0]} = "
                            f"{world} say different things")
        args.world_size = world
    elif args.ranks is not None and args.world_size is not None:
        if args.world_size % args.ranks:
            raise UserError(f"-p {args.ranks} does not divide -w {args.world_size} GPUs into "
                            f"equal pipelines")
        args.dp = [args.world_size // args.ranks]
    if args.microbatch_size is not None and not args.model:
        raise UserError("-b sets the microbatch size --model profiles at; with --costs the "
                        "planner tries every microbatch size the batch allows (-m fixes counts)")


def format_plan(result: PlanResult, top: int = 10) -> str:
    """The ranked table, the best configuration's command, then the rejected."""
    meta = result.meta
    world = "world_size" in meta
    model = f"{meta['model']} " if meta.get("model") else ""
    limit = meta.get("memory_limit_bytes")
    where = (f"{meta['world_size']} GPUs (D replicas x P pipeline ranks)" if world
             else f"{meta['ranks']} ranks")
    splits = [s for s in result.skipped if not s.schedule]
    pruned = (f", {meta['pruned']} pruned (cannot reach the top {meta['keep']}; --no-prune "
              f"simulates them)" if meta.get("pruned") else "")
    lines = [f"plan: {model}({meta['layers']} layers) on {where}, batch "
             f"{meta['batch']}, memory limit {format_bytes(limit) if limit else 'none'}",
             f"{_count(len(result.candidates), 'configuration')} fit, "
             f"{len(result.rejected)} over the memory limit, {len(result.skipped) - len(splits)} "
             f"not accepted by their schedule{pruned}"]
    lines += [_network(meta["network"]), ""] if world else [""]
    if result.candidates:
        lines += _table(result, top, world)
    if world and result.candidates:
        lines += ["", "best of each split:"]
        lines += _table(result, top, world, per_split=True)
    best = result.best
    if best:
        c = best.config
        split = f"{_count(c.dp, 'replica')} x {_count(c.pp, 'pipeline rank')}, " if world else ""
        exposed = (f" ({best.exposed_allreduce_seconds:.3f} s of all-reduce exposed)"
                   if world else "")
        if c.pp == 1:  # one rank per replica: no pipeline, the microbatches are accumulated
            what = (f"best: pure data parallel, {_count(c.dp, 'replica')} of the whole model, "
                    f"{c.microbatches} microbatches of {c.microbatch_size} accumulated per step, ")
        else:
            what = (f"best: {split}{c.schedule}, {c.microbatches} microbatches of "
                    f"{c.microbatch_size}, {c.virtual_stages} stage(s) per rank, ")
        lines += ["", f"{what}{best.predicted_step_seconds:.3f} s per step{exposed}",
                  f"  {best.command}"]
    else:
        lines += ["no configuration fits; raise --memory-limit, add ranks or shrink the batch"]
    lines += _rejected(result, top, world)
    if splits:
        lines += ["", "splits not tried:"]
        lines += [f"  dp={s.dp} pp={meta['world_size'] // s.dp}: {s.reason}" for s in splits]
    return "\n".join(lines) + "\n"


def _rejected(result: PlanResult, top: int, world: bool) -> list[str]:
    if not result.rejected:
        return []
    lines = ["", "rejected (over the memory limit):"]
    for r in result.rejected[:top]:
        c = r.config
        split = f"dp={c.dp:<4} pp={c.pp:<4} " if world else ""
        lines.append(f"  {split}{c.schedule:<17} m={c.microbatches:<4} v={c.virtual_stages} "
                     f"{c.partition:<8} {r.reason}")
    if len(result.rejected) > top:
        lines.append(f"  ... and {len(result.rejected) - top} more (--json lists all)")
    return lines


def _network(net: dict[str, Any]) -> str:
    """One line: the all-reduce's links, as planned."""
    bucket = net["bucket_bytes"]
    size = "per stage" if bucket is None else f"per {bucket / 2**20:.4g} MiB bucket"
    return (f"all-reduce: a ring {size}; inter-node {format_bytes(net['bandwidth'])}"
            f"/s + {net['latency'] * 1e6:g} us per ring step, intra-node "
            f"{format_bytes(net['intra_node_bandwidth'])}/s + "
            f"{net['intra_node_latency'] * 1e6:g} us; {net['ranks_per_node']} GPUs per node, "
            f"{net['order']} (illustrative defaults unless set)")


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _table(result: PlanResult, top: int, world: bool = False,
           per_split: bool = False) -> list[str]:
    """The ranked rows; ``per_split``: only the best of each D x P split."""
    candidates = list(result.candidates)
    if per_split:
        firsts: dict[int, Candidate] = {}
        for c in candidates:
            firsts.setdefault(c.config.dp, c)
        candidates = list(firsts.values())
    split = f"{'dp':>4} {'pp':>3}  " if world else ""
    exposed = f"{'exposed':>7}  " if world else ""
    rows = [f"{'#':>3}  {split}{'schedule':<17} {'m':>4} {'v':>2} {'mb':>4}  {'step (s)':>9}  "
            f"{'bubble':>6}  {exposed}{'peak mem':>9}  {'partition':<9} balance"]
    for i, c in enumerate(candidates[:top], start=1):
        cfg = c.config
        balance = ",".join(map(str, cfg.balance))
        if len(balance) > _BALANCE_WIDTH:
            balance = balance[:_BALANCE_WIDTH - 3] + "..."
        split = f"{cfg.dp:>4} {cfg.pp:>3}  " if world else ""
        exposed = f"{c.exposed_allreduce_seconds:>7.3f}  " if world else ""
        name = "pure DP" if cfg.pp == 1 else cfg.schedule
        rows.append(f"{i:>3}  {split}{name:<17} {cfg.microbatches:>4} "
                    f"{cfg.virtual_stages:>2} {cfg.microbatch_size:>4}  "
                    f"{c.predicted_step_seconds:>9.3f}  {max(0.0, c.bubble_fraction):>6.1%}  "
                    f"{exposed}"
                    f"{format_bytes(max(c.peak_memory_bytes)):>9}  {cfg.partition:<9} {balance}")
    if len(candidates) > top:
        rows.append(f"     ... {len(candidates) - top} more (--top N, or --json)")
    return rows


__all__ = [
    "add_network_args", "format_plan", "network_from_args", "plan_from_layer_costs", "register",
    "run"
]
