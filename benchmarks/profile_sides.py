"""torch.profiler on both engines of a head-to-head: each side's CPU time by operator kind.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/profile_sides.py zbv --ranks 2 --steps 6

Builds both sides as the head-to-head does (benchmarks/harness/sides.py), runs the gradient
check's step (refusing to go on if any gradient disagrees), then alternates ``steps`` profiled
steps per side. Per rank and side, the self CPU time (ms per step) of the operators the
profiler saw, by kind:

    matmul   aten::mm, addmm, bmm, matmul kernels
    alloc    aten::empty*, zeros, ones, full, new_* (allocation and fill)
    copy     aten::copy_, clone, contiguous, to
    comm     gloo/c10d calls (isend, irecv, wait, barrier)
    other    every other operator (elementwise, reductions, autograd's bookkeeping ops)
    outside  wall time of the step minus the operators' self time: Python, the engine's own
             code, and waiting that no operator records
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from harness.common import format_table
from harness.gradcheck import refuse_unless_equal
from harness.headtohead import Case, build_sides, check_gradients

KINDS = ("matmul", "alloc", "copy", "comm", "other", "outside")


def kind_of(name: str) -> str:
    n = name.lower()
    if any(k in n for k in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul",
                            "aten::linear")):
        return "matmul"
    if any(k in n for k in ("aten::empty", "aten::zeros", "aten::ones", "aten::full",
                            "aten::new_", "aten::resize_")):
        return "alloc"
    if any(k in n for k in ("aten::copy_", "aten::clone", "aten::contiguous", "aten::to",
                            "aten::_to_copy")):
        return "copy"
    if any(k in n for k in ("gloo", "c10d", "send", "recv", "barrier", "wait")):
        return "comm"
    return "other"


class _Worker:
    def __init__(self, case: Case) -> None:
        self.case = case

    def __call__(self, rank: int, world: int, *_: Any) -> list[Any] | None:
        import torch.distributed as dist
        from torch.profiler import ProfilerActivity, profile

        sides, probe, sched = build_sides(self.case, rank, world, None)
        check = check_gradients(self.case, sides, probe, rank, sched.stages)
        if not check["grad_ok"]:
            return [check] if rank == 0 else None
        ms: dict[str, dict[str, float]] = {s.name: dict.fromkeys(KINDS, 0.0) for s in sides}
        ops: dict[str, dict[str, list[float]]] = {s.name: {} for s in sides}  # name: count, ms
        for i in range(self.case.steps + 1):  # step 0 of each side: a warm-up
            for side in sides if i % 2 == 0 else sides[::-1]:
                dist.barrier()
                side.zero_grad()
                with profile(activities=[ProfilerActivity.CPU]) as prof:
                    t0 = time.perf_counter()
                    side.step(i % (self.case.warmup + self.case.steps))
                    wall = (time.perf_counter() - t0) * 1e3
                side.opt_step()
                if i == 0:
                    continue
                own = 0.0
                for event in prof.key_averages():
                    self_ms = event.self_cpu_time_total / 1e3
                    ms[side.name][kind_of(event.key)] += self_ms
                    own += self_ms
                    got = ops[side.name].setdefault(event.key, [0.0, 0.0])
                    got[0] += event.count
                    got[1] += self_ms
                ms[side.name]["outside"] += wall - own
        out: list[Any] | None = [None] * world if rank == 0 else None
        dist.gather_object({"kinds": ms, "ops": ops}, out, dst=0)
        return [check, out] if rank == 0 else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("schedule")
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="profiled steps per side")
    p.add_argument("--ops", type=int, default=0, metavar="N",
                   help="also list each side's N operators with the most self time, per rank")
    args = p.parse_args()
    from pipesim.processes.launch import LaunchOptions, launch

    torch.set_num_threads(1)
    case = Case(args.schedule, args.ranks, steps=args.steps, warmup=1)
    got = launch(_Worker(case), args.ranks, LaunchOptions(threads=1))
    refuse_unless_equal(f"{args.schedule} on {args.ranks} ranks", got[0])
    rows = []
    timed = args.steps
    for rank, part in enumerate(got[1]):
        for side, kinds in part["kinds"].items():
            rows.append({"rank": rank, "side": side,
                         **{k: v / timed for k, v in kinds.items()},
                         "step": sum(kinds.values()) / timed})
    print(f"{args.schedule}, {args.ranks} ranks, ms per step (self CPU time by operator kind; "
          f"{timed} profiled steps per side), load {os.getloadavg()[0]:.1f}")
    print(format_table(rows, [("rank", "rank", ""), ("side", "side", ""),
                              ("step", "step", ".1f"),
                              *[(k, k, ".1f") for k in KINDS]]))
    for rank, part in enumerate(got[1] if args.ops else ()):
        for side, table in part["ops"].items():
            top = sorted(table.items(), key=lambda kv: -kv[1][1])[:args.ops]
            print(f"\nrank {rank} {side}: operator, calls per step, self ms per step")
            for name, (count, self_ms) in top:
                print(f"  {name:40} {count / timed:7.1f} {self_ms / timed:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
