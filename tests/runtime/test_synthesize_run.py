"""A synthesized schedule is an ordinary one: pipesim's engine trains with it, and its torch CSV
runs in torch.distributed.pipelining's ``_PipelineScheduleRuntime``; gradients equal one
process's, every parameter of every stage (float64, so differences are rounding only)."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as dist
from torch import nn

from pipesim.costs import CostModel
from pipesim.planner.synthesize import synthesis
from pipesim.processes.launch import launch
from pipesim.runtime.train import RunConfig
from pipesim.schedule_io import format_csv, format_text, parse_schedule
from tests.runtime.helpers import assert_step_matches


def _uneven(stages: int) -> CostModel:
    """A heavier last stage (a vocabulary head): where a searched schedule beats zb-h1."""
    return CostModel.from_lists(stages, [1] * (stages - 1) + [2], [1] * (stages - 1) + [3], 1)


@pytest.mark.parametrize(("p", "m", "placement"), [(2, 4, "one"), (3, 6, "one"), (2, 4, "v")])
def test_engine_trains_a_synthesized_schedule(p: int, m: int, placement: str,
                                              tmp_path: Path) -> None:
    stages = p * (2 if placement == "v" else 1)
    found = synthesis(p, m, _uneven(stages), max_stashed=2 * p, placement=placement)
    if placement == "one":
        assert found.origin.startswith("search")  # not a registered schedule in disguise
    path = tmp_path / "synth.txt"  # through the file, as `pipesim run --file` reads it
    path.write_text(format_text(found.schedule))
    sched = parse_schedule(path.read_text())
    cfg = RunConfig(schedule=sched, batch_size=3, hidden_size=6, layers=sched.stages + 1,
                    dtype="float64", seed=7, collect_state=True)
    assert_step_matches(cfg)


# ----------------------------------------------------------------------------- torch's runtime

_WIDTH, _MB = 5, 2  # features, samples per microbatch


def _model(stages: int) -> nn.Sequential:
    torch.manual_seed(11)
    return nn.Sequential(*(nn.Sequential(nn.Linear(_WIDTH, _WIDTH), nn.Tanh())
                           for _ in range(stages))).double()


def _batch(m: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return (torch.randn(m * _MB, _WIDTH, generator=g, dtype=torch.float64),
            torch.randn(m * _MB, _WIDTH, generator=g, dtype=torch.float64))


def _torch_rank(csv_path: str, stages: int, m: int, placement: tuple[int, ...], rank: int,
                world: int) -> Any:
    """One rank of torch's runtime: its stages built with shape inference (no static examples,
    which give zero gradients in torch 2.13), the CSV loaded, one step, gradients gathered."""
    from torch.distributed.pipelining import PipelineStage
    from torch.distributed.pipelining.schedules import _PipelineScheduleRuntime
    model = _model(stages)
    mine = [s for s in range(stages) if placement[s] == rank]
    pipe_stages = [PipelineStage(model[s], s, stages, torch.device("cpu")) for s in mine]
    schedule = _PipelineScheduleRuntime(pipe_stages, m, loss_fn=nn.functional.mse_loss)
    schedule._load_csv(csv_path)
    x, y = _batch(m)
    kwargs: dict[str, Any] = {}
    if 0 in mine:
        kwargs["x"] = x
    if stages - 1 in mine:
        kwargs["target"] = y
    args = (kwargs.pop("x"),) if "x" in kwargs else ()
    schedule.step(*args, **kwargs)
    grads = {f"{s}.{name}": p.grad.clone() if p.grad is not None else None
             for s in mine for name, p in model[s].named_parameters()}
    everyone: list[Any] = [None] * world
    dist.all_gather_object(everyone, grads)
    return {k: v for part in everyone for k, v in part.items()}


@pytest.mark.parametrize("placement", ["one", "v"])
def test_torch_runtime_trains_the_synthesized_csv(placement: str, tmp_path: Path) -> None:
    p, m = 2, 4
    stages = p * (2 if placement == "v" else 1)
    sched = synthesis(p, m, _uneven(stages), max_stashed=2 * p, placement=placement).schedule
    path = tmp_path / "synth.csv"
    path.write_text(format_csv(sched))
    got = launch(partial(_torch_rank, str(path), stages, m, sched.stage_to_rank), p)
    model = _model(stages)
    x, y = _batch(m)
    nn.functional.mse_loss(model(x), y).backward()
    want = {f"{s}.{name}": prm.grad for s in range(stages)
            for name, prm in model[s].named_parameters()}
    assert got.keys() == want.keys()
    for key, grad in want.items():
        assert got[key] is not None, f"{key}: no gradient"
        assert grad is not None
        assert got[key].abs().sum() > 0, f"{key}: zero gradient"
        torch.testing.assert_close(got[key], grad, rtol=1e-12, atol=1e-14, msg=key)
