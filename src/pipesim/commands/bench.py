"""``pipesim bench``: the benchmark suite (pipesim vs torch.distributed.pipelining, limits).

    pipesim bench --quick                    # a small version of everything, under 2 minutes
    pipesim bench --only torch --out r.jsonl # one benchmark; rows appended as JSON lines

The same suite as ``benchmarks/run.py`` (whose --out defaults to benchmarks/results.jsonl).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from pipesim.commands import UserError

_NAMES = ("torch", "limits", "messages", "startup")  # pipesim.bench.suite.BENCHMARKS


def register(sub: Any) -> None:
    p = sub.add_parser("bench", help="benchmark the runtime (vs torch.distributed.pipelining)",
                       description="Run pipesim's benchmark suite on this machine.")
    p.add_argument("--quick", action="store_true", help="a small version of every benchmark")
    p.add_argument("--only", action="append", choices=_NAMES, metavar="NAME",
                   help=f"run only this benchmark (repeatable): {', '.join(_NAMES)}")
    p.add_argument("--out", default=None, metavar="RESULTS.jsonl",
                   help="append one JSON line per result row here (default: none)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.out and not os.path.isdir(os.path.dirname(os.path.abspath(args.out))):
        raise UserError(f"cannot write {args.out}: its directory does not exist")
    os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch starts its thread pool
    try:
        import torch
    except ImportError:
        raise UserError("pipesim bench needs torch: pip install 'pipesim[torch]'") from None
    torch.set_num_threads(1)  # ranks are forked from this process
    from pipesim.bench.common import ResultLog
    from pipesim.bench.suite import run_suite

    log = ResultLog(args.out)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load {load}, {os.cpu_count()} CPUs, torch {torch.__version__}", flush=True)
    run_suite(list(args.only or _NAMES), log, args.quick, lambda s: print(s, flush=True))
    if args.out:
        print(f"\n{len(log.rows)} rows appended to {args.out}")
    return 0


__all__ = ["register", "run"]
