"""Split py-spy samples of head-to-head ranks into pipesim's and torch's steps, by kind of work.

    benchmarks/attribute.sh SCHEDULE RANKS   # records every rank with py-spy, then runs this
    python benchmarks/pyspy_split.py rank0.txt rank1.txt ...

Input: ``py-spy record --format raw --native --idle --threads`` of each rank (collapsed stacks,
root first, one line per distinct stack with its sample count). Only samples of the main
thread inside the timed loop (``_alternate``) count; the side is pipesim's when the stack holds
``Engine.step`` (runtime/engine.py), torch's when it holds torch's ``schedules.py``, else the
harness's own (barrier, zero_grad, optimizer). Each sample goes to the first kind that matches,
searching from the leaf:

    wait      blocked in gloo or in a barrier (a c10d wait, a futex or poll under one)
    matmul    GEMM kernels (mkl, dnnl, blas, addmm, mm)
    alloc     malloc/free/mmap/munmap, the CPU allocator, zero-filling new memory
    comm      posting or sending messages (c10d, gloo, not waiting)
    ops       any other native code (autograd, elementwise kernels, the dispatcher)
    python    the interpreter running Python code (leaf in a .py frame or libpython)
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from collections.abc import Iterable, Sequence

KINDS = ("wait", "matmul", "alloc", "comm", "ops", "python")
_MATMUL = re.compile(r"gemm|dnnl|mkl|blas|addmm|\bmm_|::mm\b|bmm|matmul", re.I)
_ALLOC = re.compile(r"malloc|\bfree\b|cfree|_int_free|_int_malloc|mmap|munmap|madvise|"
                    r"CPUAllocator|alloc_cpu|free_cpu|memset|sysmalloc|systrim", re.I)
_COMM = re.compile(r"gloo|c10d|ProcessGroup|isend|irecv", re.I)
_BLOCK = re.compile(r"futex|pthread_cond|poll|epoll|nanosleep|sem_wait|__lll_lock_wait|"
                    r"syscall", re.I)


def side_of(frames: Sequence[str]) -> str | None:
    """pipesim, torch or harness for a timed main-thread sample; None outside the timed loop."""
    text = ";".join(frames)
    if "_alternate" not in text:
        return None
    if "runtime/engine.py" in text:
        return "pipesim"
    if "pipelining/schedules.py" in text:
        return "torch"
    return "harness"


def kind_of(frames: Sequence[str]) -> str:
    """The kind of work of one sample (frames root first)."""
    leaf_first = list(reversed(frames))
    waiting = any(_BLOCK.search(f) for f in leaf_first[:6])
    in_comm = any(_COMM.search(f) or "barrier" in f or "wait" in f.split(" (")[0].lower()
                  for f in leaf_first)
    if waiting and in_comm:
        return "wait"
    for f in leaf_first:  # the first frame that says what the CPU was doing
        name = f.split(" (")[0]
        if f.endswith(".py)") or ".py:" in f:
            return "python"  # reached Python code before any named native work
        if _MATMUL.search(name):
            return "matmul"
        if _ALLOC.search(name):
            return "alloc"
        if _COMM.search(f):
            return "comm"
        if any(lib in f for lib in ("(libtorch", "(libc10", "(libgomp", "(libmkl")):
            return "ops"
    return "python"  # libc, the interpreter or unnamed frames under Python


def parse(lines: Iterable[str]) -> Iterable[tuple[list[str], int]]:
    for line in lines:
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, count = line.rpartition(" ")
        yield stack.split(";"), int(count)


def split(lines: Iterable[str]) -> tuple[Counter[tuple[str, str]], Counter[str]]:
    """(side, kind) -> samples of the main thread; and busy samples of other threads by kind."""
    main: Counter[tuple[str, str]] = Counter()
    others: Counter[str] = Counter()
    for frames, count in parse(lines):
        side = side_of(frames)
        if side is not None:
            main[side, kind_of(frames)] += count
        elif frames and "_alternate" not in ";".join(frames) and "_bootstrap" not in \
                ";".join(frames) and "run.py" not in ";".join(frames):
            kind = kind_of(frames)
            if kind != "wait" and not any(_BLOCK.search(f) for f in frames[-6:]):
                others[kind] += count
    return main, others


def table(name: str, main: Counter[tuple[str, str]], others: Counter[str],
          counts: bool = False) -> str:
    what = "samples" if counts else "share of each side's main-thread samples"
    rows = [f"{name}: {what} by kind"]
    rows.append(f"{'side':8} {'samples':>8} " + " ".join(f"{k:>7}" for k in KINDS))
    for side in ("pipesim", "torch", "harness"):
        total = sum(v for (s, _), v in main.items() if s == side)
        if not total:
            continue
        cells = " ".join(f"{main[side, k]:7d}" if counts else f"{main[side, k] / total:7.0%}"
                         for k in KINDS)
        rows.append(f"{side:8} {total:8d} {cells}")
    busy = sum(others.values())
    if busy:
        rows.append(f"other threads busy: {busy} samples (" + ", ".join(
            f"{k} {v}" for k, v in others.most_common()) + ")")
    return "\n".join(rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("files", nargs="+", help="py-spy raw output, one file per rank")
    p.add_argument("--counts", action="store_true", help="sample counts instead of shares")
    p.add_argument("--total", action="store_true", help="also all files (ranks) together")
    args = p.parse_args()
    everything: Counter[tuple[str, str]] = Counter()
    for path in args.files:
        with open(path, encoding="utf-8") as fh:
            main_samples, others = split(fh)
        everything += main_samples
        print(table(path, main_samples, others, args.counts))
    if args.total:
        print(table("all ranks", everything, Counter(), args.counts))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
