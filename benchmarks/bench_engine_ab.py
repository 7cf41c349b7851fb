"""Did moving `pipesim run` onto pipesim.Pipeline slow it? Old tree vs this one, interleaved.

    python benchmarks/bench_engine_ab.py --old /path/to/old/checkout [--trials 3]

Runs the same `pipesim run` (SGD, --json) from each source tree in turn, trial after trial, so
both see the same machine; reports each run's median step and the new/old ratio per case.
Cases: engine-bound (hidden 8, batch 1, 64 microbatches: the engine's own time per action) and
compute-bound (MLP 1024 x 8 layers, 8 microbatches of 32).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

CASES = {
    "engine-bound 1f1b h8 b1 m64": ["1f1b", "-m", "64", "-b", "1", "--hidden-size", "8"],
    "engine-bound zb-h1 h8 b1 m64": ["zb-h1", "-m", "64", "-b", "1", "--hidden-size", "8"],
    "compute 1f1b h1024 x8 m8 b32": ["1f1b", "-m", "8", "-b", "32", "--hidden-size", "1024",
                                     "--layers", "8"],
    "compute zb-h1 h1024 x8 m8 b32": ["zb-h1", "-m", "8", "-b", "32", "--hidden-size", "1024",
                                      "--layers", "8"],
}


def step_ms(src: Path, args: list[str], steps: int) -> float:
    cmd = [sys.executable, "-m", "pipesim", "run", "--schedule", args[0], "-w", "2", *args[1:],
           "--optimizer", "sgd", "--steps", str(steps), "--quiet", "--json"]
    env = os.environ | {"PYTHONPATH": str(src)}
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    steps_s = json.loads(out)["step_seconds"][1:]  # the first step includes warm-up
    return 1e3 * statistics.median(steps_s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="an older checkout (its src/ is used)")
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--only", default="", help="run the cases whose name contains this")
    args = parser.parse_args()
    trees = {"old": Path(args.old) / "src", "new": Path(__file__).resolve().parents[1] / "src"}
    print(f"load: {os.getloadavg()[0]:.1f}")
    print("| case | old step (ms), per trial | new step (ms), per trial | new / old (medians) |")
    print("|---|---|---|---:|")
    for name, case in ((n, c) for n, c in CASES.items() if args.only in n):
        got: dict[str, list[float]] = {"old": [], "new": []}
        for _ in range(args.trials):
            for tree in ("old", "new"):
                got[tree].append(step_ms(trees[tree], case, args.steps))
        ratio = statistics.median(got["new"]) / statistics.median(got["old"])
        print(f"| {name} | {', '.join(f'{x:.1f}' for x in got['old'])} | "
              f"{', '.join(f'{x:.1f}' for x in got['new'])} | {ratio:.2f} |", flush=True)
    print(f"load: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
