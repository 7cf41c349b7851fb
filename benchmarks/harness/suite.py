"""The benchmark suite: each benchmark runs its cases, logs one row per case, returns its table.

    torch     pipesim vs torch.distributed.pipelining, A/B in the same ranks, + one process
    limits    synthetic compute vs the simulator; real compute vs a perfect 2-stage pipeline
    messages  pipesim's Comm vs raw gloo, bytes/s
    startup   ``pipesim run`` vs the tutorial: the default demo's wall, 1,000-microbatch forward

``Options.quick`` runs a small version of each. Benchmarks never print: they hand lines to
``say``. A head-to-head case whose sides disagree on any gradient (``gradcheck``) gives no row:
its refusal is said and kept in ``Options.refused``, and run.py exits non-zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .common import ResultLog, Row, format_table

Say = Callable[[str], None]


@dataclass
class Options:
    quick: bool = False
    tutorial: Path | None = None  # the tutorial script; None: its comparison is skipped
    schedules: tuple[str, ...] = ()  # head-to-head: only these (default: all)
    ranks: tuple[int, ...] = (2, 4)  # head-to-head: these pipeline sizes
    steps: int = 20  # head-to-head: timed steps per side
    single: bool = True  # head-to-head: also time the model in one process (1 and 2 threads)
    shape: dict[str, int] = field(default_factory=dict)  # head-to-head: Case overrides
    refused: list[str] = field(default_factory=list)  # cases refused by the gradient check

H2H_SCHEDULES = ("gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zbv", "dualpipev")
H2H_COLUMNS = [("schedule", "schedule", ""), ("ranks", "ranks", ""),
               ("pipesim_samples_per_s", "pipesim samples/s", ",.0f"),
               ("torch_samples_per_s", "torch samples/s", ",.0f"),
               ("ratio", "pipesim/torch", ".2f"), ("max_grad_error", "grad err", ".1e"),
               ("max_loss_diff", "|loss diff|", ".1e"),
               ("ideal_ms", "ideal ms", ".1f"), ("ideal_ratio", "pipesim/ideal", ".2f"),
               ("shared_ms", "on cores ms", ".1f"), ("shared_ratio", "pipesim/cores", ".2f"),
               ("load1", "load", ".1f")]
PROFILE_COLUMNS = [("schedule", "schedule", ""), ("ranks", "ranks", ""), ("rank", "rank", ""),
                   ("step", "step ms", ".1f"), ("compute", "compute", ".1f"),
                   ("wait", "wait", ".1f"), ("post", "post", ".1f"), ("send", "send", ".1f"),
                   ("finish", "finish", ".1f"), ("other", "other", ".1f"),
                   ("optimizer", "optim", ".1f"), ("engine", "engine", ".1f"),
                   ("engine_us_per_action", "µs/action", ".0f"),
                   ("torch_step", "torch step", ".1f"), ("torch_compute", "torch compute", ".1f")]


def bench_torch(log: ResultLog, opts: Options, say: Say) -> list[Row]:
    from .gradcheck import GradientMismatch
    from .headtohead import Case, run_case
    from .limits import SingleCase, run_single

    if opts.quick:
        cases = [Case(s, 2, hidden=256, steps=3, warmup=1) for s in ("gpipe", "1f1b")]
    else:
        cases = [Case(s, r, steps=opts.steps, **opts.shape) for r in opts.ranks
                 for s in (opts.schedules or H2H_SCHEDULES)]
    rows, profiles = [], []
    for case in cases:
        try:
            got = run_case(case)
        except GradientMismatch as err:
            opts.refused.append(str(err))
            say(f"REFUSED {err}")
            continue
        row = log.add("torch", got)
        row["ideal_ms"], row["load1"] = row["ideal_step_s"] * 1e3, row["load"][0]
        if "ideal_shared_s" in row:  # more ranks than cores: the ideal on the cores there are
            row["shared_ms"] = row["ideal_shared_s"] * 1e3
        rows.append(row)
        profiles += [{"schedule": case.schedule, "ranks": case.ranks, "rank": r, **p}
                     for r, p in enumerate(row["profile"])]
        say(format_table([row], H2H_COLUMNS).splitlines()[-1])
    singles = [log.add("single", run_single(SingleCase(t, hidden=cases[0].hidden,
                                                       steps=3 if opts.quick else 10)))
               for t in ((1, 2) if opts.single else ())]
    say("\n" + format_table(rows, H2H_COLUMNS))
    say("\nwhere pipesim's step goes (ms per step per rank):\n"
        + format_table(profiles, PROFILE_COLUMNS))
    if singles:
        say("\none process, same model and batch:\n" + format_table(singles, [
            ("threads", "threads", ""),
            ("microbatched_samples_per_s", "8 x 32 samples/s", ",.0f"),
            ("whole_samples_per_s", "256 at once samples/s", ",.0f")]))
    return rows + singles


def bench_limits(log: ResultLog, opts: Options, say: Say) -> list[Row]:
    quick = opts.quick
    from .headtohead import Case, run_case
    from .limits import (
        SingleCase,
        SyntheticCase,
        perfect_pipeline_rate,
        run_single,
        run_synthetic,
    )

    if quick:
        syn = [SyntheticCase("1f1b", steps=2)]
    else:
        syn = [SyntheticCase(s, microbatches=m, steps=4 if m == 8 else 2)
               for m in (8, 32) for s in ("gpipe", "1f1b", "interleaved-1f1b", "zb-h1")]
    rows = [log.add("synthetic", run_synthetic(c)) for c in syn]
    say(format_table(rows, [
        ("schedule", "schedule", ""), ("ranks", "ranks", ""), ("microbatches", "m", ""),
        ("ideal_step_s", "ideal s", ".3f"), ("engine_step_s", "engine s", ".3f"),
        ("engine_over_ideal", "engine over", ".1%")]))
    hidden, steps = (256, 3) if quick else (1024, 20)
    single = run_single(SingleCase(1, hidden=hidden, steps=3 if quick else 10))
    real = run_case(Case("1f1b", 2, hidden=hidden, steps=steps, warmup=1 if quick else 3,
                         torch_side=False))
    perfect = perfect_pipeline_rate(single["microbatched_samples_per_s"], 2, 8)
    row = log.add("real-vs-perfect", {
        "schedule": "1f1b", "ranks": 2, "microbatches": 8, "hidden": hidden,
        "single_1thread_samples_per_s": single["microbatched_samples_per_s"],
        "perfect_samples_per_s": perfect, "pipesim_samples_per_s": real["pipesim_samples_per_s"],
        "fraction_of_perfect": real["pipesim_samples_per_s"] / perfect,
        "ideal_from_own_compute_s": real["ideal_step_s"], "pipesim_step_s": real["pipesim_step_s"],
        "stage_F_ms": real["stage_F_ms"], "stage_B_ms": real["stage_B_ms"]})
    say("\n" + format_table([row], [
        ("single_1thread_samples_per_s", "1 process samples/s", ",.0f"),
        ("perfect_samples_per_s", "perfect 2-stage", ",.0f"),
        ("pipesim_samples_per_s", "pipesim 1f1b", ",.0f"),
        ("fraction_of_perfect", "fraction", ".1%")]))
    return [*rows, row]


def bench_messages(log: ResultLog, opts: Options, say: Say) -> list[Row]:
    quick = opts.quick
    from .messages import MessageCase, run_messages

    cases = [MessageCase(1, 8, 2), MessageCase(16, 2, 2)] if quick else \
        [MessageCase(1, 64), MessageCase(16, 16), MessageCase(64, 4)]
    rows = [log.add("messages", run_messages(c)) for c in cases]
    say(format_table(rows, [
        ("mib", "MiB", ""), ("count", "messages", ""), ("raw_mib_s", "raw MiB/s", ",.0f"),
        ("raw-new_mib_s", "raw+alloc MiB/s", ",.0f"), ("pipesim_mib_s", "pipesim MiB/s", ",.0f"),
        ("pipesim_vs_raw", "pipesim/raw", ".1%")]))
    return rows


def bench_startup(log: ResultLog, opts: Options, say: Say) -> list[Row]:
    from .startup import run_forward_messages, run_startup

    if opts.tutorial is None:
        say("the tutorial comparison is skipped: give its script with --tutorial PATH or "
            "PIPESIM_TUTORIAL (pipesim's side is timed alone)")
    default_env: dict[str, str | None] = {"OMP_NUM_THREADS": None}
    start = log.add("startup", run_startup(2 if opts.quick else 5, default_env, opts.tutorial))
    say(format_table([start], [("runs", "runs", ""), ("pipesim_s", "pipesim run s", ".2f"),
                               ("tutorial_s", "tutorial s", ".2f"), ("ratio", "ratio", ".2f")]))
    m = 100 if opts.quick else 1000
    fwd = [log.add("forward-messages", run_forward_messages(m, env, opts.tutorial))
           for env in (default_env, {"OMP_NUM_THREADS": "1"})]
    for row in fwd:
        row["threads_env"] = row["env"].get("OMP_NUM_THREADS") or "unset"
    say("\n" + format_table(fwd, [
        ("microbatches", "m", ""), ("threads_env", "OMP_NUM_THREADS", ""),
        ("pipesim_step_s", "pipesim step s", ".3f"),
        ("pipesim_us_per_microbatch", "µs/microbatch", ".0f"),
        ("pipesim_wall_s", "pipesim wall s", ".2f"),
        ("tutorial_wall_s", "tutorial wall s", ".2f")]))
    return [start, *fwd]


BENCHMARKS: dict[str, Callable[[ResultLog, Options, Say], list[Row]]] = {
    "torch": bench_torch, "limits": bench_limits, "messages": bench_messages,
    "startup": bench_startup,
}


def run_suite(names: list[str], log: ResultLog, opts: Options, say: Say) -> dict[str, Any]:
    """Run the named benchmarks in order; their rows by name."""
    out: dict[str, Any] = {}
    for name in names:
        say(f"\n== {name}{' (quick)' if opts.quick else ''}")
        out[name] = BENCHMARKS[name](log, opts, say)
    return out
