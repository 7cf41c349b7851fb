"""How fast ``plan`` searches: configurations simulated per second on the example cost files.

    .venv/bin/python benchmarks/bench_plan.py

Each search runs without a memory limit, so every configuration is simulated (the slow path);
a limit makes rejected ones cheap (their memory is checked before simulating). Prints one line
per search and a total; the time includes generating schedules, partitioning and the memory walk.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipesim.layercosts import LayerCosts, load_layer_costs
from pipesim.planner.search import plan

COSTS = Path(__file__).resolve().parent.parent / "examples" / "costs"

Search = tuple[str, int, int, tuple[int, ...], "list[int] | None"]
# (file, ranks, batch, virtual stages, microbatch counts or None for the default: divisors <= 4p)
SMALL: list[Search] = [  # about 1,000 configurations of 2 to 16 ranks
    ("gpt-10b-48l.json", 2, 64, (1, 2, 3, 4), None),
    ("gpt-10b-48l.json", 4, 96, (1, 2, 3, 4), None),
    ("gpt-10b-48l.json", 4, 128, (1, 2, 3, 4), None),
    ("gpt-10b-48l.json", 8, 96, (1, 2, 3), None),
    ("gpt-10b-48l.json", 8, 128, (1, 2, 3), None),
    ("gpt-10b-48l.json", 8, 192, (1, 2, 3, 4), None),
    ("gpt-10b-48l.json", 16, 64, (1, 2, 3), None),
]
CLUSTER: list[Search] = [  # one search at 64 ranks: few configurations, each large
    ("gpt-58b-128l.json", 64, 256, (1, 2), [64, 128, 256]),
]


def run_search(costs: LayerCosts, ranks: int, batch: int, virtual: tuple[int, ...],
               counts: list[int] | None) -> tuple[int, int, float]:
    start = time.perf_counter()
    result = plan(costs, ranks, batch, virtual=virtual, microbatch_counts=counts)
    elapsed = time.perf_counter() - start
    return len(result.candidates), len(result.skipped), elapsed


def run_group(label: str, searches: list[Search]) -> None:
    total_configs, total_seconds = 0, 0.0
    for name, ranks, batch, virtual, counts in searches:
        costs = load_layer_costs(str(COSTS / name))
        configs, skipped, seconds = run_search(costs, ranks, batch, virtual, counts)
        total_configs += configs
        total_seconds += seconds
        print(f"{name:<18} ranks={ranks:<3} batch={batch:<4} v={','.join(map(str, virtual)):<8} "
              f"{configs:>4} simulated ({skipped} skipped) in {seconds:6.2f} s "
              f"= {configs / seconds:6.1f}/s")
    print(f"{label}: {total_configs} configurations simulated in {total_seconds:.2f} s "
          f"= {total_configs / total_seconds:.1f}/s\n")


def main() -> None:
    run_group("2-16 ranks", SMALL)
    run_group("64 ranks", CLUSTER)


if __name__ == "__main__":
    main()
