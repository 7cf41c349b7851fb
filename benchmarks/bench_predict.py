"""How well does the simulator predict a real run? Profile, predict, run, compare.

    .venv/bin/python benchmarks/bench_predict.py                 # MLP and GPT, gpipe 1f1b zb-h1
    .venv/bin/python benchmarks/bench_predict.py --models gpt --trials 5

Per trial, for each model and schedule (the order turns each trial, so no configuration always
runs first): ``profile_model`` (``--repeats`` whole passes in ``--processes`` fresh processes at
once, as many as the run's ranks; median per layer and op, the optimizer update included) and
``measure_comm`` (2-rank gloo ping-pong of the largest activation and the sender's time per
message, medians of 100), then a real 2-rank run of ``--steps`` steps (one thread per rank,
Adam) and ``compare``: the step time (one step's end to the next's, the optimizer included) as
the median of steps 1 onwards, against the simulator's steady step.

Printed per trial and summarised per configuration (median over trials); the "compute drift"
column is how much longer the run's actions took than the profile said (the mean over ranks
of measured / predicted busy time - 1): where it is large, the machine's speed changed
between the profile and the run; where it is small and the error is not, the schedule model
is what missed. See RESULTS_predict.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any

import torch

from pipesim.runtime.launch import launch
from pipesim.predict import compare, predict
from pipesim.runtime.profile import ProfileConfig, measure_comm, profile_model
from pipesim.runtime.train import RunConfig, TrainJob
from pipesim.schedules import get_schedule
from pipesim.timeline import Timeline

MODELS = {  # model -> RunConfig fields (batch_size = samples or sequences per microbatch)
    "mlp": dict(hidden_size=512, layers=8, batch_size=64),
    "gpt": dict(hidden_size=128, layers=6, batch_size=8, seq_len=64),
}
TARGET = 0.15  # issue 5: within 15% of the measured median


def _config(model: str, schedule: str, microbatches: int, steps: int) -> RunConfig:
    return ProfileConfig(schedule=get_schedule(schedule, 2, microbatches), model=model,
                         steps=steps, optimizer="adam", lr=1e-3, **MODELS[model])  # type: ignore[arg-type]


def bench_one(model: str, name: str, args: argparse.Namespace) -> dict[str, Any]:
    """Profile and ping-pong right before the run, so the machine is as alike as it gets."""
    cfg = _config(model, name, args.microbatches, args.steps)
    costs = profile_model(cfg, repeats=args.repeats, processes=args.processes)
    largest = int(max(c.activation_bytes for c in costs.layers[:-1]))
    comm = measure_comm(largest, repeats=100)
    result = launch(TrainJob(cfg), 2)
    report = compare(predict(cfg, costs, *comm),
                     [Timeline.from_dict(t) for t in result.timelines])
    drift = statistics.mean(r["measured_busy"] / r["predicted_busy"] - 1
                            for r in report["per_rank"])
    return {"model": model, "schedule": name, "load": os.getloadavg()[0],
            "measured_ms": report["measured_step_seconds"] * 1e3,
            "predicted_ms": report["predicted_step_seconds"] * 1e3,
            "error": report["prediction_error"],
            "pipeline_measured_ms": report["measured_pipeline_seconds"] * 1e3,
            "pipeline_predicted_ms": report["predicted_pipeline_seconds"] * 1e3,
            "compute_drift": drift,
            "latency_us": comm.latency * 1e6, "send_us": comm.send_overhead * 1e6}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--schedules", nargs="+", default=["gpipe", "1f1b", "zb-h1"])
    parser.add_argument("-m", "--microbatches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--repeats", type=int, default=30, help="profile passes per trial")
    parser.add_argument("--processes", type=int, default=2,
                        help="profile in this many processes at once (2: as many as the ranks)")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # the parent forks the ranks: keep its thread pool unstarted
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, 2 ranks x 1 thread, "
          f"m={args.microbatches}, {args.steps} steps, profile {args.repeats} passes in "
          f"{args.processes} process(es), {args.trials} trials")
    configs = [(m, s) for m in args.models for s in args.schedules]
    rows: list[dict[str, Any]] = []
    print("| trial | model | schedule | measured step (ms) | predicted (ms) | error |"
          " pipeline alone: measured / predicted (ms) | compute drift | load |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    for trial in range(args.trials):
        turn = trial % len(configs)
        for model, name in configs[turn:] + configs[:turn]:
            r = bench_one(model, name, args) | {"trial": trial}
            rows.append(r)
            print(f"| {trial} | {model} | {name} | {r['measured_ms']:.1f} | "
                  f"{r['predicted_ms']:.1f} | {r['error']:+.1%} | "
                  f"{r['pipeline_measured_ms']:.1f} / {r['pipeline_predicted_ms']:.1f} | "
                  f"{r['compute_drift']:+.0%} | {r['load']:.1f} |", flush=True)
    print("\n| model | schedule | measured step, median of trials (ms) | predicted, median (ms) |"
          f" error of the medians | errors per trial | within {TARGET:.0%} |")
    print("|---|---|---:|---:|---:|---|---|")
    for model, name in configs:
        mine = [r for r in rows if (r["model"], r["schedule"]) == (model, name)]
        measured = statistics.median(r["measured_ms"] for r in mine)
        predicted = statistics.median(r["predicted_ms"] for r in mine)
        error = (predicted - measured) / measured
        print(f"| {model} | {name} | {measured:.1f} | {predicted:.1f} | {error:+.1%} | "
              + ", ".join(f"{r['error']:+.0%}" for r in mine)
              + f" | {'yes' if abs(error) <= TARGET else 'no'} |")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
