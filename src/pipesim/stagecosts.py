"""Per-layer costs summed into stages: a CostModel, stash and parameter bytes, optimizer time.

A cost file of either kind (per-layer, ``pipesim.layercosts``; per-stage, ``pipesim.costs``) is
read for a schedule by ``costs_for_stages`` / ``load_stage_costs``: per-layer costs are summed
into its stages, balanced by F + B time; per-stage costs must have its stage count.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from itertools import accumulate
from typing import Any

from pipesim.balance import check_balance, partition_balanced
from pipesim.costs import KIND as STAGE_KIND
from pipesim.costs import CostError, CostModel, read_cost_json
from pipesim.layercosts import LayerCosts, cost_file_kind


def costs_for_stages(data: Any, stages: int, source: str = "") -> CostModel:
    """A cost file's object of either kind as per-stage costs of a ``stages``-stage schedule.

    Per-layer: the layers are summed into ``stages`` contiguous stages balanced by F + B time
    (``partition_balanced``). Per-stage: used as written; StageCountError if made for another
    stage count. Raises CostError / CostFileError (both ValueError) with one line.
    """
    if cost_file_kind(data) == STAGE_KIND:
        return CostModel.from_dict(data, stages)
    layers = LayerCosts.from_dict(data, source)
    if len(layers) < stages:
        raise CostError(f"{len(layers)} layers cannot fill {stages} stages")
    return stage_costs(layers, partition_balanced(layers.layer_times(), stages))


def load_stage_costs(path: str, stages: int) -> CostModel:
    """Read a cost file of either kind for a ``stages``-stage schedule (``costs_for_stages``)."""
    return costs_for_stages(read_cost_json(path), stages)


def _stage_sums(values: Sequence[float], balance: Sequence[int]) -> list[float]:
    out, start = [], 0
    for end in accumulate(balance):
        out.append(math.fsum(values[start:end]))
        start = end
    return out


def _scale(layer_costs: LayerCosts, microbatch_size: int | None) -> float:
    return 1.0 if microbatch_size is None else microbatch_size / layer_costs.microbatch_size


def stage_costs(layer_costs: LayerCosts, balance: Sequence[int],
                microbatch_size: int | None = None) -> CostModel:
    """Sum layers into one CostModel stage per entry of ``balance`` (so stages = ranks x v).

    Times and activation bytes scale linearly from the profiled microbatch size to
    ``microbatch_size`` (a simplification: real kernels are less efficient on small inputs).
    A stage's activation bytes are its last layer's output, its stash bytes the sum of its
    layers' (as ``stage_memory``); the unit is seconds.
    """
    check_balance(balance, len(layer_costs))
    k = _scale(layer_costs, microbatch_size)
    layers = layer_costs.layers

    def per_stage(values: list[float]) -> list[float]:
        return [k * x for x in _stage_sums(values, balance)]

    last = [end - 1 for end in accumulate(balance)]
    return CostModel.from_lists(
        len(balance), per_stage([c.forward for c in layers]),
        per_stage([c.backward_input for c in layers]),
        per_stage([c.backward_weight for c in layers]), per_stage([c.backward for c in layers]),
        activation_bytes=[k * layers[i].activation_bytes for i in last],
        param_bytes=_stage_sums(layer_costs.layer_params(), balance),
        comm_latency=layer_costs.comm_latency, comm_bandwidth=layer_costs.comm_bandwidth,
        unit="s", send_overhead=layer_costs.comm_send_overhead,
        stash_bytes=stage_memory(layer_costs, balance, microbatch_size)[0],
        action_overhead=layer_costs.engine_action_overhead,
    )


def stage_memory(layer_costs: LayerCosts, balance: Sequence[int],
                 microbatch_size: int | None = None) -> tuple[list[float], list[float]]:
    """(stash bytes, parameter bytes) per stage; stash scales with the microbatch size."""
    check_balance(balance, len(layer_costs))
    k = _scale(layer_costs, microbatch_size)
    stash = _stage_sums([c.stash_bytes for c in layer_costs.layers], balance)
    return [k * s for s in stash], _stage_sums(layer_costs.layer_params(), balance)


def stage_optimizer(layer_costs: LayerCosts, balance: Sequence[int]) -> list[float]:
    """Optimizer time per stage, per training step (it does not depend on the microbatch)."""
    check_balance(balance, len(layer_costs))
    return _stage_sums([c.optimizer for c in layer_costs.layers], balance)


__all__ = ["costs_for_stages", "load_stage_costs", "stage_costs", "stage_memory",
           "stage_optimizer"]
