"""pipesim: run, simulate, see and plan pipeline parallelism for PyTorch models.

The core (schedules, validation, simulation, timelines, views) imports neither torch nor numpy.
"""

from collections.abc import Sequence
from typing import Any

import pipesim.partition as _algorithms  # noqa: F401  loaded before the function takes its name
import pipesim.synthesize as _synthesis  # noqa: F401  likewise: pipesim.synthesize is the function
from pipesim.costs import CostModel
from pipesim.ir import Action, Op, Schedule, deps, format_action, parse_action, parse_schedule
from pipesim.schedules import SCHEDULES, get_schedule
from pipesim.simulate import DeadlockError, simulate, steady_step
from pipesim.synthesize import Synthesis, synthesis, synthesize
from pipesim.timeline import Metrics, Timeline, metrics
from pipesim.validate import InvalidScheduleError, Report, check, validate

__version__ = "0.1.0"


def run(schedule: Schedule, **config: Any) -> Any:
    """Run ``schedule`` for real on forked processes (gloo); returns rank 0's RankResult.

    ``config`` takes the fields of ``pipesim.runtime.train.RunConfig`` (batch_size,
    hidden_size, layers, steps, optimizer, dp, verify, ...). Imports torch on first use.
    """
    from pipesim.runtime.launch import launch
    from pipesim.runtime.train import RunConfig, TrainJob
    cfg = RunConfig(schedule=schedule, **config)
    return launch(TrainJob(cfg), cfg.grid.world)


def partition(model: Any, ranks: int, virtual_stages: int = 1, method: str = "uniform",
              balance: Sequence[int] | None = None, example: Any = None,
              layer_costs: Any = None) -> list[Any]:
    """Cut an nn.Sequential (or a list of layers) into ``ranks x virtual_stages`` stage modules.

    ``method``: "uniform" (layer count), "params" or "time" (profiled F+B on ``example``, one
    microbatch, or from ``layer_costs``); ``balance`` (layers per stage) overrides it. Imports
    torch on first use (``pipesim.runtime.partitioning``). The torch-free algorithms stay
    importable as ``from pipesim.partition import partition_balanced``.
    """
    from pipesim.runtime.partitioning import partition as cut
    return cut(model, ranks, virtual_stages, method, balance, example, layer_costs)

__all__ = [
    "SCHEDULES",
    "Action",
    "CostModel",
    "DeadlockError",
    "InvalidScheduleError",
    "Metrics",
    "Op",
    "Report",
    "Schedule",
    "Synthesis",
    "Timeline",
    "check",
    "deps",
    "format_action",
    "get_schedule",
    "metrics",
    "parse_action",
    "parse_schedule",
    "partition",
    "run",
    "simulate",
    "steady_step",
    "synthesis",
    "synthesize",
    "validate",
]
