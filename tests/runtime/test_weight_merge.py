"""Back-to-back W of one stage run as one GEMM per layer: the same gradients, one event's time."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from pipesim.ir import Op
from pipesim.runtime.stage import StageRunner
from pipesim.schedules import get_schedule
from tests.runtime.helpers import assert_step_matches, run_job
from tests.runtime.test_equivalence import _config


def _runner() -> StageRunner:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 4)).double()
    return StageRunner(1, 3, model, None, microbatches=4)


def _grads_after(merge: bool) -> list[torch.Tensor]:
    runner = _runner()
    data = torch.Generator().manual_seed(1)
    for mb in range(3):
        x = torch.randn(mb + 2, 6, dtype=torch.float64, generator=data)  # rows differ per mb
        runner.forward(mb, (x,))
        runner.backward(mb, (torch.randn(mb + 2, 4, dtype=torch.float64, generator=data),),
                        split=True)
    assert all(p.grad is None for p in runner.parameters())  # I deferred every weight grad
    if merge:
        runner.weight(0, 1, 2)
    else:
        for mb in range(3):
            runner.weight(mb)
    assert not runner.queue.pending
    return [p.grad.clone() for p in runner.parameters() if p.grad is not None]


def test_merged_weight_gradients_equal_one_at_a_time() -> None:
    merged, single = _grads_after(True), _grads_after(False)
    assert len(merged) == len(single) == 4  # two weights, two biases
    for a, b in zip(merged, single, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
        assert a.abs().max() > 0


def test_a_run_of_weights_is_one_event_and_gradients_equal_one_process() -> None:
    """zb-h1 on 4 ranks has back-to-back W on ranks 0-2: the first spans the GEMM, the
    others end with it and take no time; every gradient still equals one process's."""
    cfg = _config("zb-h1", 4, 8, None)
    assert_step_matches(cfg)
    from pipesim.timeline import Timeline
    timeline = Timeline.from_dict(run_job(_config("zb-h1", 4, 8, None, collect_state=False)
                                          ).timeline)
    sched = get_schedule("zb-h1", 4, 8)
    merged = 0
    for rank, row in enumerate(timeline.by_rank()):
        assert tuple(e.action for e in row) == sched.actions[rank]
        for before, e in pairwise(row):
            if e.action.op is Op.W and before.action.op is Op.W and \
                    before.action.stage == e.action.stage:
                assert e.duration == 0.0 and e.start == before.end
                merged += 1
    assert merged == 6  # runs of 2, 3 and 4 W: 1 + 2 + 3 merged into the run's first
