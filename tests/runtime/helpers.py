"""Run a job in forked ranks and compute the same step in one process."""

from __future__ import annotations

import torch
from torch import nn

from pipesim.processes.launch import launch
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


def assert_step_matches(cfg: RunConfig, rtol: float = 1e-12, result: RankResult | None = None
                        ) -> None:
    """A pipelined step's loss and every parameter's gradient equal one process's."""
    import pytest
    result = result if result is not None else run_job(cfg)
    want_loss, layers = reference_step(cfg)
    assert result.losses[0] == pytest.approx(want_loss, rel=rtol, abs=1e-14)
    assert result.grads is not None and len(result.grads) == cfg.schedule.stages
    for s, (got_stage, want_stage) in enumerate(zip(result.grads, stage_params(cfg, layers),
                                                    strict=True)):
        assert len(got_stage) == len(want_stage) > 0
        for i, (g, w) in enumerate(zip(got_stage, want_stage, strict=True)):
            assert w.grad is not None
            torch.testing.assert_close(g, w.grad, rtol=rtol, atol=1e-14,
                                       msg=lambda e, s=s, i=i: f"stage {s} param {i}: {e}")
