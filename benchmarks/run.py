"""The benchmark suite: pipesim vs torch.distributed.pipelining, distance to the limits, messages.

    .venv/bin/python benchmarks/run.py                 # everything (about 15-25 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick         # a small version of each (under 2 minutes)
    .venv/bin/python benchmarks/run.py --only torch --out /tmp/r.jsonl

Benchmarks: torch, limits, messages, startup (see src/pipesim/bench/suite.py). Each prints a
table and appends one JSON line per row (machine, date, command, load) to --out. Ranks run one
torch thread each; OMP_NUM_THREADS is set to 1 here unless already set (it is recorded).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; recorded per row

import argparse
from pathlib import Path

from pipesim.bench.common import ResultLog
from pipesim.bench.suite import BENCHMARKS, run_suite

DEFAULT_OUT = Path(__file__).resolve().parent / "results.jsonl"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small version of every benchmark")
    p.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                   help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines appended here")
    args = p.parse_args(argv)
    import torch  # the parent forks the ranks: keep its own thread pool unstarted and small

    torch.set_num_threads(1)
    log = ResultLog(args.out)
    print(f"load {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}, "
          f"{os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}", flush=True)
    run_suite(args.only or list(BENCHMARKS), log, args.quick, lambda s: print(s, flush=True))
    print(f"\n{len(log.rows)} rows appended to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
