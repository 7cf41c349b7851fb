"""Distance to the limit: synthetic compute vs the simulator, and one process vs a pipeline.

Synthetic: each action sleeps F (or B, I, W) milliseconds and computes almost nothing (hidden
64), so a perfect engine's step is exactly the simulator's makespan for those costs. Two ways
of sleeping are timed, alternating step by step in the same ranks:

    engine   the runtime's own ``synthetic`` option (it sleeps after the action's handler)
    inside   benchmark-only: the sleep wrapped into StageRunner's call, so it ends before the
             action's output is sent (what the simulator assumes)

One process: the same MLP trained in one process, the batch in ``microbatches`` pieces
(gradients accumulated) or whole, at 1 and 2 threads; a perfect ``p``-stage pipeline of it
would run ``p x m / (m + p - 1)`` times the one-thread microbatched rate.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pipesim.costs import CostModel
from pipesim.ir import Op
from pipesim.schedules import get_schedule
from pipesim.simulate import simulate

from .common import median

SYNTHETIC_MS = {"F": 20.0, "B": 40.0, "I": 20.0, "W": 20.0}  # --synthetic F=20,B=40


@dataclass(frozen=True)
class SyntheticCase:
    schedule: str
    ranks: int = 4
    microbatches: int = 8
    steps: int = 4  # timed steps per way
    warmup: int = 1
    hidden: int = 64


def synthetic_ideal(case: SyntheticCase) -> float:
    """The simulator's makespan (seconds) for the synthetic costs, zero message cost."""
    sched = get_schedule(case.schedule, case.ranks, case.microbatches)
    ms = SYNTHETIC_MS
    costs = CostModel.uniform(sched.stages, F=ms["F"] / 1e3, B=ms["B"] / 1e3, I=ms["I"] / 1e3,
                              W=ms["W"] / 1e3, unit="s")
    return simulate(sched, costs).makespan


def run_synthetic(case: SyntheticCase) -> dict[str, Any]:
    from pipesim.runtime.launch import LaunchOptions, launch

    seconds: dict[str, list[float]] = launch(_SyntheticWorker(case), case.ranks,
                                             LaunchOptions(threads=1))
    ideal = synthetic_ideal(case)
    row: dict[str, Any] = {**asdict(case), "ideal_step_s": ideal}
    for way, values in seconds.items():
        row[f"{way}_step_s"] = median(values)
        row[f"{way}_over_ideal"] = median(values) / ideal - 1
    return row


class _SyntheticWorker:
    def __init__(self, case: SyntheticCase) -> None:
        self.case = case

    def __call__(self, rank: int, world: int, *_: Any) -> dict[str, list[float]] | None:
        import torch.distributed as dist

        from .sides import make_batches

        engine, sleep = _synthetic_engine(self.case, rank)
        batch = make_batches(self.case.microbatches, 32, self.case.hidden, 0, 1)[0]
        table = {Op(k): v / 1e3 for k, v in SYNTHETIC_MS.items()}
        ways = ("engine", "inside")
        seconds: dict[str, list[float]] = {w: [] for w in ways}
        for i in range(self.case.warmup + self.case.steps):
            for way in ways if i % 2 == 0 else ways[::-1]:
                engine.synthetic = table if way == "engine" else {}
                sleep.update(table if way == "inside" else dict.fromkeys(table, 0.0))
                dt = _timed_step(engine, batch)
                if i >= self.case.warmup:
                    seconds[way].append(dt)
        out: list[dict[str, list[float]]] | None = [{} for _ in range(world)] if rank == 0 \
            else None
        dist.gather_object(seconds, out, dst=0)
        if out is None:
            return None
        return {w: [max(r[w][k] for r in out) for k in range(self.case.steps)] for w in ways}


def _timed_step(engine: Any, batch: Any) -> float:
    import torch.distributed as dist

    dist.barrier()
    t0 = time.perf_counter()
    engine.step(*batch)
    return time.perf_counter() - t0


def _synthetic_engine(case: SyntheticCase, rank: int) -> tuple[Any, dict[Op, float]]:
    """An engine on the tutorial MLP whose runners sleep ``sleep[op]`` inside each call."""
    import torch
    from torch import nn

    from pipesim.runtime.comm import Comm, exchange_shapes
    from pipesim.runtime.engine import Engine
    from pipesim.runtime.stage import StageRunner

    from .sides import stage_modules

    sched = get_schedule(case.schedule, case.ranks, case.microbatches)
    modules = stage_modules(case.hidden, sched.stages, 0, sched.stages)
    runners = {s: StageRunner(s, sched.stages, modules[s], nn.functional.mse_loss,
                              sched.microbatches) for s in sched.stages_of(rank)}
    sleep: dict[Op, float] = {}
    for runner in runners.values():
        r: Any = runner  # instance attributes shadow the methods
        r.forward = _sleeping(r.forward, sleep, lambda *a, **k: Op.F)
        r.backward = _sleeping(r.backward, sleep, lambda mb, g, split: Op.I if split else Op.B)
        r.weight = _sleeping(r.weight, sleep, lambda *a, **k: Op.W)
    comm = Comm(sched, rank, torch.device("cpu"))
    exchange_shapes(comm, sched, {s: modules[s] for s in runners},
                    torch.zeros(32, case.hidden))
    return Engine(sched, rank, runners, comm), sleep


def _sleeping(fn: Callable[..., Any], sleep: dict[Op, float],
              op_of: Callable[..., Op]) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        out = fn(*args, **kwargs)
        seconds = sleep.get(op_of(*args, **kwargs), 0.0)
        if seconds:
            time.sleep(seconds)
        return out

    return call


# ----------------------------------------------------------------------------- one process


@dataclass(frozen=True)
class SingleCase:
    threads: int
    microbatches: int = 8
    batch: int = 32
    hidden: int = 1024
    layers: int = 8
    steps: int = 10
    warmup: int = 2


def run_single(case: SingleCase) -> dict[str, Any]:
    """Samples/s of one process, microbatched and whole-batch, in a forked child."""
    from pipesim.runtime.launch import LaunchOptions, launch

    rates: dict[str, float] = launch(_SingleWorker(case), 1, LaunchOptions(threads=case.threads))
    return {**asdict(case), **rates}


class _SingleWorker:
    def __init__(self, case: SingleCase) -> None:
        self.case = case

    def __call__(self, rank: int, world: int, *_: Any) -> dict[str, float]:
        import torch
        from torch import nn

        from .sides import mlp_layers

        c = self.case
        model = nn.Sequential(*mlp_layers(c.hidden, c.layers, 0))
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(c.microbatches * c.batch, c.hidden, generator=gen)
        y = torch.randn(c.microbatches * c.batch, c.hidden, generator=gen)
        out = {}
        for label, pieces in (("microbatched", c.microbatches), ("whole", 1)):
            times = []
            for i in range(c.warmup + c.steps):
                t0 = time.perf_counter()
                opt.zero_grad(set_to_none=True)
                for xs, ys in zip(x.chunk(pieces), y.chunk(pieces), strict=True):
                    loss = nn.functional.mse_loss(model(xs), ys) / pieces
                    torch.autograd.backward(loss)
                opt.step()
                if i >= c.warmup:
                    times.append(time.perf_counter() - t0)
            out[f"{label}_samples_per_s"] = len(x) / median(times)
        return out


def perfect_pipeline_rate(single_rate: float, ranks: int, microbatches: int) -> float:
    """A perfect ``ranks``-stage pipeline of a one-process rate: p x m / (m + p - 1) of it."""
    return single_rate * ranks * microbatches / (microbatches + ranks - 1)
