"""Measure a model's per-layer costs: F, I, W and B times, output, stash and parameter bytes.

Each layer runs alone on the output of the layers before it, one microbatch at a time, the way
a stage runs it: plain ``nn.Linear`` modules become SplitLinear with a WeightGradQueue, so

    F  forward (the last layer: forward and loss, as the last stage does)
    I  backward with weight gradients deferred (LayerNorm/Embedding weights are done here too)
    W  the deferred Linear weight gradients (``queue.run``)
    B  a full backward, measured on a separate forward

Times are the median (or, ``statistic="min"``, the fastest) of ``repeats`` after ``warmup``
runs, on one torch thread (as a rank runs); the minimum estimates an idle machine's time where
other work preempts the profile. Stash bytes are the tensors autograd saves during F
(``saved_tensors_hooks``), counted once per storage and without parameters. ``measure_comm``
times a 2-rank gloo ping-pong for the message latency and bandwidth. The result is a
``LayerCosts`` (``pipesim.layercosts``).
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

from pipesim.layercosts import LayerCost, LayerCosts
from pipesim.runtime.splitlinear import WeightGradQueue, convert_linears
from pipesim.runtime.train import RunConfig, build_layers, loss_function, make_batch

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_STATISTICS: dict[str, Callable[[list[float]], float]] = {"median": statistics.median,
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


class _LayerTimer:
    """Times F, I, W and B of one layer on a fixed input (and output gradient or target)."""

    def __init__(self, layer: nn.Module, x: torch.Tensor, target: torch.Tensor | None,
                 loss_fn: LossFn | None, first: bool) -> None:
        self.layer = layer
        self.queue = WeightGradQueue()
        convert_linears(layer, self.queue)
        # as a stage: the model's input needs no gradient, a received activation does
        self.x = x.detach().requires_grad_(not first and x.is_floating_point())
        self.target, self.loss_fn = target, loss_fn
        self.grad: torch.Tensor | None = None

    def forward(self) -> torch.Tensor:
        out: torch.Tensor = self.layer(self.x)
        if self.loss_fn is not None and self.target is not None:
            return self.loss_fn(out, self.target)
        if self.grad is None:
            gen = torch.Generator().manual_seed(0)
            self.grad = torch.randn(out.shape, generator=gen, dtype=out.dtype) * 1e-2
        return out

    def backward(self, out: torch.Tensor, split: bool) -> None:
        self.queue.current, self.queue.defer = 0, split
        try:
            torch.autograd.backward(out, None if self.loss_fn is not None else self.grad)
        finally:
            self.queue.current, self.queue.defer = None, False

    def once(self) -> tuple[float, float, float, float]:
        """(F, I, W, B) seconds of one run."""
        t0 = time.perf_counter()
        out = self.forward()
        t1 = time.perf_counter()
        self.backward(out, split=True)
        t2 = time.perf_counter()
        self.queue.run(0)
        t3 = time.perf_counter()
        self._clear()
        out = self.forward()
        t4 = time.perf_counter()
        self.backward(out, split=False)
        t5 = time.perf_counter()
        self._clear()
        return t1 - t0, t2 - t1, t3 - t2, t5 - t4

    def _clear(self) -> None:
        self.x.grad = None
        for p in self.layer.parameters():
            p.grad = None

    def stash_bytes(self) -> int:
        counter = _StashCounter(list(self.layer.parameters()))
        with torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack):
            out = self.forward()
        self.backward(out, split=False)
        self._clear()
        return counter.total


def profile_layers(layers: Sequence[nn.Module], example: torch.Tensor,
                   target: torch.Tensor | None = None, loss_fn: LossFn | None = None,
                   repeats: int = 5, warmup: int = 2, names: Sequence[str] = (),
                   model: str = "", notes: str = "", statistic: str = "median") -> LayerCosts:
    """Per-layer costs of ``layers`` for one microbatch ``example`` (its first dim = samples).

    The last layer's F includes ``loss_fn(output, target)`` when both are given; otherwise every
    layer's backward starts from a fixed random output gradient. The layers are copied: the
    caller's modules are not changed.
    """
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0; got {repeats}, {warmup}")
    pick = _STATISTICS[statistic]
    costs = []
    x = example
    with one_thread():
        for i, original in enumerate(layers):
            layer = copy.deepcopy(original)
            is_last = i == len(layers) - 1
            timer = _LayerTimer(layer, x, target if is_last else None,
                                loss_fn if is_last else None, first=i == 0)
            with torch.no_grad():
                out = layer(timer.x)
            stash = timer.stash_bytes()
            runs = [timer.once() for _ in range(warmup + repeats)][warmup:]
            f, i_, w, b = (pick([r[k] for r in runs]) for k in range(4))
            name = names[i] if i < len(names) else f"{i}:{type(original).__name__}"
            params = sum(_nbytes(p) for p in layer.parameters())
            costs.append(LayerCost(f, i_, w, b, float(_nbytes(out)), float(stash),
                                   float(params), name))
            x = out
    batch = example.shape[0] if example.dim() else 1
    return LayerCosts(tuple(costs), microbatch_size=batch, model=model, notes=notes)


def profile_model(cfg: RunConfig, repeats: int = 5, warmup: int = 2,
                  processes: int = 1, statistic: str = "median") -> LayerCosts:
    """Per-layer costs of ``cfg``'s model at its microbatch size (``cfg.batch_size``).

    ``processes`` > 1 profiles in that many forked processes at once (as many as the run's
    ranks) and keeps, per layer and op, the mean of their medians: the cores are then as busy
    as during the run, which matters where ranks share a machine with each other (and others).
    """
    if processes > 1:
        from pipesim.runtime.launch import launch
        result: LayerCosts = launch(_ConcurrentProfile(cfg, repeats, warmup, statistic),
                                    processes)
        return result
    layers = build_layers(cfg)
    inputs, targets = make_batch(cfg, 0)
    notes = (f"pipesim profile: model {cfg.model}, hidden {cfg.hidden_size}, "
             f"{len(layers)} layers, {cfg.dtype}, {statistic} of {repeats} after {warmup} "
             f"warm-up, 1 thread")
    return profile_layers(layers, inputs[0], targets[0], loss_function(cfg), repeats, warmup,
                          model=cfg.model, notes=notes, statistic=statistic)


@dataclass(frozen=True)
class _ConcurrentProfile:
    """Picklable worker: every rank profiles the whole model; rank 0 returns the mean."""

    cfg: RunConfig
    repeats: int
    warmup: int
    statistic: str

    def __call__(self, rank: int, world: int, monitor: Any = None) -> LayerCosts | None:
        costs = profile_model(self.cfg, self.repeats, self.warmup, statistic=self.statistic)
        times = torch.tensor([[c.forward, c.backward_input, c.backward_weight, c.backward]
                              for c in costs.layers], dtype=torch.float64)
        dist.all_reduce(times)
        times /= world
        if rank != 0:
            return None
        layers = tuple(c._replace(forward=float(t[0]), backward_input=float(t[1]),
                                  backward_weight=float(t[2]), backward=float(t[3]))
                       for c, t in zip(costs.layers, times, strict=True))
        return dataclasses.replace(costs, layers=layers, notes=costs.notes +
                                   f", mean of {world} processes profiling at once")


# ----------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class PingPong:
    """Picklable 2-rank worker: one-way times of messages of ``sizes`` bytes (median or min)."""

    sizes: tuple[int, ...]
    repeats: int = 30
    statistic: str = "median"

    def __call__(self, rank: int, world: int, monitor: Any = None) -> list[float] | None:
        out = []
        for size in self.sizes:
            buf = torch.zeros(max(1, size // 4), dtype=torch.float32)
            times = []
            for _ in range(self.repeats + 3):
                t0 = time.perf_counter()
                if rank == 0:
                    dist.send(buf, 1)
                    dist.recv(buf, 1)
                else:
                    dist.recv(buf, 0)
                    dist.send(buf, 0)
                times.append((time.perf_counter() - t0) / 2)
            out.append(_STATISTICS[self.statistic](times[3:]))
        return out if rank == 0 else None


def measure_comm(message_bytes: int, repeats: int = 30, statistic: str = "median"
                 ) -> tuple[float, float]:
    """(latency seconds, bandwidth bytes/s) of gloo between two forked ranks on this machine.

    Latency is the one-way time of a 4-byte message; bandwidth fits the extra time of a
    ``message_bytes`` message (the model's largest activation). Infinite if not measurable.
    """
    from pipesim.runtime.launch import launch
    small, large = 4, max(message_bytes, 8)
    times = launch(PingPong((small, large), repeats, statistic), 2)
    latency, big = float(times[0]), float(times[1])
    extra = big - latency
    bandwidth = (large - small) / extra if extra > 0 else float("inf")
    return latency, bandwidth
