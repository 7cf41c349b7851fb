"""pipesim vs torch.distributed.pipelining, A/B in the same forked processes.

In one set of ranks both engines hold identical copies of the weights (built from one seed) and
train on the same batches; steps alternate (pipesim then torch, then torch then pipesim, ...)
after a barrier each, so load drift hits both alike. Per step, a side's time is the slowest
rank's (barrier -> zero_grad, pipeline step, optimizer step done). Rank 0 gathers:

    step seconds of each side (warm-up steps dropped), the loss of each side per step,
    pipesim's per-stage compute (F, B, I, W medians) and where its step time went (``Probe``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from pipesim.bench.common import median
from pipesim.bench.probe import BUCKETS
from pipesim.costs import CostModel
from pipesim.simulate import simulate


@dataclass(frozen=True)
class Case:
    """One head-to-head configuration (defaults: the issue's MLP and batch)."""

    schedule: str
    ranks: int
    microbatches: int = 8
    batch: int = 32  # samples per microbatch
    hidden: int = 1024
    layers: int = 8
    steps: int = 20  # timed steps per side
    warmup: int = 3  # untimed steps per side first
    lr: float = 0.01
    seed: int = 0
    torch_side: bool = True  # False: pipesim alone (a schedule torch lacks)
    variant: str = ""  # an experiments.PATCHES name: also run a patched pipesim side

    @property
    def samples(self) -> int:
        return self.microbatches * self.batch


def run_case(case: Case) -> dict[str, Any]:
    """Launch ``case.ranks`` forked ranks, run the A/B, return the summary row."""
    from pipesim.processes.launch import LaunchOptions, launch

    gathered: list[dict[str, Any]] = launch(_Worker(case), case.ranks, LaunchOptions(threads=1))
    return summarize(case, gathered)


class _Worker:
    def __init__(self, case: Case) -> None:
        self.case = case

    def __call__(self, rank: int, world: int, *_: Any) -> list[dict[str, Any]] | None:
        import torch.distributed as dist

        sides = _build_sides(self.case, rank, world)
        mine = _alternate(self.case, sides)
        out: list[dict[str, Any]] | None = [{} for _ in range(world)] if rank == 0 else None
        dist.gather_object(mine, out, dst=0)
        return out


@dataclass
class _Side:
    name: str
    step: Callable[[int], list[float]]  # step index -> last-stage losses (empty elsewhere)
    zero_grad: Callable[[], None]
    opt_step: Callable[[], None]


def _build_sides(case: Case, rank: int, world: int) -> list[Any]:
    """pipesim's side (and torch's unless ``torch_side`` is False) plus the probe and data."""
    import torch
    import torch.distributed as dist
    from torch import nn

    from pipesim.bench.probe import Probe
    from pipesim.bench.torchpp import TorchPipeline, torch_placement
    from pipesim.models.mlp import build_mlp, split_layers, uniform_balance
    from pipesim.runtime.comm import Comm, exchange_shapes
    from pipesim.runtime.engine import Engine
    from pipesim.runtime.stage import StageRunner
    from pipesim.runtime.train import RunConfig, make_batch
    from pipesim.schedules import get_schedule

    sched = get_schedule(case.schedule, world, case.microbatches)
    balance = uniform_balance(case.layers, sched.stages)
    cfg = RunConfig(sched, batch_size=case.batch, hidden_size=case.hidden, layers=case.layers,
                    seed=case.seed)
    batches = [make_batch(cfg, i) for i in range(case.warmup + case.steps)]
    loss_fn = nn.functional.mse_loss
    probe = Probe()

    def pipesim_side(name: str, patch: Callable[[Any, Any], None] | None) -> _Side:
        ours = split_layers(build_mlp(case.hidden, case.layers, case.seed), balance)
        runners = {s: StageRunner(s, sched.stages, ours[s], loss_fn, sched.microbatches)
                   for s in sched.stages_of(rank)}
        comm = Comm(sched, rank, torch.device("cpu"))
        exchange_shapes(comm, sched, {s: ours[s] for s in runners}, batches[0][0][0])
        engine = Engine(sched, rank, runners, comm)
        if patch is None:
            probe.attach(comm, runners)
        else:
            patch(comm, engine)
        opt = torch.optim.SGD([p for r in runners.values() for p in r.parameters()], lr=case.lr)

        def step(i: int) -> list[float]:
            rec = engine.step(*batches[i])
            return [rec.losses[mb] for mb in sorted(rec.losses)]

        return _Side(name, step, lambda: opt.zero_grad(set_to_none=True), opt.step)

    sides = [pipesim_side("pipesim", None)]
    if case.variant:
        from pipesim.bench.experiments import PATCHES

        sides.append(pipesim_side(f"pipesim+{case.variant}", PATCHES[case.variant]))
    group = dist.new_group(backend="gloo")  # every rank calls it, even without a torch side
    if case.torch_side:
        if torch_placement(case.schedule, world) != sched.stage_to_rank:
            raise RuntimeError(f"{case.schedule}: torch places stages "
                               f"{torch_placement(case.schedule, world)}, pipesim "
                               f"{sched.stage_to_rank}")
        theirs = split_layers(build_mlp(case.hidden, case.layers, case.seed), balance)
        local = {s: theirs[s] for s in sched.stages_of(rank)}
        pipe = TorchPipeline(case.schedule, rank, world, local, sched.stages,
                             sched.microbatches, batches[0][0][0], loss_fn, group)
        topt = torch.optim.SGD([p for m in local.values() for p in m.parameters()], lr=case.lr)
        probe.torch = pipe
        sides.append(_Side("torch", lambda i: pipe.step(*batches[i]),
                           lambda: topt.zero_grad(set_to_none=True), topt.step))
    return [sides, probe, sched]


def _alternate(case: Case, built: list[Any]) -> dict[str, Any]:
    """Run the steps, alternating which side goes first; this rank's raw measurements."""
    import torch.distributed as dist

    sides, probe, _ = built
    times: dict[str, list[float]] = {s.name: [] for s in sides}
    losses: dict[str, list[float]] = {s.name: [] for s in sides}
    profile = dict.fromkeys(("step", "optimizer", "torch_step", "torch_compute"), 0.0)
    for i in range(case.warmup + case.steps):
        timed = i >= case.warmup
        order = sides if i % 2 == 0 else sides[::-1]
        for side in order:
            probe.recording = timed
            dist.barrier()
            t0 = time.perf_counter()
            if side.name == "pipesim":
                probe.reset()
            elif probe.torch is not None:
                probe.torch.compute = 0.0
            side.zero_grad()
            t1 = time.perf_counter()
            got = side.step(i)
            t2 = time.perf_counter()
            side.opt_step()
            dt = time.perf_counter() - t0
            if timed:
                times[side.name].append(dt)
                if side.name == "pipesim":
                    profile["step"] += dt
                    profile["optimizer"] += dt - (t2 - t1)
                    for k, v in probe.seconds.items():
                        profile[k] = profile.get(k, 0.0) + v
                elif probe.torch is not None:
                    profile["torch_step"] += dt
                    profile["torch_compute"] += probe.torch.compute
            if got:
                losses[side.name].append(sum(got) / len(got))
    durations = {f"{s}{op}": median(v) for (s, op), v in probe.durations.items()}
    calls = dict(probe.calls)
    return {"times": times, "losses": losses, "profile": profile, "durations": durations,
            "calls": calls}


def summarize(case: Case, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """The row: samples/s per side, their ratio, loss difference, ideal step and profile."""
    row: dict[str, Any] = {**asdict(case)}
    step: dict[str, float] = {}
    for side in per_rank[0]["times"]:
        slowest = [max(r["times"][side][i] for r in per_rank)
                   for i in range(len(per_rank[0]["times"][side]))]
        step[side] = median(slowest)
        row[f"{side}_step_s"] = step[side]
        row[f"{side}_samples_per_s"] = case.samples / step[side]
    if "torch" in step:
        row["ratio"] = step["torch"] / step["pipesim"]
    loss: dict[str, list[float]] = {
        side: next((r["losses"][side] for r in per_rank if r["losses"][side]), [])
        for side in step}
    row["pipesim_loss"] = loss["pipesim"]
    if loss.get("torch"):
        row["torch_loss"] = loss["torch"]
        row["max_loss_diff"] = max(abs(a - b) for a, b in
                                   zip(loss["pipesim"], loss["torch"], strict=True))
    row.update(ideal_step(case, per_rank))
    row["ideal_ratio"] = step["pipesim"] / row["ideal_step_s"]
    row["profile"] = _profile(case, per_rank)
    return row


def ideal_step(case: Case, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """The step time this schedule would take with zero overhead, from measured compute."""
    from pipesim.schedules import get_schedule

    sched = get_schedule(case.schedule, case.ranks, case.microbatches)
    dur: dict[str, float] = {}
    for r in per_rank:
        dur.update(r["durations"])

    def per_stage(op: str, fallback: Callable[[int], float]) -> list[float]:
        return [dur.get(f"{s}{op}", fallback(s)) for s in range(sched.stages)]

    f = per_stage("F", lambda s: 0.0)
    b = per_stage("B", lambda s: dur.get(f"{s}I", 0.0) + dur.get(f"{s}W", 0.0))
    i = per_stage("I", lambda s: b[s] / 2)
    w = per_stage("W", lambda s: b[s] / 2)
    costs = CostModel.from_lists(sched.stages, f, i, w, b, unit="s")
    out: dict[str, Any] = {"stage_F_ms": [x * 1e3 for x in f],
                           "stage_B_ms": [x * 1e3 for x in b],
                           "ideal_step_s": simulate(sched, costs).makespan}
    if case.schedule in ("gpipe", "1f1b"):  # the closed form: (m + p - 1) x (F + B) slowest
        out["ideal_formula_s"] = (case.microbatches + case.ranks - 1) * max(
            x + y for x, y in zip(f, b, strict=True))
    return out


def _profile(case: Case, per_rank: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per rank, ms per step in each bucket (``overhead``: the engine's own Python), µs/action."""
    out = []
    for r in per_rank:
        p = r["profile"]
        ms = {k: v / case.steps * 1e3 for k, v in p.items()}
        ms["overhead"] = ms["step"] - sum(ms[k] for k in (*BUCKETS, "optimizer"))
        ms["torch_other"] = ms["torch_step"] - ms["torch_compute"]
        ms["actions_per_step"] = r["calls"]["compute"]
        ms["overhead_us_per_action"] = ms["overhead"] * 1e3 / max(1, r["calls"]["compute"])
        out.append(ms)
    return out
