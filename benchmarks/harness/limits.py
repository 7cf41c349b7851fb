"""Distance to the limit: synthetic compute vs the simulator, and one process vs a pipeline.

Synthetic: each action sleeps F (or B, I, W) milliseconds and computes almost nothing (hidden
64), so a perfect engine's step is exactly the simulator's makespan for those costs. The sleep is
the runtime's own ``--synthetic`` stage wrapper (``runtime/synthetic.py``): it ends before the
action's output is sent, which is what the simulator assumes. (Until 2026-12-01 the engine slept
after its handler and a benchmark-only wrapper was timed beside it; the wrapper is now the
engine's, so one way is timed.)

One process: the same MLP trained in one process, the batch in ``microbatches`` pieces
(gradients accumulated) or whole, at 1 and 2 threads; a perfect ``p``-stage pipeline of it
would run ``p x m / (m + p - 1)`` times the one-thread microbatched rate.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from pipesim.costs import CostModel
from pipesim.ir import Op
from pipesim.schedules import get_schedule
from pipesim.simulate import simulate

from .common import launch_options, median

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
    from pipesim.processes.launch import launch

    seconds: dict[str, list[float]] = launch(_SyntheticWorker(case), case.ranks,
                                             launch_options(1))
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
        import torch
        import torch.distributed as dist
        from torch import nn

        import pipesim
        from pipesim.runtime.synthetic import slow_down

        from .sides import make_batches, stage_modules

        sched = get_schedule(self.case.schedule, self.case.ranks, self.case.microbatches)
        modules = stage_modules(self.case.hidden, sched.stages, 0, sched.stages)
        pipe = pipesim.Pipeline(modules, sched, loss_fn=nn.functional.mse_loss,
                                balance=[1] * sched.stages)
        table = {Op(k): v / 1e3 for k, v in SYNTHETIC_MS.items()}
        for runner in pipe.runners.values():
            slow_down(runner, table)
        xs, ys = make_batches(self.case.microbatches, 32, self.case.hidden, 0, 1)[0]
        x, y = torch.cat(xs), torch.cat(ys)
        seconds: dict[str, list[float]] = {"engine": []}
        for i in range(self.case.warmup + self.case.steps):
            dist.barrier()
            t0 = time.perf_counter()
            pipe.step(x, y)
            if i >= self.case.warmup:
                seconds["engine"].append(time.perf_counter() - t0)
        out: list[dict[str, list[float]]] | None = [{} for _ in range(world)] if rank == 0 \
            else None
        dist.gather_object(seconds, out, dst=0)
        if out is None:
            return None
        return {"engine": [max(r["engine"][k] for r in out) for k in range(self.case.steps)]}


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
    from pipesim.processes.launch import launch

    rates: dict[str, float] = launch(_SingleWorker(case), 1, launch_options(case.threads))
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
