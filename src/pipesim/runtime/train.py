"""The built-in models' training (or inference) job: ``pipesim run`` as a client of Pipeline.

``TrainJob(config)(rank, world)`` is what each rank runs; it is picklable so it works with
fork, spawn and torchrun alike. Every rank builds the whole model and every batch from the seed;
``pipesim.Pipeline`` keeps its own stages, so nothing but activations and gradients crosses
ranks. A user's script does the same with its own model (examples/own_model.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from pipesim.config import RunConfig
from pipesim.ir import Action
from pipesim.models import build_layers, loss_function, make_batch
from pipesim.processes.faults import Fault, fault_from_env
from pipesim.runtime import checkpoint
from pipesim.runtime.engine import Observer, StepRecord
from pipesim.runtime.optim import make_optimizer
from pipesim.runtime.pipeline import Pipeline
from pipesim.runtime.reference import reference_call
from pipesim.runtime.stage import StageRunner
from pipesim.runtime.synthetic import slow_down
from pipesim.runtime.trace import gather_events, to_timeline
from pipesim.runtime.verify import (
    gather_outputs,
    gather_stage_tensors,
    max_weight_difference,
    reference_train,
)
from pipesim.timeline import Timeline

# hook(rank, action, detail) called after each action (see engine.Observer for ``detail``)
ActionHook = Callable[[int, Action, dict[str, Any]], None]
# progress(step, steps, mean loss, seconds) after each step, on the last stage's rank
ProgressHook = Callable[[int, int, float, float], None]


class _Hook(Observer):
    def __init__(self, hook: ActionHook) -> None:
        self.hook = hook

    def done(self, rank: int, action: Action, detail: dict[str, Any]) -> None:
        self.hook(rank, action, detail)


class _Faults(Observer):
    """PIPESIM_FAULT: fail on purpose at one action of one step (launcher tests)."""

    def __init__(self, fault: Fault, rank: int, step: int) -> None:
        self.fault, self.rank, self.step = fault, rank, step

    def started(self, rank: int, action: Action) -> None:
        self.fault.maybe_fire(self.rank, action, self.step)

    def finished(self, rank: int) -> None:
        self.step += 1


class _CpuTime(Observer):
    """Sums the CPU seconds of this rank's computations (``detail["cpu"]``) since ``take``."""

    wants_cpu_time = True

    def __init__(self) -> None:
        self.seconds = 0.0

    def done(self, rank: int, action: Action, detail: dict[str, Any]) -> None:
        self.seconds += detail.get("cpu", 0.0)

    def take(self) -> float:
        seconds, self.seconds = self.seconds, 0.0
        return seconds


@dataclass
class RankResult:
    """What rank 0 returns to the launcher (plain data: it is pickled back to the parent)."""

    losses: list[float]
    step_seconds: list[float]
    timeline: dict[str, Any]  # Timeline.to_dict() of the last step
    timelines: list[dict[str, Any]]  # every step
    outputs: list[list[float]] | None = None
    verify_max_abs_diff: float | None = None
    wall_seconds: float = 0.0
    params: list[list[torch.Tensor]] | None = None  # per stage, in module.parameters() order
    grads: list[list[torch.Tensor | None]] | None = None


class TrainJob:
    """Picklable per-rank entry point: ``TrainJob(cfg, hook, progress)(rank, world)``."""

    def __init__(self, cfg: RunConfig, hook: ActionHook | None = None,
                 progress: ProgressHook | None = None, probe_every: int = 0,
                 cpu_time: bool = False) -> None:
        self.cfg = cfg
        self.hook = hook
        self.progress = progress  # called on the rank holding the last stage (replica 0)
        # > 0: every rank times the reference kernel (``runtime.reference``) before the
        # first step and every ``probe_every`` steps after it, in the step's time; the step
        # records it (its timeline's ``meta["probe"]``) and ``predict.used_steps`` leaves it
        # out. ``--predict`` reads the machine's speed during the run off it.
        self.probe_every = probe_every
        # True: each step's timeline says how many CPU seconds each rank's actions used
        # (``meta["cpu"]``, ``time.thread_time`` around each computation): what the engine's
        # calibration compares between ranks with a core each and ranks that share cores
        self.cpu_time = cpu_time

    def prepare(self) -> None:
        """In the launcher, before forking: import what every rank would import on its own.

        Building a torch optimizer imports torch._dynamo (seconds); done once here, the forked
        ranks share it instead of each importing it at the same time on the same cores.
        """
        if not self.cfg.schedule.forward_only:
            import torch._dynamo  # noqa: F401

    def __call__(self, rank: int, world: int) -> RankResult | None:
        cfg, sched = self.cfg, self.cfg.schedule
        if world != cfg.grid.world:
            raise ValueError(f"the run needs {cfg.grid.world} processes ({cfg.dp} replicas x "
                             f"{sched.ranks} pipeline ranks) but the job has {world}")
        t_begin = time.perf_counter()
        start_step = _resume_step(cfg) if cfg.resume_dir else 0
        observers: list[Observer] = [_Hook(self.hook)] if self.hook is not None else []
        fault = fault_from_env()
        if fault is not None:
            observers.append(_Faults(fault, rank, start_step))
        cpu = _CpuTime() if self.cpu_time else None
        if cpu is not None:
            observers.append(cpu)
        pipe = Pipeline(build_layers(cfg), sched, loss_fn=loss_function(cfg),
                        balance=cfg.stage_balance(), dp=cfg.dp, rank_order=cfg.rank_order,
                        checkpoint_activations=cfg.checkpoint_activations, observers=observers)
        for runner in pipe.runners.values():
            slow_down(runner, cfg.synthetic)
        params = list(pipe.parameters())
        optimizer = make_optimizer(cfg.optimizer, params, cfg.lr) \
            if params and not sched.forward_only else None
        if cfg.resume_dir:
            _resume(cfg, rank, pipe, optimizer)
        records: list[tuple[StepRecord, list[tuple[int, float, float]], float, float]] = []
        for step in range(start_step, cfg.steps):
            probe = reference_call() if self.probe_every and \
                (step - start_step) % self.probe_every == 0 else 0.0
            loss = self._step(pipe, step, optimizer)
            assert pipe.last_record is not None
            records.append((pipe.last_record, pipe.last_spans, probe,
                            cpu.take() if cpu is not None else 0.0))
            if cfg.checkpoint_dir and cfg.checkpoint_every and (
                    (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                _save(cfg, rank, step + 1, pipe, optimizer)
            if self.progress is not None and pipe.replica == 0 and pipe.holds_last:
                rec = pipe.last_record
                self.progress(step, cfg.steps, loss if loss is not None else 0.0,
                              rec.end - rec.start)
        return self._finish(rank, pipe.device, records, t_begin, pipe.runners)

    def _step(self, pipe: Pipeline, step: int, optimizer: torch.optim.Optimizer | None
              ) -> float | None:
        """One step of the built-in model's data: the whole batch, read where it is needed."""
        cfg = self.cfg
        inputs = targets = None
        if pipe.holds_first or pipe.holds_last:
            xs, ys = make_batch(cfg, step)
            inputs = torch.cat(xs).to(pipe.device) if pipe.holds_first else None
            targets = torch.cat(ys).to(pipe.device) if pipe.holds_last else None
        if optimizer is None:
            pipe.forward(inputs)
            return None
        optimizer.zero_grad(set_to_none=True)
        loss = pipe.step(inputs, targets)
        optimizer.step()
        return loss

    def _finish(self, rank: int, device: torch.device,
                records: list[tuple[StepRecord, list[tuple[int, float, float]], float, float]],
                t_begin: float, runners: dict[int, StageRunner]) -> RankResult | None:
        cfg, sched, grid = self.cfg, self.cfg.schedule, self.cfg.grid
        timelines, losses, step_seconds = [], [], []
        previous_end: float | None = None
        for rec, spans, probe, cpu in records:
            everyone = gather_events(rec.events, spans, grid.world, device)
            bounds = torch.tensor([rec.start, max([rec.end, *(e for _, _, e in spans)]),
                                   rec.loss_sum(), rec.begin, rec.synced, probe, cpu],
                                  dtype=torch.float64, device=device)
            gathered = [torch.zeros_like(bounds) for _ in range(grid.world)]
            dist.all_gather(gathered, bounds)
            start = min(float(g[0]) for g in gathered)
            end = max(float(g[1]) for g in gathered)
            # a step's time is the pipeline's period: from the previous step's end (ranks that
            # finished early already wait on this step) or, for the first, from its start
            step_seconds.append(end - (previous_end if previous_end is not None else start))
            previous_end = end
            losses.append(sum(float(g[2]) for g in gathered) / cfg.global_microbatches)
            ranks = grid.pipeline(0)
            timelines.append(to_timeline(sched, [everyone[g] for g in ranks], start, end,
                                         [float(gathered[g][3]) for g in ranks],
                                         [float(gathered[g][4]) for g in ranks],
                                         [float(gathered[g][5]) for g in ranks],
                                         [float(gathered[g][6]) for g in ranks]))
        want_params = cfg.verify or cfg.collect_state
        params = gather_stage_tensors(cfg, grid, runners, rank, device, grads=False) \
            if want_params else None
        grads = gather_stage_tensors(cfg, grid, runners, rank, device, grads=True) \
            if cfg.collect_state else None
        outputs = gather_outputs(cfg, grid, records[-1][0].outputs, rank, device) \
            if cfg.keep_outputs else None
        if rank != 0:
            return None
        diff = max_weight_difference(cfg, params) if cfg.verify and params else None
        return RankResult(losses, step_seconds, timelines[-1].to_dict(),
                          [t.to_dict() for t in timelines], outputs, diff,
                          time.perf_counter() - t_begin,
                          params if cfg.collect_state else None, grads)  # type: ignore[arg-type]


def _save(cfg: RunConfig, rank: int, step: int, pipe: Pipeline,
          optimizer: torch.optim.Optimizer | None) -> None:
    assert cfg.checkpoint_dir is not None
    checkpoint.save_rank(cfg.checkpoint_dir, step, rank, {
        "step": step, "rank": rank, "model": pipe.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "rng": torch.get_rng_state(),
    })
    dist.barrier()  # every rank's file is in place before latest.json moves
    if rank == 0:
        checkpoint.publish(cfg.checkpoint_dir, step, cfg.grid.world, cfg.fingerprint())
    dist.barrier()


def _resume_step(cfg: RunConfig) -> int:
    assert cfg.resume_dir is not None
    latest = checkpoint.read_latest(cfg.resume_dir)
    checkpoint.check_fingerprint(latest["fingerprint"], cfg.fingerprint(), cfg.resume_dir)
    return int(latest["step"])


def _resume(cfg: RunConfig, rank: int, pipe: Pipeline,
            optimizer: torch.optim.Optimizer | None) -> None:
    """Load this rank's weights, optimizer and RNG state from the checkpoint."""
    assert cfg.resume_dir is not None
    state = checkpoint.load_rank(cfg.resume_dir, _resume_step(cfg), rank)
    try:
        pipe.load_state_dict(state["model"])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise checkpoint.CheckpointError(
            f"checkpoint of rank {rank} in {cfg.resume_dir} does not fit this model "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None


def timeline_of(result: RankResult) -> Timeline:
    return Timeline.from_dict(result.timeline)


__all__ = ["ActionHook", "ProgressHook", "RankResult", "RunConfig", "TrainJob", "build_layers",
           "loss_function", "make_batch", "make_optimizer", "reference_train"]  # old paths kept
