"""pipesim: run, simulate, see and plan pipeline parallelism for PyTorch models.

The core (schedules, validation, simulation, timelines, views) imports neither torch nor numpy.
"""

from typing import Any

from pipesim.costs import CostModel
from pipesim.ir import Action, Op, Schedule, deps, format_action, parse_action, parse_schedule
from pipesim.schedules import SCHEDULES, get_schedule
from pipesim.simulate import DeadlockError, simulate
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
    "Timeline",
    "check",
    "deps",
    "format_action",
    "get_schedule",
    "metrics",
    "parse_action",
    "parse_schedule",
    "run",
    "simulate",
    "validate",
]
