"""Benchmark ``messages`` (Comm vs raw gloo, bytes/s): ``benchmarks/run.py --only messages``.

    .venv/bin/python benchmarks/bench_messages.py [--quick] [--out results.jsonl]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import main

if __name__ == "__main__":
    raise SystemExit(main(["--only", "messages", *sys.argv[1:]]))
