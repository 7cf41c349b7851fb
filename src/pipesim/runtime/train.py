"""A training (or inference) job: build the model, cut it into stages, run the schedule.

``TrainJob(config)(rank, world)`` is what each rank runs; it is picklable so it works with
fork, spawn and torchrun alike. Every rank builds the whole model and every batch from the seed
and keeps its own stages, so nothing but activations and gradients crosses ranks.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pipesim.ir import Action, Op, Schedule
from pipesim.runtime import checkpoint
from pipesim.runtime.comm import Comm, exchange_shapes
from pipesim.runtime.engine import ActionHook, Engine, StepRecord
from pipesim.runtime.faults import fault_from_env
from pipesim.runtime.models import get_model, split_layers, uniform_balance
from pipesim.runtime.stage import StageRunner
from pipesim.runtime.trace import gather_events, to_timeline
from pipesim.runtime.watchdog import Monitor
from pipesim.timeline import Timeline

_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# progress(step, steps, mean loss, seconds) after each step, on the last stage's rank
ProgressHook = Callable[[int, int, float, float], None]


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs; the CLI fills it from flags (defaults: the tutorial's demo)."""

    schedule: Schedule
    batch_size: int = 32  # samples per microbatch
    hidden_size: int = 64
    layers: int | None = None  # Linear+ReLU layers; default one per stage
    balance: tuple[int, ...] | None = None  # layers per stage; default uniform
    steps: int = 1
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd | adam
    loss: str = "mse"  # mse | cross-entropy
    model: str = "mlp"
    seed: int = 0
    dtype: str = "float32"
    checkpoint_activations: bool = False
    backend: str = "gloo"
    synthetic: dict[Op, float] = field(default_factory=dict)  # seconds slept per op
    verify: bool = False
    keep_outputs: bool = False  # inference: return the last stage's outputs (tests)
    collect_state: bool = False  # return every stage's final weights and gradients (tests)
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # save every N steps (and after the last) when checkpoint_dir
    resume_dir: str | None = None

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def num_layers(self) -> int:
        return self.layers if self.layers is not None else self.schedule.stages

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must agree with to be resumed by this run."""
        return {"model": self.model, "hidden_size": self.hidden_size, "layers": self.num_layers,
                "balance": self.stage_balance(), "ranks": self.schedule.ranks,
                "stages": self.schedule.stages,
                "stage_to_rank": list(self.schedule.stage_to_rank),
                "optimizer": self.optimizer, "dtype": self.dtype, "loss": self.loss,
                "seed": self.seed}

    def stage_balance(self) -> list[int]:
        if self.balance is not None:
            return list(self.balance)
        return uniform_balance(self.num_layers, self.schedule.stages)


def build_layers(cfg: RunConfig) -> list[nn.Module]:
    return get_model(cfg.model).build(cfg)


def make_batch(cfg: RunConfig, step: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Microbatches of inputs and targets for ``step``, the same on every rank."""
    return get_model(cfg.model).batch(cfg, step)


def loss_function(cfg: RunConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return get_model(cfg.model).loss(cfg)


def make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    if name == "adam":
        return torch.optim.Adam(params, lr=lr)
    return torch.optim.SGD(params, lr=lr)


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
    """Picklable per-rank entry point: ``TrainJob(cfg, hook)(rank, world)``."""

    def __init__(self, cfg: RunConfig, hook: ActionHook | None = None,
                 progress: ProgressHook | None = None) -> None:
        self.cfg = cfg
        self.hook = hook
        self.progress = progress  # called on the rank holding the last stage

    def device(self, rank: int) -> torch.device:
        if self.cfg.backend == "nccl":
            local = rank % max(1, torch.cuda.device_count())
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cpu")

    def __call__(self, rank: int, world: int, monitor: Monitor | None = None
                 ) -> RankResult | None:
        cfg, sched = self.cfg, self.cfg.schedule
        if world != sched.ranks:
            raise ValueError(f"the schedule has {sched.ranks} ranks but the job has {world}")
        t_begin = time.perf_counter()
        device = self.device(rank)
        layers = build_layers(cfg)
        modules = split_layers(layers, cfg.stage_balance())
        mine = {s: modules[s].to(device) for s in sched.stages_of(rank)}
        loss_fn = loss_function(cfg)
        runners = {s: StageRunner(s, sched.stages, m, loss_fn, sched.microbatches,
                                  cfg.checkpoint_activations) for s, m in mine.items()}
        params = [p for r in runners.values() for p in r.parameters()]
        optimizer = make_optimizer(cfg.optimizer, params, cfg.lr) if params else None
        comm = Comm(sched, rank, device)
        first_inputs, _ = make_batch(cfg, 0)
        exchange_shapes(comm, sched, mine, first_inputs[0].to(device))
        dist.barrier()
        origin = time.perf_counter()
        start_step = _resume(cfg, rank, runners, optimizer) if cfg.resume_dir else 0
        fault, current = fault_from_env(), [start_step]

        def before(action: Action) -> None:
            if fault is not None:
                fault.maybe_fire(rank, action, current[0])

        engine = Engine(sched, rank, runners, comm, origin, self.hook, dict(cfg.synthetic),
                        monitor=monitor, before=before)
        records: list[StepRecord] = []
        for step in range(start_step, cfg.steps):
            current[0] = step
            inputs, targets = make_batch(cfg, step)
            inputs = [x.to(device) for x in inputs]
            targets = [y.to(device) for y in targets]
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            records.append(engine.step(inputs, targets))
            if optimizer is not None and engine.training:
                optimizer.step()
            if cfg.checkpoint_dir and cfg.checkpoint_every and (
                    (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                _save(cfg, rank, step + 1, runners, optimizer)
            if self.progress is not None and sched.stages - 1 in runners:
                rec = records[-1]
                self.progress(step, cfg.steps, _loss_sum(rec) / sched.microbatches,
                              rec.end - rec.start)
        return self._finish(rank, world, device, records, origin, t_begin, runners)

    def _finish(self, rank: int, world: int, device: torch.device, records: list[StepRecord],
                origin: float, t_begin: float, runners: dict[int, StageRunner]
                ) -> RankResult | None:
        cfg, sched = self.cfg, self.cfg.schedule
        timelines, losses, step_seconds = [], [], []
        for rec in records:
            per_rank = gather_events(rec.events, world, device)
            bounds = torch.tensor([rec.start, rec.end, _loss_sum(rec)], dtype=torch.float64,
                                  device=device)
            gathered = [torch.zeros_like(bounds) for _ in range(world)]
            dist.all_gather(gathered, bounds)
            start = min(float(g[0]) for g in gathered)
            end = max(float(g[1]) for g in gathered)
            step_seconds.append(end - start)
            losses.append(sum(float(g[2]) for g in gathered) / sched.microbatches)
            timelines.append(to_timeline(sched, per_rank, origin=start))
        params = gather_stage_tensors(cfg, runners, rank, device, grads=False) \
            if cfg.verify or cfg.collect_state else None
        grads = gather_stage_tensors(cfg, runners, rank, device, grads=True) \
            if cfg.collect_state else None
        outputs = _gather_outputs(cfg, records[-1], rank, world, device) \
            if cfg.keep_outputs else None
        if rank != 0:
            return None
        assert params is not None or not (cfg.verify or cfg.collect_state)
        diff = max_weight_difference(cfg, params) if cfg.verify and params else None
        return RankResult(losses, step_seconds, timelines[-1].to_dict(),
                          [t.to_dict() for t in timelines], outputs, diff,
                          time.perf_counter() - t_begin,
                          params if cfg.collect_state else None, grads)  # type: ignore[arg-type]


def _save(cfg: RunConfig, rank: int, step: int, runners: dict[int, StageRunner],
          optimizer: torch.optim.Optimizer | None) -> None:
    assert cfg.checkpoint_dir is not None
    checkpoint.save_rank(cfg.checkpoint_dir, step, rank, {
        "step": step, "rank": rank,
        "stages": {str(s): r.module.state_dict() for s, r in runners.items()},
        "optimizer": optimizer.state_dict() if optimizer is not None else {},
        "rng": torch.get_rng_state(),
    })
    dist.barrier()  # every rank's file is in place before latest.json moves
    if rank == 0:
        checkpoint.publish(cfg.checkpoint_dir, step, cfg.schedule.ranks, cfg.fingerprint())
    dist.barrier()


def _resume(cfg: RunConfig, rank: int, runners: dict[int, StageRunner],
            optimizer: torch.optim.Optimizer | None) -> int:
    """Load this rank's state from the checkpoint; returns the step to continue from."""
    assert cfg.resume_dir is not None
    latest = checkpoint.read_latest(cfg.resume_dir)
    checkpoint.check_fingerprint(latest["fingerprint"], cfg.fingerprint(), cfg.resume_dir)
    step = int(latest["step"])
    state = checkpoint.load_rank(cfg.resume_dir, step, rank)
    try:
        for s, runner in runners.items():
            runner.module.load_state_dict(state["stages"][str(s)])
        if optimizer is not None:
            optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"])
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise checkpoint.CheckpointError(
            f"checkpoint of rank {rank} in {cfg.resume_dir} does not fit this model "
            f"({type(err).__name__}: {str(err).splitlines()[0][:200]})") from None
    return step


def _loss_sum(rec: StepRecord) -> float:
    return sum(rec.losses.values())


def _gather_outputs(cfg: RunConfig, rec: StepRecord, rank: int, world: int,
                    device: torch.device) -> list[list[float]] | None:
    """Inference outputs of the last stage, flattened, delivered to rank 0."""
    sched = cfg.schedule
    last_rank = sched.stage_to_rank[sched.stages - 1]
    m = sched.microbatches
    shape = (m, cfg.batch_size * cfg.hidden_size)
    buf = torch.zeros(shape, dtype=_DTYPES[cfg.dtype], device=device)
    if rank == last_rank:
        for mb, y in rec.outputs.items():
            buf[mb] = y.reshape(-1)
    if last_rank != 0:
        if rank == last_rank:
            dist.send(buf, dst=0)
        elif rank == 0:
            dist.recv(buf, src=last_rank)
    return buf.cpu().tolist() if rank == 0 else None


def reference_train(cfg: RunConfig) -> list[nn.Module]:
    """The same model trained in one process on the same full batches (the ground truth)."""
    layers = build_layers(cfg)
    model = nn.Sequential(*layers)
    params = list(model.parameters())
    optimizer = make_optimizer(cfg.optimizer, params, cfg.lr)
    loss_fn = loss_function(cfg)
    for step in range(cfg.steps):
        inputs, targets = make_batch(cfg, step)
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(torch.cat(inputs)), torch.cat(targets))
        loss.backward()
        optimizer.step()
    return layers


def _stage_shapes(cfg: RunConfig) -> list[list[tuple[torch.Size, torch.dtype]]]:
    stages = split_layers(build_layers(cfg), cfg.stage_balance())
    return [[(p.shape, p.dtype) for p in m.parameters()] for m in stages]


def gather_stage_tensors(cfg: RunConfig, runners: dict[int, StageRunner], rank: int,
                         device: torch.device, grads: bool) -> list[list[torch.Tensor]] | None:
    """Every stage's parameters (or their gradients; zeros where None) on rank 0, on the CPU."""
    sched = cfg.schedule
    shapes = _stage_shapes(cfg)

    def local(s: int) -> list[torch.Tensor]:
        out = []
        for p in runners[s].parameters():
            t = p.grad if grads else p
            out.append(torch.zeros_like(p) if t is None else t.detach())
        return out

    if rank != 0:
        works = []
        for s in sorted(runners):
            if shapes[s]:
                flat = torch.cat([t.reshape(-1) for t in local(s)]).contiguous()
                works.append((dist.isend(flat, dst=0, tag=s), flat))
        for work, _ in works:
            work.wait()
        return None
    result = []
    for s in range(sched.stages):
        if sched.stage_to_rank[s] == 0:
            result.append([t.cpu().clone() for t in local(s)])
            continue
        numel = sum(shape.numel() for shape, _ in shapes[s])
        if not numel:
            result.append([])
            continue
        flat = torch.zeros(numel, dtype=shapes[s][0][1], device=device)
        dist.recv(flat, src=sched.stage_to_rank[s], tag=s)
        pieces = flat.cpu().split([shape.numel() for shape, _ in shapes[s]])
        result.append([x.reshape(shape) for x, (shape, _) in zip(pieces, shapes[s], strict=True)])
    return result


def max_weight_difference(cfg: RunConfig, params: list[list[torch.Tensor]]) -> float:
    """Largest |pipelined - reference| over every final weight (``--verify``)."""
    ref = split_layers(reference_train(cfg), cfg.stage_balance())
    worst = 0.0
    for got, module in zip(params, ref, strict=True):
        for g, want in zip(got, module.parameters(), strict=True):
            worst = max(worst, float((g - want.detach()).abs().max()))
    return worst


def timeline_of(result: RankResult) -> Timeline:
    return Timeline.from_dict(result.timeline)
