"""``pipesim.plan``: the fastest configuration that fits, as ``pipesim.Pipeline``'s arguments.

    costs = pipesim.profile(layers, x, loss_fn, target=y)           # per-layer costs (torch)
    best = pipesim.plan(costs, ranks=4, batch=64, memory_limit="2GB")
    pipe = pipesim.Pipeline(model, loss_fn=loss_fn, **best.pipeline_args)

A thin front of the planner (``pipesim.planner.search.plan`` / ``plan_world``, whose docstring
holds the model of a step): it takes the costs as a ``LayerCosts`` or a cost file's path, a
memory limit as bytes or text ("2GB", "512MiB", the same parser as ``pipesim plan
--memory-limit``), and returns the best ``Candidate`` (``.pipeline_args``,
``.predicted_step_seconds``, ``.bubble_fraction``, ``.peak_memory_bytes``, ``.config``,
``.command``). Pure Python; no torch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from pipesim.layercosts import LayerCosts, load_layer_costs
from pipesim.planner.dataparallel import DPConfig
from pipesim.planner.search import Candidate, PlanResult, plan_world
from pipesim.planner.search import plan as plan_pipeline
from pipesim.planner.space import PlanError, format_bytes, parse_bytes


def plan(costs: LayerCosts | str | os.PathLike[str], *, batch: int,
         ranks: int | None = None, world_size: int | None = None,
         memory_limit: float | str | None = None,
         schedules: Sequence[str] | None = None,
         microbatches: Sequence[int] | None = None,
         virtual: Sequence[int] = (1, 2),
         partition: str | Sequence[int] = "auto",
         optimizer_factor: float = 4.0,
         network: DPConfig | None = None) -> Candidate:
    """The best configuration of ``ranks`` pipeline ranks (or of ``world_size`` processes split
    into replicas x pipeline ranks) for a step of ``batch`` samples; PlanError if none fits.

    ``memory_limit``: bytes per rank, a number or text such as "80GB" (default none);
    ``schedules``, ``microbatches``, ``virtual``, ``partition``, ``optimizer_factor`` and
    ``network`` narrow or shape the search as ``pipesim plan``'s flags of those names do.
    """
    if (ranks is None) == (world_size is None):
        raise PlanError("give ranks= (one pipeline) or world_size= (replicas x pipeline ranks), "
                        "exactly one")
    layer_costs = costs if isinstance(costs, LayerCosts) else load_layer_costs(os.fspath(costs))
    limit = memory_limit_bytes(memory_limit)
    if world_size is not None:
        result = plan_world(layer_costs, world_size, batch, limit, schedules, microbatches,
                            virtual, partition, optimizer_factor, network, keep=1)
    else:
        assert ranks is not None
        result = plan_pipeline(layer_costs, ranks, batch, limit, schedules, microbatches,
                               virtual, partition, optimizer_factor)
    if result.best is None:
        raise PlanError(nothing_fits(result))
    return result.best


def memory_limit_bytes(limit: float | str | None) -> float | None:
    """A memory limit as bytes: numbers pass, text is parsed ("2GB" -> 2e9); PlanError if bad."""
    if limit is None:
        return None
    if isinstance(limit, str):
        try:
            return parse_bytes(limit)
        except ValueError as err:
            raise PlanError(f"memory_limit: {err}") from None
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not limit > 0:
        raise PlanError(f"memory_limit must be bytes > 0 or a size such as '2GB', got {limit!r}")
    return limit


def nothing_fits(result: PlanResult) -> str:
    """Why a search found no configuration, and what to change."""
    if result.rejected:
        closest = result.rejected[0]  # the rejected are sorted by their largest peak
        return (f"no configuration fits in {format_bytes(result.meta['memory_limit_bytes'])} "
                f"per rank; the smallest needs {format_bytes(max(closest.peak_memory_bytes))} "
                f"({closest.config.schedule}, {closest.config.microbatches} microbatches); "
                f"raise memory_limit, add ranks or shrink the batch")
    reasons = sorted({s.reason for s in result.skipped})
    return "no configuration can be tried: " + "; ".join(reasons or ["nothing to search"])


__all__ = ["memory_limit_bytes", "nothing_fits", "plan"]
