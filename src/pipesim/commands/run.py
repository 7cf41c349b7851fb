"""``pipesim run``: the tutorial's demo by default, or real pipelined training on any schedule.

    pipesim run                                   # the tutorial: 4 stages, forward only
    pipesim run --schedule 1f1b --steps 5 -m 8    # training
    torchrun --nproc-per-node 2 -m pipesim run --schedule zb-h1   # one process per rank
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from pipesim.commands import (
    UserError,
    add_schedule_args,
    int_list,
    positive_float,
    positive_int,
    schedule_from_args,
    warn_oversubscribed,
)
from pipesim.commands._progress import working
from pipesim.commands._runreport import LineHook, Progress, print_header, report
from pipesim.commands._vocab import add_batch_size
from pipesim.costs import CostError
from pipesim.ir import Op, Schedule
from pipesim.validate import validate

DEFAULT_LR = {"adam": 3e-3, "sgd": 0.01}
_MAX_RANKS = 64  # forked processes on one machine beyond this are a typo, not a plan


def register(sub: Any) -> None:
    p = sub.add_parser("run", help="run a pipeline for real (default: the tutorial's demo)",
                       description="Run a schedule on real processes (gloo on CPU, nccl on GPU).")
    add_schedule_args(p, dp=True, default_name="forward")
    add_batch_size(p, 32)
    p.add_argument("--hidden-size", type=positive_int, default=64, help="model width (default 64)")
    p.add_argument("--backend", choices=["gloo", "nccl"], default="gloo")
    p.add_argument("--visualize", action="store_true",
                   help="draw this run's schedule and exit (as the tutorial's flag)")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="training steps (default 1)")
    p.add_argument("--lr", type=positive_float, default=None,
                   help="learning rate (default: adam 3e-3, sgd 0.01)")
    p.add_argument("--optimizer", choices=["sgd", "adam"], default="adam",
                   help="default adam: both models visibly learn in tens of steps")
    p.add_argument("--loss", choices=["mse", "cross-entropy"], default="mse")
    p.add_argument("--model", default="mlp", help="model family (default mlp, the tutorial's)")
    p.add_argument("--layers", type=positive_int, default=None,
                   help="Linear+ReLU layers, split over the stages (default one per stage)")
    p.add_argument("--balance", type=int_list, default=None,
                   help="layers per stage, e.g. 2,3,3,2")
    p.add_argument("--partition", choices=["uniform", "params", "time"], default=None,
                   help="cut the layers into stages by equal count (default), even parameter "
                        "count or even profiled F+B time (instead of --balance)")
    p.add_argument("--seq-len", type=positive_int, default=None,
                   help="--model gpt: tokens per sequence (default 64)")
    p.add_argument("--heads", type=positive_int, default=None,
                   help="--model gpt: attention heads (default hidden/16)")
    p.add_argument("--predict", nargs="?", const="", default=None, metavar="COSTS.json",
                   help="also predict the step with the simulator, from a 'pipesim profile' "
                        "file or (no file) by profiling now, and report the error; with "
                        "--plot, draw the prediction above the measured step")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--seed", type=int, default=0, help="weights and data seed (default 0)")
    p.add_argument("--checkpoint-activations", action="store_true",
                   help="keep only each stage's input; recompute its forward in backward")
    p.add_argument("--synthetic", default=None, metavar="F=20,B=40",
                   help="also sleep this many ms per action (measure engine overhead)")
    p.add_argument("--verify", action="store_true",
                   help="compare every final weight with one-process training; exit 1 if off")
    p.add_argument("--quiet", action="store_true", help="no per-action lines")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("--trace", metavar="OUT.json", help="write a Chrome trace of the last step")
    p.add_argument("--plot", metavar="OUT.png", help="write a PNG timeline of the last step")
    p.add_argument("--timeline", metavar="OUT.json", help="write the measured Timeline as JSON")
    p.add_argument("--html", metavar="OUT.html", help="write an offline HTML report of the run")
    p.add_argument("--stall-timeout", type=positive_float, default=60.0, metavar="SECONDS",
                   help="stop and report every rank when one makes no progress this long "
                        "(default 60)")
    p.add_argument("--checkpoint-dir", metavar="DIR",
                   help="save weights, optimizer and RNG state of every rank here")
    p.add_argument("--checkpoint-every", type=positive_int, default=None, metavar="N",
                   help="save every N steps and after the last (default: only after the last)")
    p.add_argument("--resume", metavar="DIR", help="continue from the checkpoint in DIR")
    p.add_argument("--rank-order", choices=["pipeline-first", "replica-first"],
                   default="pipeline-first",
                   help="pipeline-first (default): a pipeline's ranks are consecutive, so it "
                        "stays inside a node; replica-first: a stage's replicas are")
    p.add_argument("--no-size-check", action="store_true",
                   help="run even when the model or activations look too large for this machine")
    p.set_defaults(func=run)


# ----------------------------------------------------------------------------- configuration




def _parse_synthetic(text: str | None) -> dict[Op, float]:
    if not text:
        return {}
    from pipesim.costs import parse_cost_flag
    try:
        costs = parse_cost_flag(text)
    except CostError as err:
        raise UserError(str(err).replace("--cost", "--synthetic")) from None
    out = {Op(k): v / 1000.0 for k, v in costs.items()}
    if Op.B in out:
        out.setdefault(Op.I, out[Op.B] / 2)
        out.setdefault(Op.W, out[Op.B] / 2)
    return out


def _torchrun_world(args: argparse.Namespace) -> None:
    """Under torchrun its world size is -w's (a -w given must agree)."""
    from pipesim.processes.launch import under_torchrun
    if under_torchrun():
        world = int(os.environ["WORLD_SIZE"])
        if args.world_size is not None and args.world_size != world:
            raise UserError(f"-w {args.world_size} disagrees with torchrun's world size {world}")
        args.world_size = world


def build_schedule(args: argparse.Namespace) -> Schedule:
    """NAME/--schedule (default forward) or --file on -p x --dp = -w processes (any two)."""
    _torchrun_world(args)
    sched = schedule_from_args(args)  # resolves args.ranks, args.dp, args.world_size
    if args.world_size > _MAX_RANKS:
        raise UserError(f"-w {args.world_size}: more than {_MAX_RANKS} processes on one "
                        f"machine; use torchrun across machines (or simulate: pipesim simulate)")
    report = validate(sched)
    if not report.ok:
        raise UserError("the schedule cannot run:\n" + "\n".join(report.errors), code=1)
    return sched


def build_config(args: argparse.Namespace) -> Any:
    from pipesim.config import RunConfig
    sched = build_schedule(args)
    balance = tuple(args.balance) if args.balance else None
    layers = args.layers if args.layers is not None else (sum(balance) if balance else None)
    if args.model == "gpt" and layers is None:  # embedding + 4 blocks + head, or one per stage
        from pipesim.models.gpt import DEFAULT_LAYERS
        layers = max(DEFAULT_LAYERS, sched.stages)
    if balance is not None and args.partition is not None:
        raise UserError("give --balance or --partition, not both")
    if args.model != "gpt" and (args.seq_len or args.heads):
        raise UserError("--seq-len and --heads are for --model gpt")
    n_layers = layers if layers is not None else sched.stages
    if n_layers < sched.stages:
        raise UserError(f"{n_layers} layers cannot fill {sched.stages} stages "
                        f"({sched.ranks} ranks x {sched.stages // sched.ranks} per rank); "
                        f"use --layers {sched.stages} or more")
    if balance is not None and (len(balance) != sched.stages or sum(balance) != n_layers):
        raise UserError(f"--balance {','.join(map(str, balance))}: needs {sched.stages} "
                        f"positive counts summing to {n_layers} layers")
    from pipesim.models import MODELS
    if args.model not in MODELS:
        raise UserError(f"unknown model {args.model!r}; valid: {', '.join(MODELS)}")
    if args.loss == "cross-entropy" and args.model == "mlp" and args.hidden_size < 2:
        raise UserError("--loss cross-entropy needs --hidden-size >= 2 (classes)")
    if sched.forward_only and (args.verify or args.checkpoint_activations):
        raise UserError("--verify and --checkpoint-activations need a training schedule "
                        "(e.g. --schedule 1f1b)")
    if args.backend == "nccl":
        _check_gpus(sched.ranks * args.dp)
    if (args.checkpoint_dir or args.resume) and sched.forward_only:
        raise UserError("--checkpoint-dir/--resume need a training schedule (e.g. --schedule 1f1b)")
    if args.checkpoint_every and not args.checkpoint_dir:
        raise UserError("--checkpoint-every needs --checkpoint-dir")
    if args.checkpoint_dir and os.path.exists(args.checkpoint_dir) \
            and not os.path.isdir(args.checkpoint_dir):
        raise UserError(f"--checkpoint-dir {args.checkpoint_dir} exists and is not a directory")
    if not args.no_size_check:
        _check_size(args, sched, n_layers)
    cfg = RunConfig(
        schedule=sched, batch_size=args.batch_size, hidden_size=args.hidden_size, layers=layers,
        balance=balance, steps=args.steps or 1, optimizer=args.optimizer,
        lr=args.lr if args.lr is not None else DEFAULT_LR[args.optimizer],
        loss=args.loss, model=args.model, seed=args.seed, dtype=args.dtype,
        checkpoint_activations=args.checkpoint_activations, backend=args.backend,
        synthetic=_parse_synthetic(args.synthetic), verify=args.verify,
        checkpoint_dir=args.checkpoint_dir, resume_dir=args.resume,
        checkpoint_every=(args.checkpoint_every or args.steps or 1) if args.checkpoint_dir else 0,
        dp=args.dp, rank_order=args.rank_order, seq_len=args.seq_len, heads=args.heads,
    )
    if args.model == "gpt":
        from pipesim.models.gpt import gpt_shape
        try:
            gpt_shape(cfg)
        except ValueError as err:
            raise UserError(str(err)) from None
    if args.partition not in (None, "uniform"):
        cfg = _partitioned(args, cfg)
    if args.resume:
        _check_resume(cfg)
    _warn_cores(args)  # last: a mistake in the flags is reported alone
    return cfg


def _partitioned(args: argparse.Namespace, cfg: Any) -> Any:
    """cfg with the balance --partition asks for (by time: from --predict's file if given)."""
    import dataclasses

    from pipesim.layercosts import load_layer_costs
    from pipesim.profiling.partitioning import balance_for
    try:
        costs = load_layer_costs(args.predict) if args.predict else None
        return dataclasses.replace(cfg, balance=balance_for(cfg, args.partition, costs))
    except ValueError as err:
        raise UserError(str(err)) from None


def _prediction(args: argparse.Namespace, cfg: Any) -> Any:
    """--predict: the simulated step (a Timeline; profiling first when no file is given)."""
    if args.predict is None:
        return None
    from pipesim.processes.launch import under_torchrun
    if not args.predict and under_torchrun():
        raise UserError("--predict without a file profiles in forked processes; under torchrun "
                        "run 'pipesim profile -o costs.json' first and pass --predict costs.json")
    from pipesim.commands.profile import engine_costs
    from pipesim.runtime.predict import predict_run
    what = "profiling, then simulating the run" if not args.predict else "simulating the run"
    with working(f"--predict: {what}", enabled=not (args.json or args.quiet)):
        engine = engine_costs(calibrate=not under_torchrun())  # measured once per machine
        try:
            return predict_run(cfg, args.predict or None, engine)
        except ValueError as err:
            raise UserError(str(err)) from None


def _warn_cores(args: argparse.Namespace) -> None:
    """One line on stderr when the ranks outnumber this machine's cores (not under torchrun)."""
    from pipesim.processes.launch import under_torchrun
    if args.visualize or under_torchrun():
        return
    warning = warn_oversubscribed(args.world_size)
    if warning:
        print(warning, file=sys.stderr)


def _check_resume(cfg: Any) -> None:
    from pipesim.runtime.checkpoint import CheckpointError, check_fingerprint, read_latest
    try:
        latest = read_latest(cfg.resume_dir)
        check_fingerprint(latest["fingerprint"], cfg.fingerprint(), cfg.resume_dir)
    except CheckpointError as err:
        raise UserError(str(err)) from None
    if latest["step"] >= cfg.steps:
        raise UserError(f"--resume {cfg.resume_dir}: the checkpoint is at step {latest['step']}; "
                        f"--steps {cfg.steps} leaves nothing to run (steps count from the start)")


def _check_size(args: argparse.Namespace, sched: Schedule, layers: int) -> None:
    """Refuse sizes that would exhaust this machine's memory, saying how to override."""
    width = 8 if args.dtype == "float64" else 4
    params = layers * (args.hidden_size * args.hidden_size + args.hidden_size) * width
    acts = sched.microbatches * args.batch_size * args.hidden_size * width * layers
    need = 4 * params + 2 * acts  # weights, grads, optimizer state; stashed activations
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return
    if need > total / 2:
        raise UserError(f"this run needs about {need / 2**30:.1f} GiB (weights, gradients, "
                        f"optimizer state, activations), more than half of this machine's "
                        f"{total / 2**30:.1f} GiB; shrink it or pass --no-size-check")


def _check_gpus(ranks: int) -> None:
    from pipesim.processes.launch import cuda_devices, under_torchrun
    gpus = cuda_devices()
    if not gpus:
        raise UserError("--backend nccl needs CUDA GPUs, and none is available here; "
                        "use --backend gloo")
    local = int(os.environ.get("LOCAL_WORLD_SIZE", ranks)) if under_torchrun() else ranks
    if gpus < local:
        raise UserError(f"--backend nccl puts each rank on its own GPU: {local} ranks here, "
                        f"{gpus} GPUs")


# ----------------------------------------------------------------------------- running


def run(args: argparse.Namespace) -> int:
    cfg = build_config(args)
    sched = cfg.schedule
    if args.visualize:
        from pipesim.views.tutorial import render_tutorial_diagram
        print(render_tutorial_diagram(sched))
        return 0
    for path in (args.trace, args.plot, args.timeline, args.html):
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise UserError(f"cannot write {path}: its directory does not exist")
    from pipesim.processes.launch import (
        LaunchOptions,
        RankFailedError,
        launch,
        run_torchrun,
        under_torchrun,
    )
    from pipesim.runtime.train import TrainJob
    predicted = _prediction(args, cfg)  # before the ranks start: profiling uses the cores
    from pipesim.runtime.predict import PROBE_EVERY
    hook = None if (args.quiet or args.json) else LineHook(sched, cfg.steps)
    progress = None if args.json or sched.forward_only else \
        Progress(cfg.global_microbatches * cfg.batch_size, not sched.forward_only)
    job = TrainJob(cfg, hook, progress, probe_every=PROBE_EVERY if predicted is not None else 0)
    opts = LaunchOptions(backend=cfg.backend, stall_timeout=args.stall_timeout)
    if not args.json and not under_torchrun():
        print_header(cfg)
    t0 = time.perf_counter()
    from pipesim.processes.watchdog import StallError
    try:
        result = run_torchrun(job, opts) if under_torchrun() else launch(job, cfg.grid.world, opts)
    except RankFailedError as err:
        raise UserError(str(err), code=2 if err.kind == "CheckpointError" else 1) from None
    except StallError as err:
        raise UserError(str(err), code=1) from None
    wall = time.perf_counter() - t0
    if result is None:  # a torchrun rank other than 0
        return 0
    drift = None
    if predicted is not None:  # the reference kernel on the ranks during the run
        from pipesim.predict import run_reference, speed_drift
        from pipesim.timeline import Timeline
        during = run_reference([Timeline.from_dict(t) for t in result.timelines])
        drift = speed_drift(predicted.meta["reference_time"], [during] if during else [])
    return report(args, cfg, result, wall, predicted, drift)


__all__ = ["build_config", "build_schedule", "register", "run"]
