"""How well does the simulator predict a real run? Profile, predict, run, replay, compare.

    .venv/bin/python benchmarks/bench_predict.py      # MLP and GPT, 5 schedules, 2 and 4 ranks
    .venv/bin/python benchmarks/bench_predict.py --models gpt --trials 5

Per trial, for each model and schedule (the order turns each trial, so no configuration always
runs first), ``--rounds`` rounds of: ``profile_model`` (at least ``--repeats`` whole passes and
``--profile-seconds`` of them in all, in ``--processes`` fresh processes at once; per layer and
op the ``--statistic``, the mean by default, the optimizer update included; the reference
kernel timed in those processes after every pass), then a real run on 2 or 4 ranks
(``--ranks``; one thread per rank, Adam; the ranks time the reference kernel every
``PROBE_EVERY`` steps, those steps left out) of at least ``--steps`` steps and as many as the
predicted step needs to last ``--run-seconds``, both shared out over the rounds. Once, after
the first profile: ``measure_comm`` (2 ranks, the engine's transport: the one-way time of the
largest activation and the sender's time per message, medians of 100). This machine's speed
moves by tens of percent from one second and one process to the next (RESULTS_predict.md):
profile and run take turns, so both see its slow and fast moments alike, and each lasts 8 s
a trial by default: the speed of one half second wanders by about 5% (standard deviation)
nearly independently of the next, so the more seconds measured, the less of it is left.

- predicted: the simulator's steady step from the rounds' mean profile, the engine's own time
  per action, between steps and at the ranks' meeting from the cached calibration (``pipesim
  profile --engine``) included; measured: the median step of all rounds' runs (each run's
  compared steps, ``predict.used_steps``: not the warm-up, steps 0 and 1, nor the probed ones);
- replay: the same simulation with each run's own times, step by step
  (``pipesim.predict.replay``), the median over all rounds' replayed steps: its error is the
  model's;
- speed drift: the reference kernel on the run's ranks against in the profile's processes
  (> 0: the machine ran slower during the run); compute drift: the run's busy time per rank
  against the prediction's; parent drift: the reference kernel in this process around each
  run against after each profile (the drift read before 2026-12-02 08:45). See
  RESULTS_predict.md.
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
from pipesim.layercosts import LayerCosts
from pipesim.predict import (
    predict,
    prediction_report,
    replay,
    run_reference,
    speed_drift,
    step_times,
    used_steps,
)
from pipesim.processes.launch import launch
from pipesim.profiling.comm import measure_comm
from pipesim.profiling.profiler import STATISTICS, ProfileConfig, profile_model
from pipesim.runtime.predict import PROBE_EVERY, calibrate_engine, shared_cores
from pipesim.runtime.reference import reference_call
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


def mean_costs(profiles: list[LayerCosts]) -> LayerCosts:
    """The rounds' profiles as one: each layer's times, the data time and the reference
    kernel's time their mean (the rounds profile for equal times, so a plain mean weighs
    every second alike)."""
    fields = ("forward", "backward_input", "backward_weight", "backward", "optimizer")
    layers = tuple(first._replace(**{f: statistics.fmean(getattr(p.layers[i], f)
                                                          for p in profiles) for f in fields})
                   for i, first in enumerate(profiles[0].layers))
    return dataclasses.replace(profiles[0], layers=layers, data_time=statistics.fmean(
        p.data_time for p in profiles), reference_time=statistics.fmean(
        p.reference_time for p in profiles))


def _here(seconds: float = 0.2) -> float:
    """The reference kernel's median time per call in this (the launching) process over
    ``seconds``: how drift was read before 2026-12-02 08:45, kept to compare."""
    times: list[float] = []
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop or len(times) < 5:
        times.append(reference_call(1))
    return statistics.median(times)


def bench_one(model: str, name: str, ranks: int, args: argparse.Namespace, engine: Any
              ) -> dict[str, Any]:
    """``--rounds`` rounds of (profile, run), the prediction from all the profiles, the
    measured and replayed steps of all the runs: profile and run share the machine's moods."""
    cfg = _config(model, name, args.microbatches, args.steps, ranks)
    rounds = args.rounds
    profiles: list[LayerCosts] = []
    runs: list[list[Timeline]] = []
    profiled_here: list[float] = []  # the reference kernel here, after each profile
    around_here: list[float] = []  # and before and after each run
    comm = None
    for _ in range(rounds):
        costs = profile_model(cfg, repeats=math.ceil(args.repeats / rounds),
                              processes=args.processes, statistic=args.statistic,
                              seconds=args.profile_seconds / rounds)
        profiles.append(costs)
        profiled_here.append(_here())
        if comm is None:  # and the run's length from the first round's prediction
            largest = int(max(c.activation_bytes for c in costs.layers[:-1]))
            comm = measure_comm(largest, repeats=100)
            first = predict(cfg, with_engine(profiles[0], engine), *comm,
                            cores=shared_cores(cfg))
            need = max(math.ceil(args.steps / rounds),
                       math.ceil(args.run_seconds / rounds / first.meta["step_seconds"]))
            # each run's compared steps: all but 0 and 1 (warm-up) and the probed ones
            steps = 2 + math.ceil(need * PROBE_EVERY / (PROBE_EVERY - 1))
            cfg = dataclasses.replace(cfg, steps=steps)
        around_here.append(_here())
        result = launch(TrainJob(cfg, probe_every=PROBE_EVERY), ranks)
        around_here.append(_here())
        runs.append([Timeline.from_dict(t) for t in result.timelines])
    costs = with_engine(mean_costs(profiles), engine)
    assert comm is not None
    predicted = predict(cfg, costs, *comm, cores=shared_cores(cfg))
    during = run_reference([t for measured in runs for t in measured])
    drift = speed_drift(costs.reference_time, [during] if during else [])
    pred = predicted.meta["step_seconds"]
    times, replays, busy = [], [], []
    for measured in runs:  # each run's compared steps (``used_steps``), pooled
        replayed = replay(cfg.schedule, predicted, measured)
        every = step_times(measured)
        times += [every[s] for s in used_steps(measured)]
        replays += replayed.meta.get("replayed_steps") or [replayed.meta["step_seconds"]]
        busy += [r["measured_busy"] / r["predicted_busy"] - 1
                 for r in prediction_report(predicted, measured)["per_rank"]]
    if args.save:  # the runs themselves, to replay again offline after a change to the model
        run = {"schedule": name, "ranks": ranks, "microbatches": cfg.schedule.microbatches,
               "speed_drift": drift, "predicted": predicted.to_dict(),
               "rounds": [[t.to_dict() for t in measured] for measured in runs]}
        stamp = time.strftime("%H%M%S")
        write_atomic(os.path.join(args.save, f"{model}-{name}-{ranks}r-{stamp}.json"),
                     json.dumps(run))
    want, again = statistics.median(times), statistics.median(replays)
    return {"model": model, "schedule": name, "ranks": ranks, "steps": len(times),
            "microbatches": cfg.schedule.microbatches, "load": os.getloadavg()[0],
            "measured_ms": want * 1e3, "predicted_ms": pred * 1e3,
            "error": (pred - want) / want, "replay_ms": again * 1e3,
            "replay_error": (again - want) / want, "speed_drift": drift,
            "compute_drift": statistics.fmean(busy),
            "parent_drift": speed_drift(statistics.fmean(profiled_here), around_here),
            "latency_us": comm.latency * 1e6,
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
    parser.add_argument("--steps", type=int, default=20,
                        help="at least this many steps compared a trial (over its rounds)")
    parser.add_argument("--run-seconds", type=float, default=8.0,
                        help="and enough for the predicted steps to last this long (8; 2 "
                             "before 2026-12-02 12:57)")
    parser.add_argument("--repeats", type=int, default=30,
                        help="profile passes per trial, at least")
    parser.add_argument("--profile-seconds", type=float, default=8.0,
                        help="and more until the passes took this long, in each process (8; "
                             "2 before 2026-12-02 12:57)")
    parser.add_argument("--statistic", default="mean", choices=STATISTICS,
                        help="per layer and op over the profile's passes")
    parser.add_argument("--processes", type=int, default=2,
                        help="profile in this many processes at once (2: as many as the ranks)")
    parser.add_argument("--rounds", type=int, default=8,
                        help="alternate this many (profile, run) rounds per trial, each a "
                             "share of --profile-seconds and --run-seconds (8; 4 before "
                             "2026-12-02 11:50)")
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
          f"{args.processes} process(es), {args.rounds} rounds of profile and run a trial, "
          f"{args.trials} trials; engine calibration "
          f"({engine.measured}): {engine.action_overhead * 1e6:.0f} us per action, "
          f"{engine.step_overhead * 1e6:.0f} us per rank between steps, the ranks' meeting "
          f"{engine.sync * 1e6:.0f} us, ranks sharing cores x{engine.shared_compute:.2f} CPU "
          f"time per action (0: not measured)")
    configs = [(m, s, p) for p in args.ranks for m in args.models for s in args.schedules]
    rows: list[dict[str, Any]] = []
    print("| trial | ranks | m | model | schedule | steps | measured step (ms) | predicted (ms) |"
          " error | replay (ms) | replay error | speed drift | compute drift | parent drift | "
          "load |")
    print("|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
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
                  f"{r['parent_drift']:+.0%} | "
                  f"{r['load']:.1f} |", flush=True)
    _summary(rows)
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
