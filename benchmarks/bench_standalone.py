"""The head-to-head's cross-check: each engine timed alone in its own fresh ranks, alternated.

    .venv/bin/python benchmarks/bench_standalone.py [--ranks 2] [--rounds 3] [--steps 20]

The A/B of ``run.py --only torch`` alternates both engines step by step in the same ranks. Here
each case launches fresh ranks per side and round (pipesim alone, then torch alone, then the
other way round in the next round, ``--rounds`` times), each run still passing the same gradient
check first (both sides are built and stepped once; only one side is timed). A side's figure is
the median over rounds of its run's median step; the question is whether the ranking of the
A/B holds when the engines do not share processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.headtohead import Case, run_case

SCHEDULES = ("gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zbv", "dualpipev")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2, choices=[2, 4])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--schedule", action="append", choices=SCHEDULES)
    args = parser.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.1f}, "
          f"{args.ranks} ranks, {args.rounds} rounds x {args.steps} timed steps per side")
    print("| schedule | pipesim step (ms), per round | torch step (ms), per round | "
          "pipesim/torch (medians) |")
    print("|---|---|---|---:|")
    for name in args.schedule or SCHEDULES:
        got: dict[str, list[float]] = {"pipesim": [], "torch": []}
        for r in range(args.rounds):
            for side in ("pipesim", "torch") if r % 2 == 0 else ("torch", "pipesim"):
                case = Case(name, args.ranks, steps=args.steps, timed=side)
                got[side].append(run_case(case)[f"{side}_step_s"] * 1e3)
        ratio = statistics.median(got["torch"]) / statistics.median(got["pipesim"])
        print(f"| {name} | {', '.join(f'{x:.1f}' for x in got['pipesim'])} | "
              f"{', '.join(f'{x:.1f}' for x in got['torch'])} | {ratio:.2f}x |", flush=True)
    print(f"load at the end: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
