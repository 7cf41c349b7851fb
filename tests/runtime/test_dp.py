"""Data parallel x pipeline parallel: D replicas, each on its shard, equal one process on the
whole global batch (float64): every gradient after a step, every weight after several."""

from __future__ import annotations

import pytest
import torch

from pipesim.config import RunConfig
from pipesim.ranks import RankGrid
from pipesim.runtime.train import reference_train
from pipesim.schedules import get_schedule
from pipesim.timeline import Timeline
from tests.runtime.helpers import assert_step_matches, stage_params


def _config(name: str, v: int | None = None, **kw: object) -> RunConfig:
    sched = get_schedule(name, 2, 4, v)
    base: dict[str, object] = dict(schedule=sched, batch_size=3, hidden_size=6,
                                   layers=sched.stages + 1, dtype="float64", seed=11, dp=2,
                                   collect_state=True)
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


def _run(cfg: RunConfig):  # type: ignore[no-untyped-def]
    from pipesim.processes.launch import launch
    from pipesim.runtime.train import TrainJob
    result = launch(TrainJob(cfg), cfg.grid.world)
    assert result is not None
    return result


@pytest.mark.parametrize(("name", "v"), [("1f1b", None), ("interleaved-1f1b", 2),
                                         ("zb-h1", None)])
def test_dp_gradients_equal_one_process_on_the_global_batch(name: str, v: int | None) -> None:
    cfg = _config(name, v)
    assert_step_matches(cfg, result=_run(cfg))


@pytest.mark.parametrize("order", ["pipeline-first", "replica-first"])
def test_dp_weights_equal_after_several_steps(order: str) -> None:
    cfg = _config("zb-h1", steps=3, optimizer="adam", lr=0.05, rank_order=order)
    result = _run(cfg)
    for got_stage, want_stage in zip(result.params, stage_params(cfg, reference_train(cfg)),
                                     strict=True):
        for g, w in zip(got_stage, want_stage, strict=True):
            torch.testing.assert_close(g, w.detach(), rtol=1e-10, atol=1e-12)


def test_the_timeline_shows_each_stages_allreduce_per_rank() -> None:
    cfg = _config("interleaved-1f1b", 2, collect_state=False)
    timeline = Timeline.from_dict(_run(cfg).timeline)
    names = sorted((s.rank, s.name) for s in timeline.spans)
    assert names == [(0, "allreduce stage 0"), (0, "allreduce stage 2"),
                     (1, "allreduce stage 1"), (1, "allreduce stage 3")]
    for span in timeline.spans:
        last = max(e.end for e in timeline.events
                   if e.action.stage == int(span.name.split()[-1]) and e.action.op.value != "F")
        assert span.start >= last  # started only once the stage's gradients were final


def test_rank_grid_orders() -> None:
    g = RankGrid(pp=3, dp=2)
    assert g.pipeline(1) == [3, 4, 5] and g.stage_group(1) == [1, 4]
    r = RankGrid(pp=3, dp=2, order="replica-first")
    assert r.pipeline(1) == [1, 3, 5] and r.stage_group(1) == [2, 3]
    for grid in (g, r):
        assert sorted(grid.rank(*grid.coords(x)) for x in range(6)) == list(range(6))
