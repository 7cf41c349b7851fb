"""``pipesim.Pipeline``: train your own model through pipesim's engine, in your own script.

    pipe = pipesim.Pipeline(model, "zb-h1", microbatches=8, loss_fn=loss_fn)
    opt = torch.optim.AdamW(pipe.parameters())
    loss = pipe.step(x, y); opt.step(); opt.zero_grad()

Every rank builds the same model (or builds it on the meta device) and keeps only the layers of
its own stages, named as in the model. ``step`` splits the batch into microbatches and runs the
schedule; gradients land in ``.grad`` as one unpipelined backward of the batch's mean loss
would put them. Each step starts with one small all-gather of every rank's checks and the
batch's shape signature: a mistake raises on every rank, and new shapes are re-inferred.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pipesim.ir import Action, Schedule
from pipesim.ranks import RankGrid
from pipesim.runtime.agree import PipelineError, all_ints, raise_if_any, shared_origin
from pipesim.runtime.batch import (
    BatchCheck,
    forward_schedule,
    resolve_schedule,
    split_microbatches,
)
from pipesim.runtime.comm import Comm, exchange_shapes
from pipesim.runtime.dp import GradReducer, last_gradient_actions
from pipesim.runtime.engine import Engine, Observer, StepRecord, perf_clock
from pipesim.runtime.layers import choose_balance, layer_list, materialize, stage_modules
from pipesim.runtime.meeting import Meeting
from pipesim.runtime.stage import LossFn, StageRunner
from pipesim.runtime.trace import gather_events, to_timeline
from pipesim.timeline import Timeline


class _ReduceOnDone(Observer):
    """Starts a stage's gradient all-reduce right after its last gradient action (dp > 1)."""

    def __init__(self, reducer: GradReducer, final: dict[Action, int]) -> None:
        self.reducer, self.final = reducer, final

    def done(self, rank: int, action: Action, detail: dict[str, Any]) -> None:
        if action in self.final:
            self.reducer.start(self.final[action])
        self.reducer.poll()


class Pipeline:
    """This rank's share of ``model`` under ``schedule``; see the module docstring.

    ``model``: an nn.Sequential (or ModuleList, or list) of layers; ``schedule``: a registered
    name, a Schedule, or a schedule file; ``balance``: layers per stage, else ``partition``
    ("uniform", "params", or "time", which profiles ``example``); ``dp``: pipeline replicas,
    each training on its contiguous share of the batch; ``init_fn(layer)`` initialises a layer
    built on the meta device (default: each submodule's ``reset_parameters``).
    """

    def __init__(self, model: nn.Module | Sequence[nn.Module], schedule: str | Schedule,
                 microbatches: int | None = None, loss_fn: LossFn | None = None, *,
                 virtual_stages: int | None = None, balance: Sequence[int] | None = None,
                 partition: str = "uniform", example: torch.Tensor | None = None,
                 dp: int = 1, checkpoint_activations: bool = False,
                 init_fn: Callable[[nn.Module], None] | None = None,
                 device: torch.device | str | None = None, rank_order: str = "pipeline-first",
                 observers: Sequence[Observer] = ()) -> None:
        if not dist.is_available() or not dist.is_initialized():
            raise PipelineError("torch.distributed is not initialised: run inside "
                                "pipesim.launch(fn, world_size), or call pipesim.init() under "
                                "torchrun")
        from pipesim.processes.launch import settle_gloo_at_exit
        settle_gloo_at_exit()  # torch 2.13's gloo threads can outlive the script (its doc)
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.device = torch.device(device) if device is not None else _default_device()
        names, layers = layer_list(model)
        if dp < 1 or self.world % dp:
            raise PipelineError(f"dp={dp} does not divide the job's {self.world} processes into "
                                f"equal pipelines")
        self.schedule = resolve_schedule(schedule, self.world // dp, microbatches,
                                         virtual_stages)
        self.microbatches, self.dp = self.schedule.microbatches, dp
        if not self.schedule.forward_only and loss_fn is None:
            raise PipelineError(f"schedule {self.schedule.name or '(file)'} trains: give "
                                f"loss_fn(output, target)")
        self.balance = choose_balance(layers, self.schedule.stages, balance, partition, example)
        self.grid = RankGrid(self.schedule.ranks, dp, rank_order)
        self.replica, self.pipeline_rank = self.grid.coords(self.rank)
        _agree_on_model(self, names, layers)
        groups = [dist.new_group(self.grid.stage_group(p)) if dp > 1 else None
                  for p in range(self.schedule.ranks)]  # every rank makes every group, in order
        self.stages = self.schedule.stages_of(self.pipeline_rank)
        mine = stage_modules(names, layers, self.balance, self.stages)
        self.modules: dict[int, nn.Module] = {}
        error = None
        try:
            self.modules = {s: materialize(m, self.device, init_fn) for s, m in mine.items()}
        except PipelineError as err:
            error = str(err)
        raise_if_any(error, self.device)  # the rank that holds the layer knows; all raise
        last = self.schedule.stages - 1
        self.runners = {s: StageRunner(s, self.schedule.stages, m, loss_fn if s == last else None,
                                       self.microbatches, checkpoint_activations)
                        for s, m in self.modules.items()}
        self.holds_first, self.holds_last = 0 in self.runners, last in self.runners
        self._loss_group = groups[self.schedule.stage_to_rank[last]]
        self.clock = perf_clock(shared_origin(self.device))  # seconds on the ranks' shared clock
        # the batch check's all-gather once a step; set up here, where every rank has just met
        # (a rank failing between its files' creation and removal would leave them behind)
        self._meeting = Meeting(self.device, BatchCheck.WIDTH)
        self._observers = _watchdog_observers() + list(observers)  # the watchdog sees it first
        self.reducer = GradReducer(self.runners, groups[self.pipeline_rank], dp, self.clock) \
            if dp > 1 and not self.schedule.forward_only else None
        if self.reducer is not None:
            final = last_gradient_actions(self.schedule.actions[self.pipeline_rank])
            self._observers.insert(0, _ReduceOnDone(self.reducer, final))
        self._engines: dict[bool, tuple[Engine, list[int] | None]] = {}
        self.last_record: StepRecord | None = None
        self.last_spans: list[tuple[int, float, float]] = []

    # ------------------------------------------------------------------ parameters
    def named_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """This rank's parameters, named as in the original model (``"3.weight"``)."""
        for s in self.stages:
            yield from self.modules[s].named_parameters()

    def parameters(self) -> Iterator[nn.Parameter]:
        for _, p in self.named_parameters():
            yield p

    def state_dict(self) -> dict[str, torch.Tensor]:
        """This rank's stages' state, keys as in the original model's state_dict."""
        out: dict[str, torch.Tensor] = {}
        for s in self.stages:
            out.update(self.modules[s].state_dict())
        return out

    def load_state_dict(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load this rank's keys of a whole-model (or this rank's) state dict."""
        for s in self.stages:
            keys = set(self.modules[s].state_dict())
            self.modules[s].load_state_dict({k: v for k, v in state.items() if k in keys},
                                            strict=strict)

    # ------------------------------------------------------------------ running
    def step(self, inputs: Any = None, targets: Any = None) -> float | None:
        """One training step on the whole batch (all replicas' shares): returns the batch's
        mean loss on the ranks holding the last stage, else None. Only the first stage's rank
        reads ``inputs`` and only the last stage's rank reads ``targets``."""
        if self.schedule.forward_only:
            raise PipelineError(f"schedule {self.schedule.name} is forward-only: use "
                                f"pipe.forward(inputs), or a training schedule")
        record = self._run(True, inputs, targets)
        self.last_spans = self.reducer.finish() if self.reducer is not None else []
        if not self.holds_last:
            return None
        total = record.loss_sum()
        if self._loss_group is not None:
            t = torch.tensor([total], dtype=torch.float64, device=self.device)
            dist.all_reduce(t, group=self._loss_group)
            total = float(t)
        return total / (self.microbatches * self.dp)

    @torch.no_grad()
    def forward(self, inputs: Any = None) -> Any:
        """Inference through the pipeline (each rank's forwards in its schedule order): this
        replica's outputs, concatenated over microbatches, on the last stage's rank; else None."""
        record = self._run(False, inputs, None)
        if not self.holds_last:
            return None
        outs = [record.outputs[mb] for mb in range(self.microbatches)]
        joined = tuple(torch.cat(parts) for parts in zip(*outs, strict=True))
        return joined[0] if len(joined) == 1 else joined

    def _engine(self, training: bool) -> tuple[Engine, list[int] | None]:
        if training not in self._engines:
            sched = self.schedule if training else forward_schedule(self.schedule)
            comm = Comm(sched, self.pipeline_rank, self.device,
                        peers=self.grid.pipeline(self.replica))
            engine = Engine(sched, self.pipeline_rank, self.runners, comm, self.clock,
                            self._observers)
            self._engines[training] = (engine, None)
        return self._engines[training]

    def _run(self, training: bool, inputs: Any, targets: Any) -> StepRecord:
        begin = self.clock()
        engine, known = self._engine(training)
        check = BatchCheck(self.microbatches * self.dp, self.replica, self.microbatches)
        code = check.local(inputs if self.holds_first else None, self.holds_first,
                           targets if self.holds_last else None, self.holds_last and training)
        # every rank sees every rank's checks: the ranks meet here once a step
        headers = self._meeting.all_ints(code)
        synced = self.clock()
        error = check.error(headers)
        if error is not None:
            raise PipelineError(error)
        signature = [h[3] for h in headers]
        if signature != known:  # first step, or the batch's shapes changed
            engine.comm.reset_shapes()
            xs = split_microbatches(inputs, check.total, self.replica, self.microbatches) \
                if self.holds_first else None
            raise_if_any(exchange_shapes(engine.comm, engine.schedule, self.runners,
                                         xs[0] if xs else None), self.device)
            engine.comm.connect_local()
            self._engines[training] = (engine, signature)
        xs = split_microbatches(inputs, check.total, self.replica, self.microbatches) \
            if self.holds_first else []
        ys = split_microbatches(targets, check.total, self.replica, self.microbatches,
                                keep_single=True) if self.holds_last and training else []
        self.last_record = engine.step(xs, ys)
        self.last_record.begin, self.last_record.synced = begin, synced
        return self.last_record

    def transports(self) -> dict[str, int]:
        """How this rank's messages of one step travel, once a step (else a forward) has run:
        between ranks of one machine on CPU through shared memory, else on the backend."""
        if not self._engines:
            raise PipelineError("no step has run yet: call pipe.step(...) first")
        engine, _ = self._engines.get(True) or next(iter(self._engines.values()))
        return engine.comm.transports()

    # ------------------------------------------------------------------ seeing
    def timeline(self) -> Timeline | None:
        """Collective (call on every rank): the last step, measured, as a Timeline on rank 0
        (replica 0's pipeline, one clock); None on the other ranks."""
        if self.last_record is None:
            raise PipelineError("no step has run yet: call pipe.step(...) first")
        rec = self.last_record
        everyone = gather_events(rec.events, self.last_spans, self.world, self.device)
        bounds = all_floats([rec.start, rec.end, rec.begin, rec.synced], self.device)
        if self.rank != 0:
            return None
        start, end = min(b[0] for b in bounds), max(b[1] for b in bounds)
        engine, _ = self._engine(not self.schedule.forward_only)
        ranks = self.grid.pipeline(0)
        return to_timeline(engine.schedule, [everyone[g] for g in ranks], start, end,
                           [bounds[g][2] for g in ranks], [bounds[g][3] for g in ranks])


def all_floats(values: Sequence[float], device: torch.device) -> list[list[float]]:
    """Collective: every rank's float ``values`` (same length), in rank order."""
    mine = torch.tensor(list(values), dtype=torch.float64, device=device)
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    return [t.cpu().tolist() for t in everyone]


def _default_device() -> torch.device:
    if dist.get_backend() == "nccl":
        local = int(os.environ.get("LOCAL_RANK", dist.get_rank() % torch.cuda.device_count()))
        torch.cuda.set_device(local)
        return torch.device("cuda", local)
    return torch.device("cpu")


def _watchdog_observers() -> list[Observer]:
    from pipesim.processes.launch import current_monitor
    monitor = current_monitor()
    return [monitor] if monitor is not None else []


def _agree_on_model(pipe: Pipeline, names: list[str], layers: list[nn.Module]) -> None:
    """Every rank built the same model, schedule and balance; else every rank raises."""
    from pipesim.runtime.agree import crc, structure
    from pipesim.schedule_io import format_text
    mine = [crc(structure(names, layers)), crc([format_text(pipe.schedule)]),
            crc(pipe.balance), pipe.dp]
    everyone = all_ints(mine, pipe.device)
    what = ("model (layer names, classes, parameter shapes or dtypes)", "schedule",
            "balance", "dp")
    error = None
    for rank, theirs in enumerate(everyone):
        differs = [w for w, a, b in zip(what, everyone[0], theirs, strict=True) if a != b]
        if differs:
            error = f"rank {rank}'s {differs[0]} differs from rank 0's: every rank must " \
                    f"build the same model and pipeline"
            break
    raise_if_any(error if pipe.rank == 0 else None, pipe.device)


__all__ = ["Pipeline", "PipelineError"]
