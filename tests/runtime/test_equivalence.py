"""The core promise: a pipelined step's loss and every parameter's gradient equal one process's.

float64 throughout, so differences are rounding only (tolerance 1e-12 relative). Every
registered training schedule, world sizes 2, 3 and 4, several microbatch counts.
"""

from __future__ import annotations

import pytest
import torch

from pipesim.config import RunConfig
from pipesim.ir import Op
from pipesim.runtime.train import reference_train
from pipesim.schedules import SCHEDULES, get_schedule
from tests.runtime.helpers import assert_step_matches, run_job, stage_params

TRAINING = [n for n, spec in SCHEDULES.items() if spec.training]

# (schedule, ranks, microbatches, virtual stages); dualpipev needs m >= 2 * ranks
CASES = [
    (name, p, m, v)
    for name in TRAINING
    for p, m in ((2, 4), (3, 6), (4, 8))
    for v in ((2, 3) if SCHEDULES[name].virtual == "any" and p == 2 else
              ((2,) if SCHEDULES[name].virtual == "any" else (None,)))
] + [("1f1b", 4, 3, None), ("gpipe", 3, 1, None), ("zb-h1", 4, 5, None), ("zbv", 3, 2, None),
     ("interleaved-1f1b", 2, 3, 2)]


def _config(name: str, p: int, m: int, v: int | None, **kw: object) -> RunConfig:
    sched = get_schedule(name, p, m, v)
    base: dict[str, object] = dict(schedule=sched, batch_size=3, hidden_size=6,
                                   layers=sched.stages + 1, dtype="float64", seed=7,
                                   collect_state=True)
    base.update(kw)
    return RunConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "p", "m", "v"), CASES,
                         ids=[f"{n}-p{p}-m{m}" + (f"-v{v}" if v else "") for n, p, m, v in CASES])
def test_gradients_equal_single_process(name: str, p: int, m: int, v: int | None) -> None:
    assert_step_matches(_config(name, p, m, v))


@pytest.mark.parametrize("name", ["1f1b", "zb-h1", "interleaved-1f1b", "dualpipev"])
def test_gradients_equal_with_activation_checkpointing(name: str) -> None:
    assert_step_matches(_config(name, 2, 4, None, checkpoint_activations=True))


@pytest.mark.parametrize(("name", "optimizer"), [("1f1b", "sgd"), ("zb-h1", "adam"),
                                                 ("zbv", "adam"), ("gpipe", "sgd")])
def test_weights_equal_after_several_steps(name: str, optimizer: str) -> None:
    cfg = _config(name, 2, 4, None, steps=3, optimizer=optimizer, lr=0.05)
    result = run_job(cfg)
    assert result.params is not None
    want = stage_params(cfg, reference_train(cfg))
    for got_stage, want_stage in zip(result.params, want, strict=True):
        for g, w in zip(got_stage, want_stage, strict=True):
            torch.testing.assert_close(g, w.detach(), rtol=1e-10, atol=1e-12)
    assert len(result.losses) == 3 and result.losses[0] != result.losses[2]


def test_cross_entropy_loss_matches() -> None:
    assert_step_matches(_config("1f1b", 2, 4, None, loss="cross-entropy"))


def test_uneven_balance_matches() -> None:
    assert_step_matches(_config("1f1b", 3, 3, None, layers=6, balance=(1, 3, 2)))


@pytest.mark.parametrize("name", ["zb-h1", "dualpipev", "interleaved-1f1b"])
def test_each_rank_runs_the_schedule_in_order(name: str) -> None:
    cfg = _config(name, 2, 4, None, collect_state=False)
    result = run_job(cfg)
    from pipesim.timeline import Timeline
    timeline = Timeline.from_dict(result.timeline)
    for rank, row in enumerate(timeline.by_rank()):
        assert tuple(e.action for e in row) == cfg.schedule.actions[rank]
    assert any(e.action.op is Op.W for e in timeline.events) == (name != "interleaved-1f1b")


def test_forward_demo_outputs_equal_stages_applied_in_one_process() -> None:
    sched = get_schedule("forward", 4, 4)
    cfg = RunConfig(schedule=sched, batch_size=32, hidden_size=64, seed=3, keep_outputs=True)
    result = run_job(cfg)
    assert result.outputs is not None
    from pipesim.runtime.train import build_layers, make_batch
    model = torch.nn.Sequential(*build_layers(cfg))
    inputs, _ = make_batch(cfg, 0)
    with torch.no_grad():
        for mb, x in enumerate(inputs):
            got = torch.tensor(result.outputs[mb], dtype=torch.float32)
            assert torch.equal(got, model(x).reshape(-1))


@pytest.mark.parametrize("name", ["1f1b", "zbv"])
def test_measured_timeline_respects_every_dependency(name: str) -> None:
    """No action starts before what it needs has ended (one clock on one machine), and with
    --synthetic each action lasts at least its given time: the sleep precedes the send."""
    from pipesim.ir import deps
    from pipesim.timeline import Timeline
    cfg = _config(name, 2, 4, None, collect_state=False,
                  synthetic={Op.F: 0.002, Op.B: 0.004, Op.I: 0.002, Op.W: 0.002})
    timeline = Timeline.from_dict(run_job(cfg).timeline)
    ends = {e.action: e.end for e in timeline.events}
    for e in timeline.events:
        assert e.duration >= cfg.synthetic[e.action.op]
        for d in deps(e.action, cfg.schedule):
            assert e.start >= ends[d], f"{e.action} started before {d} ended"


def test_dualpipev_pairs_run_as_one_unit_with_gradients_equal() -> None:
    """DualPipeV's overlapped (F;B) pairs run as torch runs OVERLAP_F_B: F, then B, then both
    sends. Every gradient equals one process's, and no rank gets a pair's forward output before
    the pair's backward has run (one clock on one machine: an order, not a duration)."""
    from pipesim.ir import Action
    from pipesim.timeline import Timeline
    cfg = _config("dualpipev", 2, 4, None)
    assert cfg.schedule.pairs
    result = run_job(cfg)
    assert_step_matches(cfg, result=result)
    timeline = Timeline.from_dict(result.timeline)
    assert timeline.pairs == cfg.schedule.pairs
    start = {e.action: e.start for e in timeline.events}
    end = {e.action: e.end for e in timeline.events}
    place = cfg.schedule.stage_to_rank
    checked = 0
    for first, second in cfg.schedule.pairs:
        consumer = Action(first.stage + 1, Op.F, first.microbatch)
        if consumer.stage < cfg.schedule.stages and place[consumer.stage] != place[first.stage]:
            assert start[consumer] >= end[second], f"{consumer} began before {second} ended"
            checked += 1
    assert checked > 0
