"""A training (or inference) job: build the model, cut it into stages, run the schedule.

``TrainJob(config)(rank, world)`` is what each rank runs; it is picklable so it works with
fork, spawn and torchrun alike. Every rank builds the whole model and every batch from the seed
and keeps its own stages, so nothing but activations and gradients crosses ranks.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pipesim.grid import RankGrid
from pipesim.ir import Action, Op, Schedule
from pipesim.runtime import checkpoint
from pipesim.runtime.collect import (
    gather_outputs,
    gather_stage_tensors,
    max_weight_difference,
    reference_train,
)
from pipesim.runtime.comm import Comm, exchange_shapes
from pipesim.runtime.dp import GradReducer, last_gradient_actions
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
    seq_len: int | None = None  # --model gpt: tokens per sequence (None: 64)
    heads: int | None = None  # --model gpt: attention heads (None: hidden / 16)
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
    dp: int = 1  # pipeline replicas (data parallel); world size = dp x schedule.ranks
    rank_order: str = "pipeline-first"  # see runtime/grid.py

    @property
    def grid(self) -> RankGrid:
        return RankGrid(self.schedule.ranks, self.dp, self.rank_order)

    @property
    def global_microbatches(self) -> int:
        """Microbatches per step over all replicas; replica d takes its m-long slice."""
        return self.dp * self.schedule.microbatches

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
                "seed": self.seed, "dp": self.dp}

    def stage_balance(self) -> list[int]:
        if self.balance is not None:
            return list(self.balance)
        return uniform_balance(self.num_layers, self.schedule.stages)


def build_layers(cfg: RunConfig) -> list[nn.Module]:
    return get_model(cfg.model).build(cfg)


def make_batch(cfg: RunConfig, step: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """All dp x m microbatches of inputs and targets for ``step``, the same on every rank."""
    return get_model(cfg.model).batch(cfg, step)


def replica_batch(cfg: RunConfig, step: int, replica: int, device: torch.device
                  ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Replica ``replica``'s shard: its m consecutive microbatches of the global batch."""
    inputs, targets = make_batch(cfg, step)
    m = cfg.schedule.microbatches
    if len(inputs) != cfg.global_microbatches:
        raise RuntimeError(f"model {cfg.model!r} made {len(inputs)} microbatches; "
                           f"expected {cfg.global_microbatches}")
    mine = slice(replica * m, (replica + 1) * m)
    return [x.to(device) for x in inputs[mine]], [y.to(device) for y in targets[mine]]


def loss_function(cfg: RunConfig) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    return get_model(cfg.model).loss(cfg)


def make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """SGD, or Adam with its fused kernel (CPU and CUDA): one pass over each tensor instead of
    a chain of element-wise ops with temporaries; on one CPU thread it updates four 512x512
    Linears in 1.6-2.1 ms against 5.5-6.4 ms (freed memory kept) or 12 ms (glibc's defaults)
    for the for-loop Adam (benchmarks/RESULTS_predict.md)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=True)
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
    """Picklable per-rank entry point: ``TrainJob(cfg, hook)(rank, world, monitor)``."""

    def __init__(self, cfg: RunConfig, hook: ActionHook | None = None,
                 progress: ProgressHook | None = None) -> None:
        self.cfg = cfg
        self.hook = hook
        self.progress = progress  # called on the rank holding the last stage (replica 0)

    def prepare(self) -> None:
        """In the launcher, before forking: import what every rank would import on its own.

        Building a torch optimizer imports torch._dynamo (seconds); done once here, the forked
        ranks share it instead of each importing it at the same time on the same cores.
        """
        if not self.cfg.schedule.forward_only:
            import torch._dynamo  # noqa: F401

    def device(self, rank: int) -> torch.device:
        if self.cfg.backend == "nccl":
            local = rank % max(1, torch.cuda.device_count())
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cpu")

    def __call__(self, rank: int, world: int, monitor: Monitor | None = None
                 ) -> RankResult | None:
        cfg, sched, grid = self.cfg, self.cfg.schedule, self.cfg.grid
        if world != grid.world:
            raise ValueError(f"the run needs {grid.world} processes ({cfg.dp} replicas x "
                             f"{sched.ranks} pipeline ranks) but the job has {world}")
        t_begin = time.perf_counter()
        device = self.device(rank)
        replica, prank = grid.coords(rank)
        # every rank creates every group, in the same order (a torch.distributed rule)
        groups = [dist.new_group(grid.stage_group(p)) if cfg.dp > 1 else None
                  for p in range(sched.ranks)]
        modules = split_layers(build_layers(cfg), cfg.stage_balance())
        loss_fn = loss_function(cfg)
        runners = {s: StageRunner(s, sched.stages, modules[s].to(device), loss_fn,
                                  sched.microbatches, cfg.checkpoint_activations)
                   for s in sched.stages_of(prank)}
        params = [p for r in runners.values() for p in r.parameters()]
        training = not sched.forward_only
        optimizer = make_optimizer(cfg.optimizer, params, cfg.lr) if params and training \
            else None
        comm = Comm(sched, prank, device, peers=grid.pipeline(replica))
        needs_data = bool({0, sched.stages - 1} & set(runners))
        example = replica_batch(cfg, 0, replica, device)[0][0] if 0 in runners else None
        exchange_shapes(comm, sched, {s: r.module for s, r in runners.items()}, example)
        origin = shared_origin(device)
        start_step = _resume(cfg, rank, runners, optimizer) if cfg.resume_dir else 0
        fault, current = fault_from_env(), [start_step]
        reducer = GradReducer(runners, groups[prank], cfg.dp,
                              lambda: time.perf_counter() - origin) if cfg.dp > 1 else None
        final = last_gradient_actions(sched.actions[prank])

        def before(action: Action) -> None:
            if fault is not None:
                fault.maybe_fire(rank, action, current[0])

        def after(action: Action) -> None:
            if reducer is not None:
                if action in final:
                    reducer.start(final[action])
                reducer.poll()

        engine = Engine(sched, prank, runners, comm, origin, self.hook, dict(cfg.synthetic),
                        monitor=monitor, before=before, after=after)
        records: list[tuple[StepRecord, list[tuple[int, float, float]]]] = []
        for step in range(start_step, cfg.steps):
            current[0] = step
            # only the ranks holding the first or the last stage read the batch
            inputs, targets = replica_batch(cfg, step, replica, device) if needs_data \
                else ([], [])
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            rec = engine.step(inputs, targets)
            spans = reducer.finish() if reducer is not None and engine.training else []
            records.append((rec, spans))
            if optimizer is not None and engine.training:
                optimizer.step()
            if cfg.checkpoint_dir and cfg.checkpoint_every and (
                    (step + 1) % cfg.checkpoint_every == 0 or step + 1 == cfg.steps):
                _save(cfg, rank, step + 1, runners, optimizer)
            if self.progress is not None and replica == 0 and sched.stages - 1 in runners:
                self.progress(step, cfg.steps, _loss_sum(rec) / sched.microbatches,
                              rec.end - rec.start)
        return self._finish(rank, device, records, t_begin, runners)

    def _finish(self, rank: int, device: torch.device,
                records: list[tuple[StepRecord, list[tuple[int, float, float]]]],
                t_begin: float, runners: dict[int, StageRunner]) -> RankResult | None:
        cfg, sched, grid = self.cfg, self.cfg.schedule, self.cfg.grid
        timelines, losses, step_seconds = [], [], []
        previous_end: float | None = None
        for rec, spans in records:
            everyone = gather_events(rec.events, spans, grid.world, device)
            bounds = torch.tensor([rec.start, max([rec.end, *(e for _, _, e in spans)]),
                                   _loss_sum(rec)], dtype=torch.float64, device=device)
            gathered = [torch.zeros_like(bounds) for _ in range(grid.world)]
            dist.all_gather(gathered, bounds)
            start = min(float(g[0]) for g in gathered)
            end = max(float(g[1]) for g in gathered)
            # a step's time is the pipeline's period: from the previous step's end (ranks that
            # finished early already wait on this step) or, for the first, from its start
            step_seconds.append(end - (previous_end if previous_end is not None else start))
            previous_end = end
            losses.append(sum(float(g[2]) for g in gathered) / cfg.global_microbatches)
            pipeline = [everyone[g] for g in grid.pipeline(0)]
            # meta: where the step lies on the run's clock (the step time between two steps)
            timelines.append(dataclasses.replace(to_timeline(sched, pipeline, origin=start),
                                                 meta={"start": start, "end": end}))
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


def _boot_id() -> int:
    """This machine's boot id as an integer: equal ids share one monotonic clock."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return int(fh.read().strip().replace("-", "")[:15], 16)
    except (OSError, ValueError):
        return -1


def shared_origin(device: torch.device) -> float:
    """Time zero of every rank's clock: rank 0's, when all ranks share one machine's monotonic
    clock (perf_counter); else each rank's own, taken right after a barrier."""
    dist.barrier()
    mine = torch.tensor([time.perf_counter(), float(_boot_id())], dtype=torch.float64,
                        device=device)
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    boots = {float(t[1]) for t in everyone}
    if len(boots) == 1 and -1.0 not in boots:
        return float(everyone[0][0])
    return float(mine[0])


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
        checkpoint.publish(cfg.checkpoint_dir, step, cfg.grid.world, cfg.fingerprint())
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


def timeline_of(result: RankResult) -> Timeline:
    return Timeline.from_dict(result.timeline)


__all__ = ["RankResult", "RunConfig", "TrainJob", "build_layers", "loss_function",
           "make_batch", "reference_train"]
