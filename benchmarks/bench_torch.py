"""Benchmark ``torch`` (pipesim vs torch.distributed.pipelining): ``run.py --only torch``.

    .venv/bin/python benchmarks/bench_torch.py [--quick] [--out results.jsonl]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main

if __name__ == "__main__":
    raise SystemExit(main(["--only", "torch", *sys.argv[1:]]))
