"""pipesim vs torch.distributed.pipelining, A/B in the same forked processes.

In one set of ranks both engines hold identical copies of the weights (built from one seed) and
train on the same batches. First the gradient check (``gradcheck``): one step of each side from
those weights, every parameter's gradient on every rank compared across the sides and with one
process; if any disagrees the case raises GradientMismatch and no row exists. Then steps
alternate (pipesim then torch, then torch then pipesim, ...) after a barrier each, so load drift
hits both alike. Per step, a side's time is the slowest rank's (barrier -> zero_grad, pipeline
step, optimizer step done). Rank 0 gathers:

    step seconds of each side (warm-up steps dropped), the loss of each side per step,
    pipesim's per-stage compute (F, B, I, W means) and where its step time went (``Probe``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from statistics import fmean
from typing import Any

from pipesim.costs import CostModel
from pipesim.simulate import simulate

from .common import launch_options, median
from .gradcheck import RTOL, grads_of, merge, refuse_unless_equal, verdict
from .probe import BUCKETS, Probe
from .sides import Side

Tamper = Callable[[Side], Side]  # tests only: turn a side into a wrong one


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
    torch_examples: str = "inferred"  # "static-no-grad": the pitfall, for the check's test
    timed: str = ""  # "pipesim" or "torch": time that side alone (both still built, checked)
    rtol: float = RTOL  # the gradient check's tolerance

    @property
    def samples(self) -> int:
        return self.microbatches * self.batch


def run_case(case: Case, tamper: Tamper | None = None) -> dict[str, Any]:
    """Launch ``case.ranks`` forked ranks, check gradients, run the A/B, return the row.

    Raises GradientMismatch when the sides disagree (``tamper`` wraps pipesim's side: tests).
    """
    from pipesim.processes.launch import launch

    gathered: list[dict[str, Any]] = launch(_Worker(case, tamper), case.ranks,
                                            launch_options(1))
    refuse_unless_equal(f"{case.schedule} on {case.ranks} ranks", gathered[0]["check"])
    return summarize(case, gathered)


class _Worker:
    def __init__(self, case: Case, tamper: Tamper | None) -> None:
        self.case = case
        self.tamper = tamper

    def __call__(self, rank: int, world: int, *_: Any) -> list[dict[str, Any]] | None:
        import torch.distributed as dist

        sides, probe, sched = build_sides(self.case, rank, world, self.tamper)
        check = check_gradients(self.case, sides, probe, rank, sched.stages)
        mine: dict[str, Any] = {"check": check}
        if check["grad_ok"]:
            timed = [s for s in sides if s.name == self.case.timed] if self.case.timed else sides
            mine.update(_alternate(self.case, timed, probe))
        out: list[dict[str, Any]] | None = [{} for _ in range(world)] if rank == 0 else None
        dist.gather_object(mine, out, dst=0)
        return out


def build_sides(case: Case, rank: int, world: int, tamper: Tamper | None
                 ) -> tuple[list[Side], Probe, Any]:
    """pipesim's side (and torch's unless ``torch_side`` is False), the probe, the schedule."""
    import torch.distributed as dist

    from pipesim.ranks import available_cores
    from pipesim.schedules import get_schedule

    from .sides import make_batches, pipesim_side, stage_modules, torch_side

    sched = get_schedule(case.schedule, world, case.microbatches)
    batches = make_batches(case.microbatches, case.batch, case.hidden, case.seed,
                           case.warmup + case.steps)
    probe = Probe(cpu_time=case.ranks > available_cores())  # for the ideal on shared cores

    def modules() -> list[Any]:
        return stage_modules(case.hidden, case.layers, case.seed, sched.stages)

    ours = pipesim_side("pipesim", sched, rank, modules(), batches, case.lr, probe)
    sides = [tamper(ours) if tamper else ours]
    group = dist.new_group(backend="gloo")  # every rank calls it, even without a torch side
    if case.torch_side:
        theirs, pipe = torch_side("torch", case.schedule, sched, rank, modules(), batches,
                                  case.lr, group, case.torch_examples)
        probe.torch = pipe
        sides.append(theirs)
    return sides, probe, sched


def check_gradients(case: Case, sides: list[Side], probe: Probe, rank: int, stages: int
                     ) -> dict[str, Any]:
    """One untimed step of each side from identical weights; the verdict, on every rank."""
    import torch.distributed as dist

    from .sides import make_batches, one_process_grads, stage_modules

    probe.recording = False
    mine = {}
    for side in sides:
        side.zero_grad()
        side.step(0)
        mine[side.name] = grads_of(side.params)
    world = dist.get_world_size()
    got: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(mine, got, dst=0)
    box: list[Any] = [None]
    if got is not None:
        batch = make_batches(case.microbatches, case.batch, case.hidden, case.seed, 1)[0]
        reference = one_process_grads(stage_modules(case.hidden, case.layers, case.seed,
                                                    stages), batch)
        per_side = {side.name: merge([part[side.name] for part in got]) for side in sides}
        box[0] = verdict(per_side, reference, case.rtol)
    dist.broadcast_object_list(box, src=0)
    result: dict[str, Any] = box[0]
    return result


def _alternate(case: Case, sides: list[Side], probe: Probe) -> dict[str, Any]:
    """Run the steps, alternating which side goes first; this rank's raw measurements."""
    import torch.distributed as dist

    times: dict[str, list[float]] = {s.name: [] for s in sides}
    losses: dict[str, list[float]] = {s.name: [] for s in sides}
    profile = dict.fromkeys(("step", "optimizer", "optimizer_cpu", "torch_step",
                             "torch_compute"), 0.0)
    actions = 0
    first: list[str] = []  # per timed step, the side that went first
    for i in range(case.warmup + case.steps):
        timed = i >= case.warmup
        order = sides if i % 2 == 0 else sides[::-1]
        if timed:
            first.append(order[0].name)
        for side in order:
            probe.recording = timed
            dist.barrier()
            t0 = time.perf_counter()
            if side.name == "pipesim":
                probe.reset()
            elif probe.torch is not None:
                probe.torch.compute = 0.0
            c0 = time.thread_time()
            side.zero_grad()
            t1, c1 = time.perf_counter(), time.thread_time()
            got = side.step(i)
            t2, c2 = time.perf_counter(), time.thread_time()
            side.opt_step()
            dt = time.perf_counter() - t0
            optimizer_cpu = time.thread_time() - c2 + c1 - c0
            if timed:
                times[side.name].append(dt)
                if side.name == "pipesim":
                    profile["step"] += dt
                    profile["optimizer"] += dt - (t2 - t1)
                    profile["optimizer_cpu"] += optimizer_cpu
                    for k, v in probe.seconds.items():
                        profile[k] = profile.get(k, 0.0) + v
                    actions = probe.actions
                elif probe.torch is not None:
                    profile["torch_step"] += dt
                    profile["torch_compute"] += probe.torch.compute
            if got:
                losses[side.name].append(sum(got) / len(got))
    # means, not medians: a step pays every action's time, so its ideal does too (a merged W's
    # share, 0, included); medians put the ideal below a rank's own compute
    durations = {f"{s}{op}": fmean(v) for (s, op), v in probe.durations.items()}
    cpu = {f"{s}{op}": fmean(v) for (s, op), v in probe.cpu.items()}
    return {"times": times, "losses": losses, "profile": profile, "durations": durations,
            "cpu": cpu, "actions": actions, "first": first}


def summarize(case: Case, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """The row: samples/s per side, ratio, gradient check, loss difference, ideal, profile."""
    row: dict[str, Any] = {**asdict(case)}
    check = per_rank[0]["check"]
    row["grad_errors"], row["grad_rtol"] = check["grad_errors"], check["grad_rtol"]
    row["max_grad_error"] = max(check["grad_errors"].values())
    step: dict[str, float] = {}
    for side in per_rank[0]["times"]:
        slowest = [max(r["times"][side][i] for r in per_rank)
                   for i in range(len(per_rank[0]["times"][side]))]
        step[side] = median(slowest)
        row[f"{side}_steps_s"] = slowest  # each timed step, in order (for the order check)
        row[f"{side}_step_s"] = step[side]
        row[f"{side}_mean_step_s"] = fmean(slowest)
        row[f"{side}_samples_per_s"] = case.samples / step[side]
    if "torch" in step and "pipesim" in step:
        row["ratio"] = step["torch"] / step["pipesim"]
        row["pipesim_first"] = [name == "pipesim" for name in per_rank[0]["first"]]
    loss: dict[str, list[float]] = {
        side: next((r["losses"][side] for r in per_rank if r["losses"][side]), [])
        for side in step}
    row["pipesim_loss"] = loss.get("pipesim", [])
    if loss.get("torch") and loss.get("pipesim"):
        row["torch_loss"] = loss["torch"]
        row["max_loss_diff"] = max(abs(a - b) for a, b in
                                   zip(loss["pipesim"], loss["torch"], strict=True))
    if "pipesim" not in step:  # torch timed alone
        return row
    # the ideal is made of mean action times, so it is held against the mean step: a few slow
    # steps raise both (against the median step, one run came out at 0.97)
    row.update(ideal_step(case, per_rank))
    row["ideal_ratio"] = row["pipesim_mean_step_s"] / row["ideal_step_s"]
    if "ideal_shared_s" in row:
        row["shared_ratio"] = row["pipesim_mean_step_s"] / row["ideal_shared_s"]
    row["profile"] = _profile(case, per_rank)
    return row


def ideal_step(case: Case, per_rank: list[dict[str, Any]]) -> dict[str, Any]:
    """The step time this schedule would take with zero overhead, from measured compute, as the
    A/B times a step (from a barrier to the last rank's optimizer update done): each rank on its
    own processor (``ideal_step_s``: the computations' mean wall times, then each rank's own
    optimizer time after its last action), and, when ranks outnumber this machine's cores, the
    ranks on those cores (``ideal_shared_s``: their mean CPU times and the optimizer's CPU time,
    processor sharing: ``pipesim.shared``). A rank without a measured optimizer time (a
    ``per_rank`` entry without "profile") has none."""
    from pipesim.ranks import available_cores
    from pipesim.schedules import get_schedule
    from pipesim.shared import simulate_shared

    sched = get_schedule(case.schedule, case.ranks, case.microbatches)
    wall = _stage_costs(sched.stages, per_rank, "durations")
    f, b = wall.forward, wall.backward
    optimizer = _per_rank(case, per_rank, "optimizer")
    alone = simulate(sched, wall)
    ends = [max((e.end for e in row), default=0.0) for row in alone.by_rank()]
    out: dict[str, Any] = {"stage_F_ms": [x * 1e3 for x in f],
                           "stage_B_ms": [x * 1e3 for x in b],
                           "optimizer_ms": [x * 1e3 for x in optimizer],
                           "ideal_step_s": max(e + o for e, o in zip(ends, optimizer,
                                                                      strict=True))}
    if case.schedule in ("gpipe", "1f1b"):  # the closed form: (m + p - 1) x (F + B) slowest
        out["ideal_formula_s"] = (case.microbatches + case.ranks - 1) * max(
            x + y for x, y in zip(f, b, strict=True))
    cores = available_cores()
    if case.ranks > cores and all(r.get("cpu") for r in per_rank):
        cpu = _stage_costs(sched.stages, per_rank, "cpu")
        shared = simulate_shared(sched, cpu, cores,
                                 after=_per_rank(case, per_rank, "optimizer_cpu"))
        out["ideal_shared_s"] = max(shared.meta["finished"])
        out["cores"] = cores
    return out


def _per_rank(case: Case, per_rank: list[dict[str, Any]], bucket: str) -> list[float]:
    """Each rank's mean seconds per step in its profile's ``bucket`` (0 where not measured)."""
    if len(per_rank) != case.ranks:
        raise ValueError(f"{len(per_rank)} ranks' measurements for {case.ranks} ranks")
    return [r.get("profile", {}).get(bucket, 0.0) / case.steps for r in per_rank]


def _stage_costs(stages: int, per_rank: list[dict[str, Any]], field: str) -> CostModel:
    """Per stage and op, the mean ``field`` ("durations": wall, "cpu") of every rank."""
    dur: dict[str, float] = {}
    for r in per_rank:
        dur.update(r[field])

    def per_stage(op: str, fallback: Callable[[int], float]) -> list[float]:
        return [dur.get(f"{s}{op}", fallback(s)) for s in range(stages)]

    f = per_stage("F", lambda s: 0.0)
    b = per_stage("B", lambda s: dur.get(f"{s}I", 0.0) + dur.get(f"{s}W", 0.0))
    i = per_stage("I", lambda s: b[s] / 2)
    w = per_stage("W", lambda s: b[s] / 2)
    return CostModel.from_lists(stages, f, i, w, b, unit="s")


def _profile(case: Case, per_rank: list[dict[str, Any]]) -> list[dict[str, float]]:
    """Per rank, ms per step in each bucket; ``engine``: all but compute, wait and optimizer."""
    out = []
    for r in per_rank:
        ms = {k: v / case.steps * 1e3 for k, v in r["profile"].items()}
        ms["other"] = ms["step"] - sum(ms[k] for k in (*BUCKETS, "optimizer"))
        ms["engine"] = ms["step"] - ms["compute"] - ms["wait"] - ms["optimizer"]
        ms["torch_other"] = ms["torch_step"] - ms["torch_compute"]
        ms["actions_per_step"] = r["actions"]
        ms["engine_us_per_action"] = ms["engine"] * 1e3 / max(1, r["actions"])
        out.append(ms)
    return out
