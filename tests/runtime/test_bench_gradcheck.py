"""The head-to-head's gradient check refuses a row unless both engines computed the same
gradient for every parameter on every rank: it must be able to fail."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from benchmarks.harness.gradcheck import GradientMismatch, compare
from benchmarks.harness.headtohead import Case, run_case
from benchmarks.harness.sides import Side

TINY = {"microbatches": 4, "batch": 4, "hidden": 16, "layers": 4, "steps": 1, "warmup": 0}


def test_compare_names_each_parameter_that_disagrees() -> None:
    want = {0: [torch.ones(2, 2), torch.ones(2)], 1: [torch.ones(3)]}
    assert compare(want, want) == (0.0, [])
    got = {0: [torch.ones(2, 2), torch.zeros(2)], 1: [None]}
    worst, problems = compare(got, want)
    assert worst == float("inf")
    assert problems == ["stage 0 parameter 1: max |diff| / max |ref| = 1.0e+00",
                        "stage 1 parameter 0: no gradient (.grad is None)"]
    _, close = compare({0: [w * (1 + 1e-6) for w in want[0]], 1: want[1]}, want)
    assert close == []  # float rounding passes


def _skip_weight_grads_of_stage(stage: int) -> Callable[[Side], Side]:
    """A side whose ``stage`` computes no Linear weight gradient (as if its W never ran)."""

    def tamper(side: Side) -> Side:
        def step(i: int) -> list[float]:
            losses = side.step(i)
            for p in side.params.get(stage, []):
                if p.dim() == 2:
                    p.grad = None
            return losses

        return dataclasses.replace(side, step=step)

    return tamper


@pytest.mark.parametrize("schedule", ["zb-h1", "zbv"])
def test_a_side_that_skips_a_stages_weight_gradients_is_refused(schedule: str) -> None:
    with pytest.raises(GradientMismatch, match=r"pipesim vs one process: stage 1 parameter 0: "
                                               r"no gradient"):
        run_case(Case(schedule, 2, **TINY), tamper=_skip_weight_grads_of_stage(1))


def test_torch_built_from_no_grad_static_examples_is_refused() -> None:
    # the pitfall that made earlier tables wrong: stage 0 trains on zero gradients
    with pytest.raises(GradientMismatch, match=r"torch vs pipesim: stage 0 parameter 0"):
        run_case(Case("1f1b", 2, torch_examples="static-no-grad", **TINY))


@pytest.mark.parametrize("schedule", ["gpipe", "1f1b", "interleaved-1f1b", "zb-h1", "zbv",
                                      "dualpipev"])
def test_every_schedule_passes_with_shapes_inferred(schedule: str) -> None:
    row = run_case(Case(schedule, 2, **TINY))
    assert row["max_grad_error"] <= row["grad_rtol"]
    assert set(row["grad_errors"]) == {"pipesim_vs_one_process", "torch_vs_one_process",
                                       "torch_vs_pipesim"}
