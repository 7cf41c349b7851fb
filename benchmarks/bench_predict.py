"""How well does the simulator predict a real run? Profile, predict, run, replay, compare.

    .venv/bin/python benchmarks/bench_predict.py      # MLP and GPT, 5 schedules, 2 and 4 ranks
    .venv/bin/python benchmarks/bench_predict.py --models gpt --trials 5

Per trial, for each model and schedule (the order turns each trial, so no configuration always
runs first): ``profile_model`` (at least ``--repeats`` whole passes and ``--profile-seconds``
of them, in ``--processes`` fresh processes at once; per layer and op the ``--statistic``, the
mean by default, the optimizer update included), the reference kernel right after it, and
``measure_comm`` (2 ranks, the engine's transport: the one-way time of the largest activation
and the sender's time per message, medians of 100); then the prediction, the reference kernel,
a real run on 2 or 4 ranks (``--ranks``; one thread per rank, Adam) of at least ``--steps``
steps and as many as the predicted step needs to last ``--run-seconds``, the reference kernel
again, and three figures against the measured step (one step's end to the next's, the
optimizer included, median of steps 1 onwards). This machine's speed wanders within a second
(RESULTS_predict.md), so profile and run each last seconds, not a fraction of one:

- predicted: the simulator's steady step from the profile, the engine's own time per action
  and between steps from the cached calibration (``pipesim profile --engine``) included;
- replay: the same simulation with the run's own mean time per action and its own message
  times (``pipesim.predict.replay``): its error is the model's;
- speed drift: the reference kernel around the run against right after the profile (> 0: the
  machine ran slower during the run); "compute drift" is the run's busy time per rank against
  the profile's. See RESULTS_predict.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import statistics
import time
from typing import Any

import torch

from pipesim.calibration import load_engine_costs, with_engine
from pipesim.config import RunConfig
from pipesim.fileio import write_atomic
from pipesim.predict import predict, prediction_report, replay, speed_drift
from pipesim.processes.launch import launch
from pipesim.profiling.comm import measure_comm
from pipesim.profiling.profiler import STATISTICS, ProfileConfig, profile_model
from pipesim.runtime.predict import calibrate_engine, reference_time, shared_cores
from pipesim.runtime.train import TrainJob
from pipesim.schedules import get_schedule
from pipesim.timeline import Timeline

MODELS = {  # model -> RunConfig fields (batch_size = samples or sequences per microbatch)
    "mlp": dict(hidden_size=512, layers=8, batch_size=64),
    "gpt": dict(hidden_size=128, layers=6, batch_size=8, seq_len=64),
}


def _config(model: str, schedule: str, microbatches: int, steps: int, ranks: int = 2
            ) -> RunConfig:
    """``ranks`` x ``microbatches`` (at least 2 per rank); the model gets at least one layer
    per stage (GPT on a 4-rank V schedule: 8 layers, not 6)."""
    sched = get_schedule(schedule, ranks, max(microbatches, 2 * ranks))
    fields: dict[str, Any] = dict(MODELS[model])
    fields["layers"] = max(fields["layers"], sched.stages)
    return ProfileConfig(schedule=sched, model=model, steps=steps, optimizer="adam", lr=1e-3,
                         **fields)


def bench_one(model: str, name: str, ranks: int, args: argparse.Namespace, engine: Any
              ) -> dict[str, Any]:
    """Profile and ping-pong right before the run, so the machine is as alike as it gets."""
    cfg = _config(model, name, args.microbatches, args.steps, ranks)
    costs = profile_model(cfg, repeats=args.repeats, processes=args.processes,
                          statistic=args.statistic, seconds=args.profile_seconds)
    costs = with_engine(dataclasses.replace(costs, reference_time=reference_time()), engine)
    largest = int(max(c.activation_bytes for c in costs.layers[:-1]))
    comm = measure_comm(largest, repeats=100)
    predicted = predict(cfg, costs, *comm, cores=shared_cores(cfg))
    # as many steps as the predicted step needs to last --run-seconds (at least --steps)
    steps = max(args.steps, math.ceil(args.run_seconds / predicted.meta["step_seconds"]) + 1)
    cfg = dataclasses.replace(cfg, steps=steps)
    before = reference_time()
    result = launch(TrainJob(cfg), ranks)
    after = reference_time()
    measured = [Timeline.from_dict(t) for t in result.timelines]
    drift = speed_drift(costs.reference_time, [before, after])
    replayed = replay(cfg.schedule, predicted, measured)
    report = prediction_report(predicted, measured, replayed, drift)
    if args.save:  # the run itself, to replay again offline after a change to the model
        run = {"schedule": name, "ranks": ranks, "microbatches": cfg.schedule.microbatches,
               "speed_drift": drift, "predicted": predicted.to_dict(),
               "measured": [t.to_dict() for t in measured]}
        stamp = time.strftime("%H%M%S")
        write_atomic(os.path.join(args.save, f"{model}-{name}-{ranks}r-{stamp}.json"),
                     json.dumps(run))
    compute = statistics.mean(r["measured_busy"] / r["predicted_busy"] - 1
                              for r in report["per_rank"])
    return {"model": model, "schedule": name, "ranks": ranks, "steps": steps,
            "microbatches": cfg.schedule.microbatches, "load": os.getloadavg()[0],
            "measured_ms": report["measured_step_seconds"] * 1e3,
            "predicted_ms": report["predicted_step_seconds"] * 1e3,
            "error": report["prediction_error"],
            "replay_ms": report["replay_step_seconds"] * 1e3,
            "replay_error": report["replay_error"], "speed_drift": drift,
            "compute_drift": compute, "latency_us": comm.latency * 1e6,
            "send_us": comm.send_overhead * 1e6}


def _summary(rows: list[dict[str, Any]]) -> None:
    replays = [abs(r["replay_error"]) for r in rows]
    print(f"\nreplay |error|: median {statistics.median(replays):.1%}, worst "
          f"{max(replays):.1%} over {len(rows)} trials")
    for lo, hi in ((-1.0, -0.05), (-0.05, 0.05), (0.05, 0.10), (0.10, 100.0)):
        mine = [r for r in rows if r["speed_drift"] is not None and lo <= r["speed_drift"] < hi]
        if mine:
            errors = [r["error"] for r in mine]
            print(f"speed drift {lo:+.0%} to {hi:+.0%}: {len(mine)} trials, prediction error "
                  f"mean {statistics.mean(errors):+.1%}, worst {max(errors, key=abs):+.1%}; "
                  f"replay error mean {statistics.mean(r['replay_error'] for r in mine):+.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--schedules", nargs="+",
                        default=["gpipe", "1f1b", "zb-h1", "zbv", "dualpipev"])
    parser.add_argument("--ranks", nargs="+", type=int, default=[2, 4], choices=[2, 4])
    parser.add_argument("-m", "--microbatches", type=int, default=4,
                        help="per step; at least 2 per rank (4 ranks: 8)")
    parser.add_argument("--steps", type=int, default=20, help="at least this many steps a run")
    parser.add_argument("--run-seconds", type=float, default=2.0,
                        help="and enough for the predicted steps to last this long")
    parser.add_argument("--repeats", type=int, default=30,
                        help="profile passes per trial, at least")
    parser.add_argument("--profile-seconds", type=float, default=2.0,
                        help="and more until the passes took this long, in each process")
    parser.add_argument("--statistic", default="mean", choices=STATISTICS,
                        help="per layer and op over the profile's passes")
    parser.add_argument("--processes", type=int, default=2,
                        help="profile in this many processes at once (2: as many as the ranks)")
    parser.add_argument("--trials", type=int, default=2)
    parser.add_argument("--save", metavar="DIR",
                        help="also write each trial's prediction and measured steps there "
                             "(JSON), to replay them again offline")
    args = parser.parse_args()
    if args.save:
        os.makedirs(args.save, exist_ok=True)
    torch.set_num_threads(1)  # the parent forks the ranks: keep its thread pool unstarted
    engine = load_engine_costs() or calibrate_engine()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, {args.ranks} ranks x 1 "
          f"thread, m={args.microbatches} (at least 2 per rank), at least {args.steps} steps "
          f"and {args.run_seconds:g} s a run, profile: {args.statistic} of at least "
          f"{args.repeats} passes and {args.profile_seconds:g} s in "
          f"{args.processes} process(es), {args.trials} trials; engine calibration "
          f"({engine.measured}): {engine.action_overhead * 1e6:.0f} us per action, "
          f"{engine.step_overhead * 1e6:.0f} us per rank between steps, the ranks' meeting "
          f"{engine.sync * 1e6:.0f} us")
    configs = [(m, s, p) for p in args.ranks for m in args.models for s in args.schedules]
    rows: list[dict[str, Any]] = []
    print("| trial | ranks | m | model | schedule | steps | measured step (ms) | predicted (ms) |"
          " error | replay (ms) | replay error | speed drift | compute drift | load |")
    print("|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for trial in range(args.trials):
        turn = trial % len(configs)
        for model, name, ranks in configs[turn:] + configs[:turn]:
            r = bench_one(model, name, ranks, args, engine) | {"trial": trial}
            rows.append(r)
            drift = "n/a" if r["speed_drift"] is None else f"{r['speed_drift']:+.0%}"
            print(f"| {trial} | {ranks} | {r['microbatches']} | {model} | {name} | "
                  f"{r['steps']} | {r['measured_ms']:.1f} | "
                  f"{r['predicted_ms']:.1f} | {r['error']:+.1%} | {r['replay_ms']:.1f} | "
                  f"{r['replay_error']:+.1%} | {drift} | {r['compute_drift']:+.0%} | "
                  f"{r['load']:.1f} |", flush=True)
    _summary(rows)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
