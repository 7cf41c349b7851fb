"""Back-to-back W as one GEMM (runtime/splitlinear.py) against one GEMM per microbatch.

    .venv/bin/python benchmarks/bench_weight_merge.py

One thread; a [width, width] weight gradient accumulated from k microbatches of ``rows`` rows,
as k in-place ``addmm_`` calls or as one over the concatenated rows (what ``WeightGradQueue.run``
does with several microbatches); mean ms per accumulation over 50 after 5 warm-up calls.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

Pair = list[torch.Tensor]


def each(grad: torch.Tensor, xs: Pair, gs: Pair) -> None:
    for x, g in zip(xs, gs, strict=True):
        grad.addmm_(g.t(), x)


def merged(grad: torch.Tensor, xs: Pair, gs: Pair) -> None:
    grad.addmm_(torch.cat(gs).t(), torch.cat(xs))


def ms(fn: Callable[[torch.Tensor, Pair, Pair], None], *args: Any, calls: int = 50) -> float:
    for _ in range(5):
        fn(*args)
    t0 = time.perf_counter()
    for _ in range(calls):
        fn(*args)
    return (time.perf_counter() - t0) / calls * 1e3


def main() -> None:
    torch.set_num_threads(1)
    print("| width | rows per microbatch | microbatches | one GEMM each (ms) | merged (ms) |")
    print("|---:|---:|---:|---:|---:|")
    for width, rows in ((1024, 8), (1024, 32), (512, 64)):
        grad = torch.zeros(width, width)
        xs = [torch.randn(rows, width) for _ in range(4)]
        gs = [torch.randn(rows, width) for _ in range(4)]
        for k in (2, 4):
            args = (grad, xs[:k], gs[:k])
            print(f"| {width} | {rows} | {k} | {ms(each, *args):.3f} | "
                  f"{ms(merged, *args):.3f} |", flush=True)


if __name__ == "__main__":
    main()
