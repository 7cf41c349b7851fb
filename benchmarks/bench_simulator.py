"""How fast is the simulator? Run from the repository root:

    .venv/bin/python benchmarks/bench_simulator.py [--repeat 3] [--out RESULTS.md]

Measures (best of --repeat, on an otherwise idle machine if you can):
  1. ``simulate()`` on interleaved-1f1b, 64 ranks x 1024 microbatches x v=2 (262,144 actions)
     and on zbv, 32 ranks x 256 microbatches (24,576 actions): wall and CPU seconds;
  2. the whole command, process start included:
     ``python -m pipesim simulate interleaved-1f1b -p 64 -m 1024 -v 2 --json > /dev/null``;
  3. peak RSS of this process after the big simulation, and of the command;
  4. linearity: microseconds per action at 4 sizes of interleaved-1f1b (64 ranks, v=2).
Schedule generation is timed apart from simulation.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from pipesim import get_schedule, simulate

CLI = [sys.executable, "-m", "pipesim", "simulate", "interleaved-1f1b", "-p", "64", "-m",
       "1024", "-v", "2", "--json"]


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, float]:
    """Least wall and least CPU seconds of ``repeat`` calls."""
    walls, cpus = [], []
    for _ in range(repeat):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return min(walls), min(cpus)


def bench_simulate(name: str, p: int, m: int, v: int | None, repeat: int) -> dict[str, Any]:
    t = time.perf_counter()
    sched = get_schedule(name, p, m, v)
    gen = time.perf_counter() - t
    wall, cpu = best_of(repeat, lambda: simulate(sched))
    return {"case": f"{name} p={p} m={m}" + (f" v={v}" if v else ""),
            "actions": sched.num_actions, "generate_s": gen, "wall_s": wall, "cpu_s": cpu}


def bench_cli(repeat: int) -> dict[str, Any]:
    walls = []
    env = {**os.environ, "PYTHONPATH": os.path.join(os.path.dirname(__file__), "..", "src")}
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(CLI, stdout=subprocess.DEVNULL, check=True, env=env)
        walls.append(time.perf_counter() - t)
    rss_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return {"wall_s": min(walls), "peak_rss_mb": rss_kb / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", help="also write the markdown here")
    args = parser.parse_args()
    big = bench_simulate("interleaved-1f1b", 64, 1024, 2, args.repeat)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    zbv = bench_simulate("zbv", 32, 256, None, args.repeat)
    linear = [bench_simulate("interleaved-1f1b", 64, m, 2, args.repeat)
              for m in (128, 256, 512, 1024)]
    cli = bench_cli(args.repeat)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}, {platform.platform()}",
        f"Command: `.venv/bin/python benchmarks/bench_simulator.py --repeat {args.repeat}`",
        "",
        "| what | actions | generate (s) | simulate wall (s) | simulate CPU (s) |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in (big, zbv):
        lines.append(f"| {row['case']} | {row['actions']:,} | {row['generate_s']:.2f} | "
                     f"{row['wall_s']:.3f} | {row['cpu_s']:.3f} |")
    lines += [
        "",
        f"Peak RSS of the benchmark process after the 262,144-action simulation: "
        f"{rss_mb:.0f} MB.",
        f"End to end, `{' '.join(['python', *CLI[1:]])} > /dev/null` (process start, schedule "
        f"generation, simulation, metrics, JSON): {cli['wall_s']:.2f} s wall, peak RSS "
        f"{cli['peak_rss_mb']:.0f} MB.",
        "",
        "Linearity (interleaved-1f1b, 64 ranks, v=2):",
        "",
        "| microbatches | actions | simulate CPU (s) | µs per action |",
        "|---:|---:|---:|---:|",
    ]
    for row in linear:
        lines.append(f"| {row['case'].split('m=')[1].split()[0]} | {row['actions']:,} | "
                     f"{row['cpu_s']:.3f} | {row['cpu_s'] / row['actions'] * 1e6:.2f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
