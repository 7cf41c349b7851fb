"""The two engines of a head-to-head, built in one rank from the same seed: ``Side`` each.

pipesim's side is ``pipesim.Pipeline``, the public library a user's script (and ``pipesim
run``) trains through, with a ``Probe`` among its observers; torch's is ``TorchPipeline``
(shapes inferred). Neither side is patched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from .probe import Probe

Batch = tuple[list[torch.Tensor], list[torch.Tensor]]  # inputs and targets per microbatch


@dataclass
class Side:
    """One engine in this rank: a training step in three calls, and its parameters by stage."""

    name: str
    step: Callable[[int], list[float]]  # step index -> last-stage losses (empty elsewhere)
    zero_grad: Callable[[], None]
    opt_step: Callable[[], None]
    params: dict[int, list[nn.Parameter]]  # this rank's stages -> parameters, module order


def make_batches(microbatches: int, batch: int, hidden: int, seed: int, steps: int
                 ) -> list[Batch]:
    """``steps`` batches of random inputs and targets, the same on every rank."""
    gen = torch.Generator().manual_seed(seed + 1)
    out = []
    for _ in range(steps):
        xs = [torch.randn(batch, hidden, generator=gen) for _ in range(microbatches)]
        ys = [torch.randn(batch, hidden, generator=gen) for _ in range(microbatches)]
        out.append((xs, ys))
    return out


def mlp_layers(hidden: int, layers: int, seed: int) -> list[nn.Module]:
    """The tutorial's model: ``layers`` blocks of Linear(hidden, hidden) + ReLU from ``seed``."""
    gen = torch.Generator().manual_seed(seed)
    blocks: list[nn.Module] = []
    for _ in range(layers):
        linear = nn.Linear(hidden, hidden)
        with torch.no_grad():  # the same initialisation every time, the global RNG untouched
            bound = hidden ** -0.5
            linear.weight.uniform_(-bound, bound, generator=gen)
            linear.bias.uniform_(-bound, bound, generator=gen)
        blocks.append(nn.Sequential(linear, nn.ReLU()))
    return blocks


def stage_modules(hidden: int, layers: int, seed: int, stages: int) -> list[nn.Sequential]:
    """The MLP cut into ``stages`` contiguous pieces, the remainder on the first ones."""
    if layers < stages:
        raise ValueError(f"{layers} layers cannot fill {stages} stages")
    blocks = mlp_layers(hidden, layers, seed)
    base, extra = divmod(layers, stages)
    out, start = [], 0
    for s in range(stages):
        size = base + (1 if s < extra else 0)
        out.append(nn.Sequential(*blocks[start:start + size]))
        start += size
    return out


def one_process_grads(modules: Sequence[nn.Module], batch: Batch
                      ) -> dict[int, list[torch.Tensor | None]]:
    """The same step in one process: the mean of the microbatches' losses, backward."""
    model = nn.Sequential(*modules)
    xs, ys = batch
    loss = sum((nn.functional.mse_loss(model(x), y) for x, y in zip(xs, ys, strict=True)),
               torch.zeros(())) / len(xs)
    loss.backward()
    return {s: [None if p.grad is None else p.grad.detach().clone() for p in m.parameters()]
            for s, m in enumerate(modules)}


def pipesim_side(name: str, schedule: Any, rank: int, modules: Sequence[nn.Module],
                 batches: Sequence[Batch], lr: float, probe: Probe | None) -> Side:
    """pipesim.Pipeline over ``modules`` (one per stage; ``probe`` sees every action)."""
    import pipesim

    pipe = pipesim.Pipeline(list(modules), schedule, loss_fn=nn.functional.mse_loss,
                            balance=[1] * schedule.stages,
                            observers=[probe] if probe is not None else [])
    if probe is not None:
        probe.clock = pipe.clock
    opt = torch.optim.SGD(list(pipe.parameters()), lr=lr)
    whole = [(torch.cat(xs), torch.cat(ys)) for xs, ys in batches]

    def step(i: int) -> list[float]:
        x, y = whole[i]
        pipe.step(x if pipe.holds_first else None, y if pipe.holds_last else None)
        rec = pipe.last_record
        assert rec is not None
        if probe is not None:
            probe.account(rec)
        return [float(rec.losses[mb]) for mb in sorted(rec.losses)]

    return Side(name, step, lambda: opt.zero_grad(set_to_none=True), opt.step,
                {s: list(pipe.modules[s].parameters()) for s in pipe.stages})


def torch_side(name: str, kind: str, schedule: Any, rank: int, modules: Sequence[nn.Module],
               batches: Sequence[Batch], lr: float, group: Any, examples: str = "inferred"
               ) -> tuple[Side, Any]:
    """torch's schedule for pipesim's ``kind`` on this rank's stages; also its TorchPipeline."""
    from .torchpp import TorchPipeline, torch_placement

    world = schedule.ranks
    if torch_placement(kind, world) != schedule.stage_to_rank:
        raise RuntimeError(f"{kind}: torch places stages {torch_placement(kind, world)}, "
                           f"pipesim {schedule.stage_to_rank}")
    local = {s: modules[s] for s in schedule.stages_of(rank)}
    pipe = TorchPipeline(kind, rank, world, local, schedule.stages,
                         schedule.microbatches, batches[0][0][0], nn.functional.mse_loss, group,
                         examples=examples)
    opt = torch.optim.SGD([p for m in local.values() for p in m.parameters()], lr=lr)
    side = Side(name, lambda i: pipe.step(*batches[i]), lambda: opt.zero_grad(set_to_none=True),
                opt.step, {s: list(m.parameters()) for s, m in local.items()})
    return side, pipe
