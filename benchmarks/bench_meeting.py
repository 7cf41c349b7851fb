"""What the ranks' meeting once a step costs: gloo's all-gather against shared memory.

    .venv/bin/python benchmarks/bench_meeting.py --ranks 2
    .venv/bin/python benchmarks/bench_meeting.py --ranks 4

``Pipeline.step`` checks each step's batch with one all-gather of 4 ints on every rank
(``runtime/meeting.py``). Here every rank times ``--rounds`` rounds of it right after a
barrier (so the ranks arrive together and the time is the collective's own), alternating
blocks of gloo's all-gather (``agree.all_ints``) and the shared-memory meeting, twice each;
per rank, the median and mean microseconds of each. Both must return the same rows (checked
every round).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

import pipesim


def _job(rank: int, world: int, rounds: int) -> dict[str, Any]:
    import torch.distributed as dist

    from pipesim.runtime.agree import all_ints
    from pipesim.runtime.meeting import Meeting
    cpu = torch.device("cpu")
    meeting = Meeting(cpu, 4)
    ways = {"gloo": lambda v: all_ints(v, cpu), "meeting": meeting.all_ints}
    seconds: dict[str, list[float]] = {name: [] for name in ways}
    for name in [*ways, *ways]:
        for i in range(rounds):
            dist.barrier()
            t0 = time.perf_counter()
            rows = ways[name]([rank, i, 0, 0])
            seconds[name].append(time.perf_counter() - t0)
            if rows != [[q, i, 0, 0] for q in range(world)]:
                raise RuntimeError(f"{name}: wrong rows {rows}")
    return {"transport": meeting.transport,
            **{name: (statistics.median(v) * 1e6, statistics.fmean(v) * 1e6)
               for name, v in seconds.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = pipesim.launch(_job, args.ranks, args.rounds)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')} {args.ranks} ranks, {args.rounds} x 2 rounds "
          f"each way; the meeting's transport: {results[0]['transport']}")
    print("| rank | gloo all-gather: median (us) | mean | meeting: median (us) | mean |")
    print("|---:|---:|---:|---:|---:|")
    for rank, r in enumerate(results):
        print(f"| {rank} | {r['gloo'][0]:.0f} | {r['gloo'][1]:.0f} | {r['meeting'][0]:.0f} | "
              f"{r['meeting'][1]:.0f} |")


if __name__ == "__main__":
    main()
