"""pipesim: run, simulate, see and plan pipeline parallelism for PyTorch models.

The core (schedules, validation, simulation, timelines, views) imports neither torch nor numpy.
``Pipeline``, ``launch`` and ``init`` (the library for your own model) import torch on first use.
"""

from collections.abc import Sequence
from typing import Any

from pipesim.costs import CostModel
from pipesim.ir import Action, Op, Schedule, deps, format_action, parse_action
from pipesim.planner.api import plan
from pipesim.planner.synthesize import Synthesis, synthesis, synthesize
from pipesim.schedule_io import parse_schedule
from pipesim.schedules import SCHEDULES, get_schedule
from pipesim.see import ascii, write_html, write_png, write_trace
from pipesim.simulate import DeadlockError, simulate
from pipesim.steady import steady_step
from pipesim.timeline import Metrics, Timeline, metrics
from pipesim.validate import InvalidScheduleError, Report, check, validate

__version__ = "0.1.0"


def run(schedule: Schedule, **config: Any) -> Any:
    """Run ``schedule`` for real on forked processes (gloo); returns rank 0's RankResult.

    ``config`` takes the fields of ``pipesim.config.RunConfig`` (model, batch_size,
    hidden_size, layers, steps, optimizer, dp, verify, ...) for the built-in models; to train
    your own model use ``Pipeline``. Imports torch on first use.
    """
    from pipesim.config import RunConfig
    from pipesim.processes.launch import launch
    from pipesim.runtime.train import TrainJob
    if not isinstance(config.get("model", "mlp"), str):
        raise TypeError("pipesim.run trains the built-in models (model='mlp' or 'gpt'); for "
                        "your own nn.Module use pipesim.Pipeline inside pipesim.launch")
    cfg = RunConfig(schedule=schedule, **config)
    return launch(TrainJob(cfg), cfg.grid.world)


def partition(model: Any, ranks: int, virtual_stages: int = 1, method: str = "uniform",
              balance: Sequence[int] | None = None, example: Any = None,
              layer_costs: Any = None) -> list[Any]:
    """Cut an nn.Sequential (or a list of layers) into ``ranks x virtual_stages`` stage modules.

    ``method``: "uniform" (layer count), "params" or "time" (profiled F+B on ``example``, one
    microbatch, or from ``layer_costs``); ``balance`` (layers per stage) overrides it. Imports
    torch on first use (``pipesim.profiling.partitioning``). The torch-free algorithms stay
    importable as ``from pipesim.balance import partition_balanced``.
    """
    from pipesim.profiling.partitioning import partition as cut
    return cut(model, ranks, virtual_stages, method, balance, example, layer_costs)

_LAZY = {"Pipeline": "pipesim.runtime.pipeline", "PipelineError": "pipesim.runtime.agree",
         "launch": "pipesim.runtime.api", "init": "pipesim.runtime.api",
         "profile": "pipesim.profiling.api"}


def __getattr__(name: str) -> Any:
    """The torch side, imported on first use: ``pipesim.Pipeline``, ``launch``, ``init``."""
    if name in _LAZY:
        import importlib
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'pipesim' has no attribute {name!r}")


__all__ = [
    "SCHEDULES",
    "Action",
    "CostModel",
    "DeadlockError",
    "InvalidScheduleError",
    "Metrics",
    "Op",
    "Pipeline",
    "PipelineError",
    "Report",
    "Schedule",
    "Synthesis",
    "Timeline",
    "ascii",
    "check",
    "deps",
    "format_action",
    "get_schedule",
    "init",
    "launch",
    "metrics",
    "parse_action",
    "parse_schedule",
    "partition",
    "plan",
    "profile",
    "run",
    "simulate",
    "steady_step",
    "synthesis",
    "synthesize",
    "validate",
    "write_html",
    "write_png",
    "write_trace",
]
