"""Measure a model's per-layer costs: F, I, W and B times, output, stash and parameter bytes.

Each layer runs as a one-layer stage would, one microbatch at a time, each repeat a whole
forward then a whole backward of the model: plain ``nn.Linear`` modules become SplitLinear with
a WeightGradQueue, so

    F  forward (the last layer: forward and loss, as the last stage does)
    I  backward with weight gradients deferred (LayerNorm/Embedding weights are done here too)
    W  the deferred Linear weight gradients (``queue.run``)
    B  a full backward, measured on a separate forward

and, when given an optimizer, the update of each layer's parameters (once per training step;
a rank updates its stages' parameters between steps), timed right after each pass's B from
its gradients: a rank updates right after its step's last backward, with the caches holding
what that left (timed alone, on fixed gradients, the update came out about half of what a
2-rank MLP run paid). Times are the median (or,
``statistic="min"``, the fastest) of ``repeats`` after ``warmup`` runs, on one torch thread
(as a rank runs); the minimum estimates an idle machine's time where other work preempts the
profile. Stash bytes are the tensors autograd saves during F
(``saved_tensors_hooks``), counted once per storage and without parameters. The result is a
``LayerCosts`` (``pipesim.layercosts``); message costs are ``profiling.comm``'s.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from pipesim.config import RunConfig
from pipesim.layercosts import LayerCost, LayerCosts, ProfiledModel
from pipesim.models import build_layers, loss_function, make_batch
from pipesim.runtime.optim import make_optimizer
from pipesim.runtime.reference import reference_call
from pipesim.runtime.splitlinear import WeightGradQueue, convert_linears
from pipesim.runtime.stage import LossFn

MakeOptimizer = Callable[[list[nn.Parameter]], torch.optim.Optimizer]
_STATISTICS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median,
                                                          "mean": statistics.fmean,
                                                          "min": min}
STATISTICS = tuple(_STATISTICS)


@dataclass(frozen=True)
class ProfileConfig(RunConfig):
    """A run config plus the GPT's sizes (``seq_len``, ``heads``; None = the model's default)."""

    seq_len: int | None = None
    heads: int | None = None


@contextmanager
def one_thread() -> Any:
    """Run on one torch thread, as each rank does; restore the count afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


class _StashCounter:
    """saved_tensors_hooks that add up the bytes F keeps for backward, once per storage."""

    def __init__(self, params: Sequence[torch.Tensor]) -> None:
        self.skip = {p.untyped_storage().data_ptr() for p in params}
        self.seen: dict[int, int] = {}

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        if storage.data_ptr() not in self.skip:
            self.seen[storage.data_ptr()] = storage.nbytes()
        return t

    @staticmethod
    def unpack(t: torch.Tensor) -> torch.Tensor:
        return t

    @property
    def total(self) -> int:
        return sum(self.seen.values())


Tensors = tuple[torch.Tensor, ...]
Example = torch.Tensor | Sequence[torch.Tensor]  # one microbatch: a tensor or a tuple of them


def as_tensors(value: Any, where: str) -> Tensors:
    """A tensor or a tuple/list of tensors as a tuple; TypeError naming ``where`` otherwise."""
    values = (value,) if isinstance(value, torch.Tensor) else value
    if not isinstance(values, tuple | list) or not values or \
            not all(isinstance(v, torch.Tensor) for v in values):
        raise TypeError(f"{where} gave {type(value).__name__}; between layers pass a tensor or "
                        f"a tuple of tensors")
    return tuple(values)


class _LayerTimer:
    """One layer as a one-layer stage: fixed inputs, its own weight-gradient queue."""

    def __init__(self, layer: nn.Module, xs: Tensors, target: torch.Tensor | None,
                 loss_fn: LossFn | None, first: bool) -> None:
        self.layer = layer
        self.queue = WeightGradQueue()
        convert_linears(layer, self.queue)
        # as a stage: the model's input needs no gradient, a received float activation does
        self.xs = tuple(x.detach().requires_grad_(not first and x.is_floating_point())
                        for x in xs)
        self.target, self.loss_fn = target, loss_fn
        self._grads: list[torch.Tensor | None] | None = None  # stand-in output gradients
        self._weights: list[torch.Tensor] = []  # as given, put back after each timed update

    def forward(self) -> Tensors:
        out = self.layer(*self.xs)
        if self.loss_fn is not None and self.target is not None:
            return (self.loss_fn(out, self.target),)
        return as_tensors(out, type(self.layer).__name__)

    def input_grads(self) -> tuple[torch.Tensor | None, ...]:
        return tuple(x.grad for x in self.xs)

    def backward(self, outs: Tensors, grads: tuple[torch.Tensor | None, ...] | None,
                 split: bool) -> float:
        """I (split) or B from ``grads`` (fixed random ones if None); returns seconds."""
        if grads is None:
            if self._grads is None:
                gen = torch.Generator().manual_seed(0)
                self._grads = [torch.randn(o.shape, generator=gen, dtype=o.dtype) * 1e-2
                               if o.dim() and o.is_floating_point() else None for o in outs]
            grads = tuple(self._grads)
        pairs = [(o, g) for o, g in zip(outs, grads, strict=True)
                 if o.requires_grad and (g is not None or not o.dim())]
        self.queue.current, self.queue.defer = 0, split
        t0 = time.perf_counter()
        try:
            if pairs:  # nothing to differentiate: a layer with no weights on the model's input
                torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])
        finally:
            self.queue.current, self.queue.defer = None, False
        return time.perf_counter() - t0

    def weight(self) -> float:
        t0 = time.perf_counter()
        self.queue.run(0)
        return time.perf_counter() - t0

    def clear(self) -> None:
        for x in self.xs:
            x.grad = None
        for p in self.layer.parameters():
            p.grad = None

    def optimizer(self, make: MakeOptimizer) -> torch.optim.Optimizer | None:
        """This layer's own optimizer (``make``), None for a layer without trained weights;
        ``update`` times it and puts the weights back."""
        params = [p for p in self.layer.parameters() if p.requires_grad]
        if not params:
            return None
        self._weights = [p.detach().clone() for p in params]
        return make(params)

    def update(self, optimizer: torch.optim.Optimizer) -> float:
        """One timed step of ``optimizer``, then the weights as they were: the profile times the
        update without training the layer on its one batch, pass after pass."""
        t0 = time.perf_counter()
        optimizer.step()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            for p, w in zip((p for p in self.layer.parameters() if p.requires_grad),
                            self._weights, strict=True):
                p.copy_(w)
        return seconds

    def stash_bytes(self) -> int:
        counter = _StashCounter(list(self.layer.parameters()))
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            out = self.forward()
        self.backward(out, None, split=False)
        self.clear()
        return counter.total


Times = list[tuple[float, float, float, float, float]]  # per layer: F, I, W, B, update s
MAX_PASSES = 10_000  # a time-limited profile stops here however fast its passes are


def _timed_forward(timers: Sequence[_LayerTimer]) -> tuple[list[Tensors], list[float]]:
    outs, seconds = [], []
    for t in timers:
        t0 = time.perf_counter()
        outs.append(t.forward())
        seconds.append(time.perf_counter() - t0)
    return outs, seconds


def _one_pass(timers: Sequence[_LayerTimer],
              optimizers: Sequence[torch.optim.Optimizer | None] = ()) -> Times:
    """The model as a pipeline runs it: F through every layer, then I and W back to the first
    (each layer's output gradient is the next layer's input gradient); then F again and B, and
    each layer's ``optimizers`` update from B's gradients (as a rank updates right after its
    step's last backward, with what that left in the caches; 0 where none)."""
    n = len(timers)
    i_, w, b, o = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    outs, f = _timed_forward(timers)
    for k in reversed(range(n)):
        grads = timers[k + 1].input_grads() if k + 1 < n else None
        i_[k] = timers[k].backward(outs[k], grads, split=True)
        w[k] = timers[k].weight()
    for t in timers:
        t.clear()
    outs, _ = _timed_forward(timers)
    for k in reversed(range(n)):
        grads = timers[k + 1].input_grads() if k + 1 < n else None
        b[k] = timers[k].backward(outs[k], grads, split=False)
    for k, optimizer in enumerate(optimizers):
        if optimizer is not None:
            o[k] = timers[k].update(optimizer)
    for t in timers:
        t.clear()
    return list(zip(f, i_, w, b, o, strict=True))


def profile_layers(layers: Sequence[nn.Module], example: Example,
                   target: torch.Tensor | None = None, loss_fn: LossFn | None = None,
                   repeats: int = 5, warmup: int = 2, names: Sequence[str] = (),
                   model: str = "", notes: str = "", statistic: str = "median",
                   optimizer: MakeOptimizer | None = None, seconds: float = 0.0,
                   probe: Callable[[], float] | None = None,
                   data: Callable[[], object] | None = None) -> LayerCosts:
    """Per-layer costs of ``layers`` for one microbatch ``example`` (its first dim = samples): a
    tensor or a tuple of tensors, passed as positional arguments; so is what a layer returns.

    ``repeats`` whole passes after ``warmup``, and more until the timed passes have taken
    ``seconds`` (at most ``MAX_PASSES``): on a machine whose speed wanders, a profile as long
    as the run it predicts sees the same mix of fast and slow moments.

    Each repeat runs the whole model forward, then backward, layer by layer (so the caches
    hold what they hold in a run, not one layer's weights). The last layer's F includes
    ``loss_fn(output, target)`` when both are given; otherwise its backward starts from a fixed
    random gradient. ``optimizer(params)`` builds the optimizer whose update of each layer is
    timed (none: 0). After every pass, apart from it: ``data()``, which makes one step's
    batch as the run does, timed there because a run makes it right after an update (in a
    loop of its own it ran 2-3 times faster than in a run), its mean the result's
    ``data_time``; then ``probe`` (the reference kernel, ``runtime.reference``), its mean
    the result's ``reference_time`` (none: 0). The layers are copied: the caller's modules
    are not changed.
    """
    if repeats < 1 or warmup < 0 or not seconds >= 0:
        raise ValueError(f"repeats must be >= 1, warmup and seconds >= 0; got {repeats}, "
                         f"{warmup}, {seconds}")
    pick = _STATISTICS[statistic]
    with one_thread():
        timers, outs, xs = [], [], as_tensors(example, "the example")
        for i, original in enumerate(layers):
            is_last = i == len(layers) - 1
            timers.append(_LayerTimer(copy.deepcopy(original), xs, target if is_last else None,
                                      loss_fn if is_last else None, first=i == 0))
            with torch.no_grad():
                xs = as_tensors(timers[-1].layer(*timers[-1].xs), f"layer {i} "
                                f"({type(original).__name__})")
            outs.append(xs)
        stash = [t.stash_bytes() for t in timers]
        optimizers = [t.optimizer(optimizer) for t in timers] if optimizer else []
        for _ in range(warmup + (1 if optimizers else 0)):  # the first update makes the state
            _one_pass(timers, optimizers)
        runs: list[Times] = []
        probes: list[float] = []
        batches: list[float] = []
        stop = time.perf_counter() + seconds
        while len(runs) < repeats or (time.perf_counter() < stop and len(runs) < MAX_PASSES):
            runs.append(_one_pass(timers, optimizers))
            if data is not None:
                t0 = time.perf_counter()
                data()
                batches.append(time.perf_counter() - t0)
            if probe is not None:
                probes.append(probe())
    costs = []
    for i, (timer, out) in enumerate(zip(timers, outs, strict=True)):
        f, i_, w, b, update = (pick([r[i][k] for r in runs]) for k in range(5))
        name = names[i] if i < len(names) else f"{i}:{type(layers[i]).__name__}"
        params = sum(_nbytes(p) for p in timer.layer.parameters())
        costs.append(LayerCost(f, i_, w, b, float(sum(map(_nbytes, out))), float(stash[i]),
                               float(params), name, update))
    first = as_tensors(example, "the example")[0]
    batch = first.shape[0] if first.dim() else 1
    return LayerCosts(tuple(costs), microbatch_size=batch, model=model, notes=notes,
                      reference_time=statistics.fmean(probes) if probes else 0.0,
                      data_time=statistics.fmean(batches) if batches else 0.0)


def profile_model(cfg: RunConfig, repeats: int = 5, warmup: int = 2,
                  processes: int = 1, statistic: str = "median", seconds: float = 0.0
                  ) -> LayerCosts:
    """Per-layer costs of ``cfg``'s model at its microbatch size (``cfg.batch_size``).

    The profile runs in ``processes`` forked processes at once, each started as a rank is (one
    torch thread, ``keep_freed_memory``), and keeps per layer and op the mean of their
    figures: with as many processes as the run has ranks, the cores are as busy as during the
    run. A fresh process, not this one, so what this process allocated before does not count.
    ``seconds``: each process goes on past ``repeats`` passes until its passes took that long
    (``profile_layers``). Raises ValueError for a model the config cannot build.
    """
    from pipesim.processes.launch import RankFailedError, launch
    try:
        result: LayerCosts = launch(_Profile(cfg, repeats, warmup, statistic, seconds),
                                    processes)
    except RankFailedError as err:
        if err.kind == "ValueError":
            raise ValueError(err.error) from None
        raise
    return result


def _profile_here(cfg: RunConfig, repeats: int, warmup: int, statistic: str,
                  seconds: float = 0.0) -> LayerCosts:
    layers = build_layers(cfg)
    inputs, targets = make_batch(cfg, 0)
    training = not cfg.schedule.forward_only
    passes = f"{repeats}" + (f" or more ({seconds:g} s)" if seconds else "")
    notes = (f"pipesim profile: model {cfg.model}, hidden {cfg.hidden_size}, "
             f"{len(layers)} layers, {cfg.dtype}, {statistic} of {passes} after {warmup} "
             f"warm-up, 1 thread" + (f", optimizer {cfg.optimizer}" if training else ""))

    def make(params: list[nn.Parameter]) -> torch.optim.Optimizer:
        return make_optimizer(cfg.optimizer, params, cfg.lr)

    steps = iter(range(1, 1 << 30))

    def data() -> None:  # as ``pipesim run`` makes a step's batch on the first and last ranks
        xs, ys = make_batch(cfg, next(steps))
        torch.cat(xs), torch.cat(ys)

    costs = profile_layers(layers, inputs[0], targets[0], loss_function(cfg), repeats, warmup,
                           model=cfg.model, notes=notes, statistic=statistic,
                           optimizer=make if training else None, seconds=seconds,
                           probe=reference_call, data=data)
    return dataclasses.replace(costs, profiled=profiled_model(cfg, len(layers)))


def profiled_model(cfg: RunConfig, layers: int) -> ProfiledModel:
    """What ``cfg`` builds, in ``pipesim run``'s terms, defaults resolved (the GPT's sizes)."""
    if cfg.model == "gpt":
        from pipesim.models.gpt import gpt_shape
        shape = gpt_shape(cfg)
        return ProfiledModel(cfg.model, cfg.hidden_size, layers, cfg.optimizer, cfg.dtype,
                             seq_len=shape.seq_len, heads=shape.heads)
    return ProfiledModel(cfg.model, cfg.hidden_size, layers, cfg.optimizer, cfg.dtype, cfg.loss)


@dataclass(frozen=True)
class _Profile:
    """Picklable worker: every rank profiles the whole model; rank 0 returns the mean."""

    cfg: RunConfig
    repeats: int
    warmup: int
    statistic: str
    seconds: float = 0.0

    def __call__(self, rank: int, world: int, monitor: Any = None) -> LayerCosts | None:
        return mean_over_ranks(_profile_here(self.cfg, self.repeats, self.warmup,
                                             self.statistic, self.seconds), rank, world)


def mean_over_ranks(costs: LayerCosts, rank: int, world: int) -> LayerCosts | None:
    """On rank 0, ``costs`` with every time the mean of the ``world`` ranks' (a collective)."""
    if world == 1:
        return costs
    times = torch.tensor([[c.forward, c.backward_input, c.backward_weight, c.backward,
                           c.optimizer] for c in costs.layers]
                         + [[costs.reference_time, costs.data_time, 0.0, 0.0, 0.0]],
                         dtype=torch.float64)
    dist.all_reduce(times)
    times /= world
    if rank != 0:
        return None
    (reference, data), times = times[-1, :2].tolist(), times[:-1]
    layers = tuple(c._replace(forward=float(t[0]), backward_input=float(t[1]),
                              backward_weight=float(t[2]), backward=float(t[3]),
                              optimizer=float(t[4]))
                   for c, t in zip(costs.layers, times, strict=True))
    return dataclasses.replace(costs, layers=layers, reference_time=reference, data_time=data,
                               notes=costs.notes +
                               f", mean of {world} processes profiling at once")


__all__ = [
    "STATISTICS",
    "MakeOptimizer",
    "ProfileConfig",
    "Times",
    "mean_over_ranks",
    "one_thread",
    "profile_layers",
    "profile_model",
    "profiled_model",
]
