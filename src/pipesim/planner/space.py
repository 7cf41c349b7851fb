"""The planner's search space and inputs: byte sizes, microbatch counts, schedules, partitions.

Pure Python; ``pipesim.planner.search`` re-exports the public names.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from pipesim.balance import check_balance, partition_balanced, partition_uniform
from pipesim.checks import is_positive_int
from pipesim.layercosts import LayerCosts
from pipesim.schedules import SCHEDULES
from pipesim.units import format_bytes, parse_bytes

# schedules the planner synthesizes (planner/synth.py): name -> (placement, stages per rank)
SYNTHESIZED = {"synth": ("one", 1), "synth-v": ("v", 2)}

PARTITIONS = ("auto", "time", "params", "uniform")


class PlanError(ValueError):
    """Planner inputs that cannot be searched; the message says what to change."""


# ----------------------------------------------------------------------------- search space


def _check_inputs(layer_costs: LayerCosts, ranks: int, batch: int, limit: float | None,
                  factor: float) -> None:
    for label, value in (("ranks", ranks), ("batch", batch)):
        if not is_positive_int(value):
            raise PlanError(f"{label} must be an integer >= 1, got {value!r}")
    if ranks > len(layer_costs):
        raise PlanError(f"cannot place {len(layer_costs)} layers on {ranks} ranks: every rank "
                        f"needs at least one layer; use at most {len(layer_costs)} ranks")
    if limit is not None and not limit > 0:
        raise PlanError(f"memory limit must be > 0 bytes, got {limit!r}")
    if not (math.isfinite(factor) and factor >= 0):
        raise PlanError(f"optimizer factor must be a finite number >= 0, got {factor!r}")


def _microbatch_counts(batch: int, ranks: int, counts: Sequence[int] | None) -> list[int]:
    divisors = [m for m in range(1, batch + 1) if batch % m == 0]
    if counts is None:
        return [m for m in divisors if m <= 4 * ranks]
    usable = sorted({m for m in _check_counts(counts) if batch % m == 0})
    if not usable:
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        raise PlanError(f"batch {batch} is not divisible by any microbatch count "
                        f"({', '.join(map(str, counts))}); counts that divide it: {shown}")
    return usable


def _check_counts(counts: Sequence[int], what: str = "microbatch counts") -> Sequence[int]:
    for m in counts:
        if not is_positive_int(m):
            raise PlanError(f"{what} must be integers >= 1, got {m!r}")
    return counts


def _schedule_virtuals(names: Sequence[str] | None,
                       virtual: Sequence[int]) -> list[tuple[str, int]]:
    """(schedule, stages per rank) pairs to try, in registry order."""
    for v in virtual:
        if not is_positive_int(v):
            raise PlanError(f"virtual stages must be integers >= 1, got {v!r}")
    training = [n for n, spec in SCHEDULES.items() if spec.training]
    chosen = training if names is None else list(dict.fromkeys(names))
    for n in chosen:
        if n not in training:
            raise PlanError(f"{n!r} is not a training schedule; valid: {', '.join(training)}")
    pairs = []
    for n in chosen:
        spec = SCHEDULES[n]
        if spec.virtual == "any":
            pairs += [(n, v) for v in sorted(set(virtual)) if v >= 2]
        elif spec.stages_per_rank(None) in virtual:
            pairs.append((n, spec.stages_per_rank(None)))
    if not pairs:
        raise PlanError(f"no schedule among {', '.join(chosen)} has "
                        f"{' or '.join(map(str, virtual))} stages per rank; widen --virtual")
    return pairs


def _balances(layer_costs: LayerCosts, stages: int,
              partition: str | Sequence[int]) -> list[tuple[str, tuple[int, ...]]] | str:
    """(label, balance) pairs for ``stages`` stages, duplicates dropped; a reason if none."""
    n = len(layer_costs)
    if stages > n:
        return f"needs {stages} stages but the model has {n} layers"
    if not isinstance(partition, str):
        if len(partition) != stages:
            return f"the explicit balance has {len(partition)} stages; this needs {stages}"
        return [("explicit", tuple(partition))]
    if partition not in PARTITIONS:
        raise PlanError(f"unknown partition {partition!r}; valid: {', '.join(PARTITIONS)} "
                        f"or a list of layer counts")
    labels = ("time", "uniform") if partition == "auto" else (partition,)
    out: dict[tuple[int, ...], str] = {}
    for label in labels:
        if label == "uniform":
            balance = tuple(partition_uniform(n, stages))
        else:
            values = layer_costs.layer_times() if label == "time" else layer_costs.layer_params()
            balance = tuple(partition_balanced(values, stages))
        out.setdefault(balance, label)
    return [(label, balance) for balance, label in out.items()]


def check_partition(partition: str | Sequence[int], n_layers: int) -> str | list[int]:
    """Validate a partition argument early (PlanError), returning it as plan() takes it."""
    if isinstance(partition, str):
        if partition not in PARTITIONS:
            raise PlanError(f"unknown partition {partition!r}; valid: {', '.join(PARTITIONS)}")
        return partition
    try:
        return check_balance(partition, n_layers)
    except ValueError as err:
        raise PlanError(str(err)) from None


__all__ = ["PARTITIONS", "SYNTHESIZED", "PlanError", "check_partition", "format_bytes",
           "parse_bytes"]
