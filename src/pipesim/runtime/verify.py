"""After the run: weights, gradients and outputs brought to global rank 0, and the reference.

Only replica 0's pipeline sends (every replica holds the same weights after the all-reduce).
Shapes are known on both sides because every rank builds the whole model from the seed.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from pipesim.config import RunConfig
from pipesim.models import get_model, split_layers, torch_dtype
from pipesim.ranks import RankGrid
from pipesim.runtime.optim import make_optimizer
from pipesim.runtime.stage import Payload, StageRunner


def reference_train(cfg: RunConfig) -> list[nn.Module]:
    """The same model trained in one process on the same full batches (the ground truth)."""
    spec = get_model(cfg.model)
    layers = spec.build(cfg)
    model = nn.Sequential(*layers)
    optimizer = make_optimizer(cfg.optimizer, list(model.parameters()), cfg.lr)
    loss_fn = spec.loss(cfg)
    for step in range(cfg.steps):
        inputs, targets = spec.batch(cfg, step)
        optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(loss_fn(model(torch.cat(inputs)), torch.cat(targets)))
        optimizer.step()
    return layers


def _stage_shapes(cfg: RunConfig) -> list[list[torch.Size]]:
    stages = split_layers(get_model(cfg.model).build(cfg), cfg.stage_balance())
    return [[p.shape for p in m.parameters()] for m in stages]


def gather_stage_tensors(cfg: RunConfig, grid: RankGrid, runners: dict[int, StageRunner],
                         rank: int, device: torch.device, grads: bool
                         ) -> list[list[torch.Tensor]] | None:
    """Every stage's parameters (or gradients; zeros where None) on global rank 0, on the CPU."""
    sched = cfg.schedule
    replica, _ = grid.coords(rank)
    shapes = _stage_shapes(cfg)

    def local(s: int) -> list[torch.Tensor]:
        return [torch.zeros_like(p) if (p.grad if grads else p) is None
                else (p.grad if grads else p).detach()  # type: ignore[union-attr]
                for p in runners[s].parameters()]

    if rank != 0:
        if replica == 0:
            works = []
            for s in sorted(runners):
                if shapes[s]:
                    flat = torch.cat([t.reshape(-1) for t in local(s)]).contiguous()
                    works.append((dist.isend(flat, dst=0, tag=s), flat))
            for work, _ in works:
                assert work is not None
                work.wait()
        return None
    result: list[list[torch.Tensor]] = []
    for s in range(sched.stages):
        owner = grid.rank(0, sched.stage_to_rank[s])
        if owner == 0:
            result.append([t.cpu().clone() for t in local(s)])
            continue
        numel = sum(shape.numel() for shape in shapes[s])
        if not numel:
            result.append([])
            continue
        flat = torch.zeros(numel, dtype=torch_dtype(cfg), device=device)
        dist.recv(flat, src=owner, tag=s)
        pieces = torch.split(flat.cpu(), [shape.numel() for shape in shapes[s]])
        result.append([x.reshape(shape) for x, shape in zip(pieces, shapes[s], strict=True)])
    return result


def gather_outputs(cfg: RunConfig, grid: RankGrid, outputs: dict[int, Payload], rank: int,
                   device: torch.device) -> list[list[float]] | None:
    """Inference outputs of replica 0's last stage, flattened, delivered to global rank 0."""
    sched = cfg.schedule
    last = grid.rank(0, sched.stage_to_rank[sched.stages - 1])
    shape = (sched.microbatches, cfg.batch_size * cfg.hidden_size)
    buf = torch.zeros(shape, dtype=torch_dtype(cfg), device=device)
    if rank == last:
        for mb, y in outputs.items():
            buf[mb] = y[0].reshape(-1)
    if last != 0:
        if rank == last:
            dist.send(buf, dst=0)
        elif rank == 0:
            dist.recv(buf, src=last)
    return buf.cpu().tolist() if rank == 0 else None


def max_weight_difference(cfg: RunConfig, params: list[list[torch.Tensor]]) -> float:
    """Largest |pipelined - reference| over every final weight (``--verify``)."""
    ref = split_layers(reference_train(cfg), cfg.stage_balance())
    worst = 0.0
    for got, module in zip(params, ref, strict=True):
        for g, want in zip(got, module.parameters(), strict=True):
            worst = max(worst, float((g - want.detach()).abs().max()))
    return worst


__all__ = ["gather_outputs", "gather_stage_tensors", "max_weight_difference", "reference_train"]
