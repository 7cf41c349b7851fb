"""How steady is this machine's speed? The reference kernel in processes at once, per window.

    .venv/bin/python benchmarks/bench_noise.py           # 2 processes, 120 s, 0.25 s windows
    .venv/bin/python benchmarks/bench_noise.py --processes 2 --seconds 60

Each process (forked, one torch thread, as a rank runs) times the reference kernel
(``pipesim.runtime.reference``, ``[64,512] @ [512,512]``) back to back and keeps its median per
window. Printed: each process's windows (us), and what that means for a prediction: taking
the two processes' mean as the machine's speed, the ratio of its mean over a "run" window to
its mean over the "profile" window before it, for every start in the trace, when one profile
of P seconds is followed by one run of P seconds, and when the two take turns in R rounds
(each a share of the seconds, one window between each part for the start-up). That ratio - 1
is the prediction error a perfect model would still make.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import torch

from pipesim.runtime.reference import reference_call


def _windows(seconds: float, window: float) -> list[float]:
    torch.set_num_threads(1)
    out = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        times = []
        stop = time.perf_counter() + window
        while time.perf_counter() < stop:
            times.append(reference_call(1))
        out.append(statistics.median(times))
    return out


def trace(processes: int, seconds: float, window: float) -> list[list[float]]:
    """Each process's median kernel time per window, all started at once."""
    folder = tempfile.mkdtemp(prefix="pipesim-noise-")
    pids = []
    for i in range(processes):
        pid = os.fork()
        if pid == 0:
            try:
                with open(os.path.join(folder, f"{i}.json"), "w", encoding="utf-8") as fh:
                    json.dump(_windows(seconds, window), fh)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    out = []
    for i in range(processes):
        path = os.path.join(folder, f"{i}.json")
        with open(path, encoding="utf-8") as fh:
            out.append(json.load(fh))
        os.remove(path)
    os.rmdir(folder)
    return out


def drift(speed: list[float], window: float, each: float, rounds: int) -> list[float]:
    """Run over profile - 1 for every start: ``rounds`` turns of (profile, run), each part
    ``each / rounds`` seconds, a window apart."""
    part = max(1, round(each / rounds / window))
    span = rounds * 2 * (part + 1)
    out = []
    for start in range(len(speed) - span + 1):
        profile, run, k = [], [], start
        for _ in range(rounds):
            profile += speed[k:k + part]
            k += part + 1
            run += speed[k:k + part]
            k += part + 1
        out.append(statistics.fmean(run) / statistics.fmean(profile) - 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--window", type=float, default=0.25)
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, {os.cpu_count()} CPUs, load "
          f"{os.getloadavg()[0]:.1f}: the reference kernel in {args.processes} processes at "
          f"once, median per {args.window:g} s window, {args.seconds:g} s")
    series = trace(args.processes, args.seconds, args.window)
    for i, s in enumerate(series):
        us = sorted(x * 1e6 for x in s)
        print(f"process {i}: median {statistics.median(us):.0f} us, min {us[0]:.0f}, p90 "
              f"{us[int(0.9 * len(us))]:.0f}, max {us[-1]:.0f}")
        print("  " + " ".join(f"{x * 1e6:.0f}" for x in s))
    n = min(map(len, series))
    speed = [statistics.fmean(s[k] for s in series) for k in range(n)]
    print("\n| profile, then run (s each) | rounds | starts | abs drift: median | p90 | worst "
          "| within 5% |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for each in (2.0, 4.0):
        for rounds in (1, 2, 4):
            d = sorted(abs(x) for x in drift(speed, args.window, each, rounds))
            if d:
                print(f"| {each:g} | {rounds} | {len(d)} | {statistics.median(d):.1%} | "
                      f"{d[int(0.9 * len(d))]:.1%} | {d[-1]:.1%} | "
                      f"{sum(x <= 0.05 for x in d) / len(d):.0%} |")


if __name__ == "__main__":
    main()
