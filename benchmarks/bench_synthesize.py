"""Synthesized schedules against zb-h1 and the bounds: the issue's table, and p=16, m=64 timing.

    PYTHONPATH=src .venv/bin/python benchmarks/bench_synthesize.py [--time-limit 10]

Objective ``step`` (``steady.steady_step``), memory = ``max_stashed``. Per case: zb-h1's
steady step on the same costs, the synthesized one, the work bound (LB) and the memory bound
(from the cap; reaching it proves the schedule optimal within the cap), which candidate won,
how many were measured and the seconds the search took. Then the V placement against zbv and
dualpipev on their own costs (uniform F = I = W = 0.5 per half-stage). Last, random costs (seed 1;
p 2..8, m p..4p, F, I, W integers 1..6 per stage, latency 0 or 0.5, cap p, 1.5p or 2p): how
often the bound is reached, the gap to it, and the gain over the best registered schedule
(gpipe, 1f1b, zb-h1) that fits the cap; for ``step`` and again for ``makespan``.
"""

from __future__ import annotations

import argparse
import random
import statistics

from pipesim.costs import CostModel
from pipesim.ir import Schedule
from pipesim.planner.synthesize import synthesis
from pipesim.schedules import get_schedule
from pipesim.simulate import simulate
from pipesim.steady import steady_step
from pipesim.validate import peak_activations

P4 = CostModel.from_lists(4, [3, 3, 3, 4], [3, 3, 3, 5], [2, 2, 2, 3])
P8 = CostModel.from_lists(8, [2, 3, 3, 3, 3, 3, 3, 4], [2, 3, 3, 3, 3, 3, 3, 5],
                          [1, 3, 3, 3, 3, 3, 3, 2], comm_latency=0.2)
# p=16: an embedding-light first stage, a vocabulary head twice a block, messages not free
P16 = CostModel.from_lists(16, [2] + [3] * 14 + [6], [2] + [3] * 14 + [7], [1] + [3] * 14 + [3],
                           comm_latency=0.2, send_overhead=0.05)

_rng = random.Random(16)  # F, I, W integers 1..6 per stage
R16 = CostModel.from_lists(16, *([_rng.randint(1, 6) for _ in range(16)] for _ in "FIW"),
                           comm_latency=0.5)

CASES = [  # label, p, m, costs, caps
    ("F=I=W=1, p=8, m=32", 8, 32, CostModel.uniform(8), (16, 8)),
    ("p=4, m=12, uneven", 4, 12, P4, (8, 4)),
    ("p=8, m=24, uneven, latency 0.2", 8, 24, P8, (16, 8)),
    ("F=I=W=1, p=16, m=64", 16, 64, CostModel.uniform(16), (32, 16)),
    ("p=16, m=64, heavy head, latency 0.2", 16, 64, P16, (32, 16)),
    ("p=16, m=64, random costs, latency 0.5", 16, 64, R16, (24,)),
]


def table(limit: float) -> None:
    print(f"| case | memory | zb-h1 | synthesized | LB | memory bound | gap to LB | won by | "
          f"candidates | seconds |\n|{'---|' * 10}")
    for label, p, m, costs, caps in CASES:
        zb = steady_step(get_schedule("zb-h1", p, m), costs).step
        for cap in caps:
            found = synthesis(p, m, costs, max_stashed=cap, time_limit=limit)
            bound = found.bounds
            won = found.origin.split(" (")[0]
            print(f"| {label} | {cap} | {zb:.2f} | {found.steady_step:.2f} | {bound.work:.2f} "
                  f"| {bound.memory:.2f} | {found.gap:.1%} | {won} | {found.evaluations} | "
                  f"{found.seconds:.2f} |")


def v_table(limit: float) -> None:
    print("\n| V placement | zbv | dualpipev | synthesized | LB | won by | seconds |\n"
          f"|{'---|' * 7}")
    for p, m in ((4, 8), (4, 16), (8, 16), (8, 32)):
        costs = CostModel.uniform(2 * p, F=0.5, I=0.5, W=0.5)
        theirs = [steady_step(get_schedule(n, p, m), costs).step for n in ("zbv", "dualpipev")]
        found = synthesis(p, m, costs, placement="v", time_limit=limit)
        print(f"| p={p}, m={m} | {theirs[0]:.1f} | {theirs[1]:.1f} | {found.steady_step:.1f} | "
              f"{found.bounds.work:.1f} | {found.origin.split(' (')[0]} | {found.seconds:.2f} |")


def _measure(sched: Schedule, costs: CostModel, objective: str) -> float:
    return steady_step(sched, costs).step if objective == "step" else \
        simulate(sched, costs).makespan


def random_table(limit: float, objective: str = "step", cases: int = 30) -> None:
    rng = random.Random(1)
    gaps, gains, seconds, at_bound = [], [], 0.0, 0
    for _ in range(cases):
        p = rng.randint(2, 8)
        m = rng.randint(p, 4 * p)
        times = [[rng.randint(1, 6) for _ in range(p)] for _ in "FIW"]
        costs = CostModel.from_lists(p, *times, comm_latency=rng.choice([0.0, 0.5]))
        cap = rng.choice([p, 3 * p // 2, 2 * p])
        found = synthesis(p, m, costs, max_stashed=cap, objective=objective, time_limit=limit)
        seconds += found.seconds
        gap = found.value / found.bounds.best - 1
        gaps.append(gap)
        at_bound += gap < 1e-9
        fitting = [get_schedule(n, p, m) for n in ("gpipe", "1f1b", "zb-h1")]
        best = min(_measure(s, costs, objective) for s in fitting
                   if max(peak_activations(s)) <= cap)
        gains.append(1 - found.value / best)
    print(f"\nrandom costs, objective {objective}, {cases} cases, time limit {limit:g} s: "
          f"{at_bound} at the bound; gap to "
          f"the bound median {statistics.median(gaps):.1%}, max {max(gaps):.1%}; {objective} "
          f"below the best fitting registered schedule: median {statistics.median(gains):.1%}, max "
          f"{max(gains):.1%}, never above: {min(gains) >= -1e-9}; {seconds:.1f} s in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=10.0)
    args = parser.parse_args()
    table(args.time_limit)
    v_table(args.time_limit)
    random_table(min(args.time_limit, 3.0))
    random_table(min(args.time_limit, 3.0), "makespan")


if __name__ == "__main__":
    main()
