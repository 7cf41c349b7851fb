"""How well does the simulator predict a real run? Profile, predict, run, compare.

    .venv/bin/python benchmarks/bench_predict.py                 # MLP and GPT, gpipe 1f1b zb-h1
    .venv/bin/python benchmarks/bench_predict.py --models gpt --steps 40

For each model and schedule, right before its run (so the machine's load is alike):
``profile_model`` three ways (median on one process; median on 2 processes at once; minimum on
2 processes) and ``measure_comm`` (2-rank gloo ping-pong of the largest activation, median and
minimum); then a real 2-rank run of ``--steps`` steps (one thread per rank) and ``compare``
(median step span, step 0 skipped). The last two columns are a lower envelope: the prediction
from the fastest times against the fastest step. Prints a markdown table; see
RESULTS_predict.md.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from typing import Any

import torch

from pipesim.runtime.launch import launch
from pipesim.runtime.predict import compare, predict, step_span
from pipesim.runtime.profile import ProfileConfig, measure_comm, profile_model
from pipesim.runtime.train import RunConfig, TrainJob
from pipesim.schedules import get_schedule
from pipesim.timeline import Timeline

MODELS = {  # model -> RunConfig fields (batch_size = samples or sequences per microbatch)
    "mlp": dict(hidden_size=512, layers=8, batch_size=64),
    "gpt": dict(hidden_size=128, layers=6, batch_size=8, seq_len=64),
}


def _config(model: str, schedule: str, microbatches: int, steps: int) -> RunConfig:
    return ProfileConfig(schedule=get_schedule(schedule, 2, microbatches), model=model,
                         steps=steps, optimizer="adam", lr=1e-3, **MODELS[model])  # type: ignore[arg-type]


def _error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured


def bench_one(model: str, name: str, microbatches: int, steps: int, repeats: int
              ) -> dict[str, Any]:
    """Profile (three ways) and ping-pong right before the run, so the load then is alike."""
    cfg = _config(model, name, microbatches, steps)
    solo = profile_model(cfg, repeats=repeats)
    both = profile_model(cfg, repeats=repeats, processes=2)
    fastest = profile_model(cfg, repeats=repeats, processes=2, statistic="min")
    largest = int(max(c.activation_bytes for c in solo.layers[:-1]))
    latency, bandwidth = measure_comm(largest, repeats=100)
    min_latency, min_bandwidth = measure_comm(largest, repeats=100, statistic="min")
    result = launch(TrainJob(cfg), 2)
    measured = [Timeline.from_dict(t) for t in result.timelines]
    report = compare(predict(cfg, both, latency, bandwidth), measured)
    spans = [x["measured_seconds"] for x in report["per_step"][1:]]
    row: dict[str, Any] = {
        "model": model, "schedule": name, "load": os.getloadavg()[0],
        "latency_us": latency * 1e6, "min_latency_us": min_latency * 1e6,
        "measured_ms": report["measured_step_seconds"] * 1e3,
        "both_ms": report["predicted_step_seconds"] * 1e3, "both_err": report["prediction_error"],
        "fastest_step_ms": min(spans) * 1e3}
    solo_s = compare(predict(cfg, solo, latency, bandwidth), measured)["predicted_step_seconds"]
    row["solo_ms"], row["solo_err"] = solo_s * 1e3, _error(solo_s * 1e3, row["measured_ms"])
    low = step_span(predict(cfg, fastest, min_latency, min_bandwidth)) * 1e3
    row["min_ms"], row["min_err"] = low, _error(low, row["fastest_step_ms"])
    return row


def bench(models: list[str], schedules: list[str], microbatches: int, steps: int,
          repeats: int) -> list[dict[str, Any]]:
    return [bench_one(model, name, microbatches, steps, repeats)
            for model in models for name in schedules]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--schedules", nargs="+", default=["gpipe", "1f1b", "zb-h1"])
    parser.add_argument("-m", "--microbatches", type=int, default=4)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=10, help="profile repeats per layer")
    args = parser.parse_args()
    torch.set_num_threads(1)  # the parent forks the ranks: keep its thread pool unstarted
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {platform.machine()}, {os.cpu_count()} CPUs, "
          f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, 2 ranks x 1 thread, "
          f"m={args.microbatches}, {args.steps} steps")
    rows = bench(args.models, args.schedules, args.microbatches, args.steps, args.repeats)
    print("| model | schedule | measured step, median (ms) | predicted: 1-process profile |"
          " 2-process profile | fastest measured step | predicted from fastest times |"
          " latency median / min | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['schedule']} | {r['measured_ms']:.1f} | "
              f"{r['solo_ms']:.1f} ({r['solo_err']:+.0%}) | "
              f"{r['both_ms']:.1f} ({r['both_err']:+.0%}) | {r['fastest_step_ms']:.1f} | "
              f"{r['min_ms']:.1f} ({r['min_err']:+.0%}) | "
              f"{r['latency_us']:.0f} / {r['min_latency_us']:.0f} us | {r['load']:.1f} |")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
