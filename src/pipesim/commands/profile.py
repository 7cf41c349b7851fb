"""``pipesim profile``: measure a model's per-layer costs and write a cost file.

    pipesim profile --model gpt --hidden-size 128 --layers 6 -b 8 -o costs.json
    pipesim plan --costs costs.json -p 2 --batch 32          # plan with them
    pipesim profile --model mlp --layers 8 -o layers.json --stage-costs stages.json --stages 2
    pipesim simulate 1f1b -p 2 --costs stages.json            # per-stage costs for simulate
    pipesim profile --engine                                  # the engine's own time, cached

Times are medians on one thread (as a rank runs), the optimizer's update of each layer included;
the message latency and bandwidth come from a 2-rank gloo ping-pong of the largest activation
(``--no-comm`` skips it). ``--engine`` measures the engine's own time per action and between
steps once per machine and torch version (``pipesim.calibration``); cost files written here
carry it, and the reference kernel's time (``run --predict`` reports the machine's drift).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Any

from pipesim.calibration import EngineCosts, cache_path, load_engine_costs, with_engine
from pipesim.commands import UserError, dump_json, non_negative_float, positive_int, write_atomic
from pipesim.commands._progress import working
from pipesim.commands._vocab import add_batch_size, int_list
from pipesim.layercosts import LayerCosts
from pipesim.stagecosts import stage_costs

DEFAULT_LAYERS = {"mlp": 4, "gpt": 6}
DEFAULT_BATCH = {"mlp": 32, "gpt": 8}


def register(sub: Any) -> None:
    p = sub.add_parser("profile", help="measure a model's per-layer F/I/W/B times and bytes",
                       description="Measure per-layer costs (one microbatch, one thread) and "
                                   "write the cost file that 'pipesim plan --costs' reads.")
    p.add_argument("--model", default="mlp", help="model family: mlp (default) or gpt")
    p.add_argument("--hidden-size", type=positive_int, default=64, help="model width (64)")
    p.add_argument("--layers", type=positive_int, default=None,
                   help="layers (mlp: Linear+ReLU, default 4; gpt: blocks + 2, default 6)")
    add_batch_size(p, None, "samples (gpt: sequences) per microbatch (mlp 32, gpt 8)")
    p.add_argument("--seq-len", type=positive_int, default=None, help="gpt: tokens (64)")
    p.add_argument("--heads", type=positive_int, default=None,
                   help="gpt: attention heads (default hidden/16)")
    p.add_argument("--loss", choices=["mse", "cross-entropy"], default="mse",
                   help="mlp's loss (gpt: always cross-entropy)")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="adam",
                   help="whose update of each layer's parameters to time (default adam, as "
                        "'pipesim run')")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeats", type=positive_int, default=10,
                   help="timed runs per layer, at least (default 10)")
    p.add_argument("--seconds", type=non_negative_float, default=0.0,
                   help="and more runs until they took this long (on a machine whose speed "
                        "wanders: about as long as the run to predict; default 0)")
    p.add_argument("--warmup", type=int, default=2, help="untimed runs first (default 2)")
    p.add_argument("--stat", choices=["median", "mean", "min"], default="median",
                   help="keep each time's median (default), mean (what a run pays on "
                        "average) or minimum (on a busy machine: an estimate of the idle "
                        "machine's time)")
    p.add_argument("--processes", type=positive_int, default=1,
                   help="profile in this many processes at once, as many as the run's ranks "
                        "on this machine, so the cores are as busy as in the run (default 1)")
    p.add_argument("--no-comm", action="store_true",
                   help="skip the ping-pong: messages cost nothing in the file")
    p.add_argument("-o", "--output", metavar="COSTS.json",
                   help="the per-layer cost file to write (required unless --engine)")
    p.add_argument("--engine", action="store_true",
                   help="measure the engine's own time per action and between steps (2 ranks, "
                        "a model that computes next to nothing) and cache it for this machine "
                        "and torch version; run --predict, and cost files written later, use it")
    p.add_argument("--stage-costs", metavar="STAGES.json",
                   help="also write per-stage costs (for 'pipesim simulate --costs')")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--stages", type=positive_int, default=None,
                       help="for --stage-costs: this many stages, balanced by time (default 2)")
    group.add_argument("--balance", type=int_list, default=None,
                       help="for --stage-costs: layers per stage")
    p.add_argument("--json", action="store_true", help="print the cost file instead of a table")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> Any:
    from pipesim.models import MODELS
    from pipesim.profiling.profiler import ProfileConfig
    from pipesim.schedules import get_schedule
    if args.model not in MODELS:
        raise UserError(f"unknown model {args.model!r}; valid: {', '.join(MODELS)}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup}")
    if args.model != "gpt" and (args.seq_len or args.heads):
        raise UserError("--seq-len and --heads are for --model gpt")
    return ProfileConfig(
        schedule=get_schedule("gpipe", 1, 1), model=args.model, hidden_size=args.hidden_size,
        layers=args.layers or DEFAULT_LAYERS.get(args.model, 4),
        batch_size=args.batch_size or DEFAULT_BATCH.get(args.model, 32),
        loss=args.loss, dtype=args.dtype, seed=args.seed, seq_len=args.seq_len,
        heads=args.heads, optimizer=args.optimizer)


def _stage_balance(args: argparse.Namespace, costs: LayerCosts) -> list[int]:
    from pipesim.balance import partition_balanced
    try:
        if args.balance is not None:
            balance = list(args.balance)
            if sum(balance) != len(costs):
                raise ValueError(f"--balance {','.join(map(str, balance))} covers "
                                 f"{sum(balance)} layers; the model has {len(costs)}")
            return balance
        return partition_balanced(costs.layer_times(), args.stages or 2)
    except ValueError as err:
        raise UserError(str(err)) from None


def _table(costs: LayerCosts) -> str:
    lines = [f"{'layer':14s} {'F ms':>8s} {'I ms':>8s} {'W ms':>8s} {'B ms':>8s} "
             f"{'opt ms':>8s} {'out KiB':>9s} {'stash KiB':>10s} {'params KiB':>11s}"]
    for c in costs.layers:
        lines.append(f"{c.name:14s} {c.forward * 1e3:8.3f} {c.backward_input * 1e3:8.3f} "
                     f"{c.backward_weight * 1e3:8.3f} {c.backward * 1e3:8.3f} "
                     f"{c.optimizer * 1e3:8.3f} {c.activation_bytes / 1024:9.1f} "
                     f"{c.stash_bytes / 1024:10.1f} {c.param_bytes / 1024:11.1f}")
    bw = "unlimited" if costs.comm_bandwidth == float("inf") else \
        f"{costs.comm_bandwidth / 1e9:.2f} GB/s"
    lines.append(f"messages: latency {costs.comm_latency * 1e6:.0f} us, bandwidth {bw}, "
                 f"sender's time {costs.comm_send_overhead * 1e6:.0f} us each")
    if costs.engine_action_overhead or costs.engine_step_overhead or costs.engine_sync:
        lines.append(f"engine's own time (profile --engine): "
                     f"{costs.engine_action_overhead * 1e6:.0f} us before each action, "
                     f"{costs.engine_step_overhead * 1e6:.0f} us per rank between steps, "
                     f"{costs.engine_sync * 1e6:.0f} us for the ranks' meeting")
    if costs.shared_compute:
        lines.append(_shared_line(costs.shared_compute))
    return "\n".join(lines)


def _shared_line(compute: float) -> str:
    return (f"ranks sharing cores (2 per core): each action x{compute:.2f} the CPU time it "
            f"takes with a core of its own")


def engine_costs(calibrate: bool = True) -> EngineCosts | None:
    """This machine's cached engine calibration; measured and cached now if there is none
    and ``calibrate`` (about half a minute: 2- and 4-rank runs of small MLPs)."""
    engine = load_engine_costs()
    if engine is None and calibrate:
        engine = _calibrate()
    return engine


def _calibrate() -> EngineCosts:
    from pipesim.processes.launch import set_threads
    from pipesim.runtime.predict import calibrate_engine
    set_threads(1)  # the calibration forks this process
    engine = calibrate_engine()
    path = cache_path()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(str(path), engine.to_json())
    except OSError as err:
        raise UserError(f"cannot write the engine calibration {path}: {err.strerror}") from None
    return engine


def _engine_report(engine: EngineCosts) -> str:
    per = ", ".join(f"{name} " + " / ".join(f"{x * 1e6:.0f}" for x in fit)
                    for name, fit in engine.fits.items())
    return (f"engine's own time: {engine.action_overhead * 1e6:.1f} us before each action, "
            f"{engine.step_overhead * 1e6:.0f} us per rank between steps, "
            f"{engine.sync * 1e6:.0f} us for the ranks' meeting (per schedule, in that order: "
            f"{per})\n" + (_shared_line(engine.shared_compute) + "\n" if engine.shared_compute
                           else "ranks sharing cores: not measured (fewer than 2 cores, or this "
                                "process may not pin itself to 2)\n")
            + f"wrote {cache_path()}")


def run(args: argparse.Namespace) -> int:
    if args.engine:
        engine = _calibrate()
        if not args.output:
            print(json.dumps(dataclasses.asdict(engine)) if args.json
                  else _engine_report(engine))
            return 0
    if not args.output:
        raise UserError("give -o COSTS.json (the cost file to write), or --engine")
    cfg = _config(args)
    if args.stage_costs is None and (args.stages or args.balance):
        raise UserError("--stages and --balance shape --stage-costs; give --stage-costs FILE")
    for path in (args.output, args.stage_costs):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UserError(f"cannot write {path}: its directory does not exist")
    from pipesim.processes.launch import set_threads
    from pipesim.profiling.comm import with_comm
    from pipesim.profiling.profiler import profile_model
    set_threads(1)  # as a rank runs; and the ping-pong forks this process
    with working(f"profiling {cfg.layers} layers of {cfg.model} ({args.repeats} repeats)",
                 enabled=not args.json) as status:
        try:
            costs = profile_model(cfg, args.repeats, args.warmup, args.processes, args.stat,
                                  args.seconds)
        except ValueError as err:
            raise UserError(str(err)) from None
        if not args.no_comm:
            status.update("measuring messages between two ranks")
            costs = with_comm(costs, args.stat)
        costs = with_engine(costs, engine_costs(calibrate=False))
    balance = _stage_balance(args, costs) if args.stage_costs else None
    write_atomic(args.output, costs.to_json())
    if args.stage_costs and balance is not None:
        per_stage = stage_costs(costs, balance).to_dict()
        write_atomic(args.stage_costs, dump_json(per_stage))
    if args.json:
        print(json.dumps(costs.to_dict()))
        return 0
    print(_table(costs))
    print(f"wrote {args.output}" + (f" and {args.stage_costs} (stages of "
                                    f"{','.join(map(str, balance))} layers)" if balance else ""))
    return 0


__all__ = ["DEFAULT_BATCH", "DEFAULT_LAYERS", "register", "run"]
