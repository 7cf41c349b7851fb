"""The benchmark suite: pipesim vs torch.distributed.pipelining, distance to the limits, messages.

Run from a checkout (the harness in benchmarks/harness/ is not part of the pipesim wheel):

    .venv/bin/python benchmarks/run.py                 # everything (make bench)
    .venv/bin/python benchmarks/run.py --quick         # a small version of each (make bench-quick)
    .venv/bin/python benchmarks/run.py --only torch --ranks 2 --malloc default --out /tmp/r.jsonl
    .venv/bin/python benchmarks/run.py --only startup --tutorial ../pipeline_simulation.py

Benchmarks: torch, limits, messages, startup (see harness/suite.py). Each prints a table and
appends one JSON line per row (machine, date, command, load, allocator) to --out. Every
head-to-head case first checks that both engines compute the same gradient for every parameter
on every rank (and the same as one process); a case that fails gives no row, is reported, and
the command exits 1. Ranks run one torch thread each; OMP_NUM_THREADS is set to 1 here unless
already set (it is recorded).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch is imported; recorded per row

import argparse
import sys
from pathlib import Path

from harness.common import ResultLog, glibc_default_allocator, load_average
from harness.startup import tutorial_path
from harness.suite import BENCHMARKS, H2H_SCHEDULES, Options, run_suite

DEFAULT_OUT = Path(__file__).resolve().parent / "results.jsonl"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="a small version of every benchmark")
    p.add_argument("--only", action="append", choices=list(BENCHMARKS), metavar="NAME",
                   help=f"run only this benchmark (repeatable): {', '.join(BENCHMARKS)}")
    p.add_argument("--out", default=str(DEFAULT_OUT), help="JSON lines appended here")
    p.add_argument("--tutorial", metavar="PATH",
                   help="the tutorial script pipeline_simulation.py, for the startup comparison "
                        "(default: $PIPESIM_TUTORIAL; without it that comparison is skipped)")
    p.add_argument("--malloc", choices=("keep", "default"), default="keep",
                   help="ranks' allocator: keep freed memory (pipesim's launcher, default) or "
                        "glibc's defaults; both engines of the A/B get the same")
    p.add_argument("--schedule", action="append", choices=H2H_SCHEDULES, metavar="NAME",
                   help="head-to-head: only this schedule (repeatable)")
    p.add_argument("--ranks", action="append", type=int, choices=(2, 4),
                   help="head-to-head: only this many ranks (repeatable; default 2 and 4)")
    p.add_argument("--steps", type=int, default=20, help="head-to-head: timed steps per side")
    for name, what in (("hidden", "layer width (default 1024)"),
                       ("layers", "Linear+ReLU layers (default 8)"),
                       ("batch", "samples per microbatch (default 32)"),
                       ("microbatches", "microbatches per step (default 8)")):
        p.add_argument(f"--{name}", type=int, help=f"head-to-head: {what}")
    p.add_argument("--no-single", action="store_true",
                   help="head-to-head: skip timing the model in one process")
    args = p.parse_args(argv)
    try:
        tutorial = tutorial_path(args.tutorial)
    except FileNotFoundError as err:
        p.error(str(err))
    import torch  # the parent forks the ranks: keep its own thread pool unstarted and small

    torch.set_num_threads(1)
    if args.malloc == "default":
        glibc_default_allocator()
    log = ResultLog(args.out, tags={"allocator": args.malloc})
    print(f"load {' '.join(f'{x:.2f}' for x in load_average())}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}, "
          f"allocator {args.malloc}", flush=True)
    opts = Options(quick=args.quick, tutorial=tutorial, schedules=tuple(args.schedule or ()),
                   ranks=tuple(args.ranks or (2, 4)), steps=args.steps,
                   single=not args.no_single,
                   shape={k: getattr(args, k) for k in ("hidden", "layers", "batch", "microbatches")
                          if getattr(args, k) is not None})
    run_suite(args.only or list(BENCHMARKS), log, opts, lambda s: print(s, flush=True))
    print(f"\n{len(log.rows)} rows appended to {args.out}")
    if opts.refused:
        print(f"{len(opts.refused)} head-to-head case(s) refused by the gradient check",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
