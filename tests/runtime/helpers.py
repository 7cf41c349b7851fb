"""Run a job in forked ranks and compute the same step in one process."""

from __future__ import annotations

import torch
from torch import nn

from pipesim.runtime.launch import launch
from pipesim.runtime.train import (
    RankResult,
    RunConfig,
    TrainJob,
    build_layers,
    loss_function,
    make_batch,
)


def run_job(cfg: RunConfig) -> RankResult:
    result = launch(TrainJob(cfg), cfg.schedule.ranks)
    assert result is not None
    return result


def reference_step(cfg: RunConfig) -> tuple[float, list[nn.Module]]:
    """Loss and per-layer gradients of step 0, the whole batch in one process."""
    layers = build_layers(cfg)
    model = nn.Sequential(*layers)
    inputs, targets = make_batch(cfg, 0)
    loss = loss_function(cfg)(model(torch.cat(inputs)), torch.cat(targets))
    loss.backward()
    return float(loss.detach()), layers


def stage_params(cfg: RunConfig, layers: list[nn.Module]) -> list[list[torch.Tensor]]:
    """Per stage, the reference parameters in the order the runtime reports them."""
    out, start = [], 0
    for size in cfg.stage_balance():
        out.append([p for layer in layers[start:start + size] for p in layer.parameters()])
        start += size
    return out
