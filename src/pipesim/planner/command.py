"""What runs a planned configuration: a ``pipesim run`` command, or ``pipesim.Pipeline``'s
arguments and the one line of Python that passes them.

``command_for(config, layer_costs)`` picks: a cost file that ``pipesim profile`` wrote records
the built-in model it measured (``LayerCosts.profiled``), and the command rebuilds exactly that
model; any other model (a user's own, a hand-written file) gets the ``pipesim.Pipeline`` call.
Pure Python; ``pipesim.planner.search`` re-exports these names.
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from pipesim.layercosts import LayerCosts, ProfiledModel
from pipesim.planner.space import SYNTHESIZED

if TYPE_CHECKING:
    from pipesim.planner.results import Config

DEFAULT_STEPS = 10  # --steps in the suggested `pipesim run` command


def command_for(config: Config, layer_costs: LayerCosts) -> str:
    """What runs ``config`` on the model the costs were measured on: the ``pipesim run`` command
    when ``pipesim profile`` measured a built-in model, else the ``pipesim.Pipeline`` call."""
    if layer_costs.profiled is not None:
        return run_command(config, config.pp, layer_costs.profiled)
    return pipeline_call(config)


def pipeline_args(config: Config) -> dict[str, Any]:
    """The keyword arguments of ``pipesim.Pipeline`` that run ``config`` (the model and
    ``loss_fn`` are the caller's). The planner's memory keeps every stash: no checkpointing."""
    schedule = f"{config.schedule}.txt" if config.schedule in SYNTHESIZED else config.schedule
    return {"schedule": schedule, "microbatches": config.microbatches,
            "virtual_stages": config.virtual_stages, "balance": config.balance,
            "dp": config.dp, "checkpoint_activations": False}


_PIPELINE_DEFAULTS = {"virtual_stages": 1, "dp": 1, "checkpoint_activations": False}


def pipeline_call(config: Config) -> str:
    """``pipesim.Pipeline(model, schedule=..., ...)`` for ``config``, one line of Python; its
    comment says how many processes to launch and the microbatch size the plan assumed."""
    args = pipeline_args(config)
    words = [f"{k}={v!r}" for k, v in args.items()
             if k not in ("schedule", "microbatches") and _PIPELINE_DEFAULTS.get(k) != v]
    world = config.world_size
    return (f"pipesim.Pipeline(model, schedule={json.dumps(args['schedule'])}, "
            f"microbatches={config.microbatches}, loss_fn=loss_fn, {', '.join(words)})  "
            f"# {world} process{'es' if world > 1 else ''}, microbatches of "
            f"{config.microbatch_size} sample{'s' if config.microbatch_size > 1 else ''}")


def run_command(config: Config, ranks: int, profiled: ProfiledModel | None = None) -> str:
    """The ``pipesim run`` command line that runs ``config`` on the ``profiled`` model (every
    field as a flag, so the run builds exactly that model): ``-w`` counts every process
    (dp x pipeline ranks, as under torchrun); ``--dp`` when there is more than one replica."""
    words = ["pipesim", "run"]
    for key, value in (profiled._asdict() if profiled else {}).items():
        if value is not None:
            words += ["--" + key.replace("_", "-"), shlex.quote(str(value))]
    schedule = ["--schedule", config.schedule] if config.schedule not in SYNTHESIZED else \
        ["--file", f"{config.schedule}.txt"]  # written by `pipesim synthesize -o`
    words += [*schedule, "-w", str(ranks * config.dp)]
    words += ["--dp", str(config.dp)] if config.dp > 1 else []
    words += ["-m", str(config.microbatches),
              "-b", str(config.microbatch_size), "-v", str(config.virtual_stages),
              "--balance", ",".join(map(str, config.balance)), "--steps", str(DEFAULT_STEPS)]
    return " ".join(words)


__all__ = ["DEFAULT_STEPS", "command_for", "pipeline_args", "pipeline_call", "run_command"]
