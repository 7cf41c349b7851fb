"""Benchmark ``limits`` (distance to the limit): ``benchmarks/run.py --only limits``.

    .venv/bin/python benchmarks/bench_limits.py [--quick] [--out results.jsonl]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main

if __name__ == "__main__":
    raise SystemExit(main(["--only", "limits", *sys.argv[1:]]))
