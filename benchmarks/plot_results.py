"""Bar chart of pipesim vs torch.distributed.pipelining samples/s per schedule, 2 and 4 ranks.

    .venv/bin/python benchmarks/plot_results.py [results.jsonl] [-o docs/bench-vs-torch.png]

Reads the latest gradient-checked ``torch`` row of each (schedule, ranks) from the JSON-lines
results, for the issue's model (hidden 1024) and one allocator setting (default ``keep``). Rows
from before 2026-12-01 have no gradient check (torch then skipped work) and are never plotted.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ORDER = ["gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zbv", "dualpipev"]


def latest_rows(path: Path, allocator: str = "keep") -> dict[tuple[str, int], dict[str, Any]]:
    rows: dict[tuple[str, int], dict[str, Any]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        row = json.loads(line)
        if (row.get("bench") == "torch" and "torch_samples_per_s" in row
                and "grad_errors" in row and row.get("hidden") == 1024
                and row.get("allocator") == allocator):
            rows[(row["schedule"], row["ranks"])] = row  # later lines win
    return rows


def plot(rows: dict[tuple[str, int], dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ranks = sorted({r for _, r in rows})
    fig, axes = plt.subplots(1, len(ranks), figsize=(6 * len(ranks), 4.2), squeeze=False)
    for ax, p in zip(axes[0], ranks, strict=True):
        names = [n for n in ORDER if (n, p) in rows]
        xs = range(len(names))
        ours = [rows[(n, p)]["pipesim_samples_per_s"] for n in names]
        theirs = [rows[(n, p)]["torch_samples_per_s"] for n in names]
        ax.bar([x - 0.2 for x in xs], ours, 0.4, label="pipesim", color="#2b6cb0")
        ax.bar([x + 0.2 for x in xs], theirs, 0.4, label="torch.distributed.pipelining",
               color="#dd8452")
        for x, a, b in zip(xs, ours, theirs, strict=True):
            ax.text(x, max(a, b) * 1.02, f"{a / b:.2f}x", ha="center", fontsize=9)
        load = max(rows[(n, p)]["load"][0] for n in names)
        ax.set_title(f"{p} ranks (gloo, 1 thread each; load up to {load:.1f})", fontsize=10)
        ax.set_xticks(list(xs), names, rotation=20)
        ax.set_ylabel("samples/s (higher is better)")
        ax.set_ylim(0, max(ours + theirs) * 1.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle("MLP 8 x Linear(1024)+ReLU, batch 256 = 8 x 32, SGD, same processes, A/B steps")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="?", default=str(HERE / "results.jsonl"))
    p.add_argument("-o", "--out", default=str(HERE.parent / "docs" / "bench-vs-torch.png"))
    p.add_argument("--allocator", choices=("keep", "default"), default="keep")
    args = p.parse_args()
    rows = latest_rows(Path(args.results), args.allocator)
    if not rows:
        raise SystemExit(f"no torch rows in {args.results}; run benchmarks/run.py --only torch")
    plot(rows, Path(args.out))
    print(f"wrote {args.out} ({len(rows)} schedule x ranks pairs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
