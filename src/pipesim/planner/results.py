"""The planner's records: a configuration, a candidate or rejection for it, and a plan's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, NamedTuple

from pipesim.planner.command import pipeline_args


class Config(NamedTuple):
    """One point of the search space."""

    schedule: str
    microbatches: int  # per replica
    virtual_stages: int
    microbatch_size: int
    partition: str  # "time", "params", "uniform" or "explicit"
    balance: tuple[int, ...]  # layers per stage, stages = ranks x virtual_stages
    dp: int = 1  # pipeline replicas, each on batch / dp samples

    @property
    def pp(self) -> int:
        """Pipeline ranks."""
        return len(self.balance) // self.virtual_stages

    @property
    def world_size(self) -> int:
        """Processes in all: dp replicas x pp pipeline ranks."""
        return self.pp * self.dp


@dataclass(frozen=True)
class Candidate:
    """A configuration that fits: its predicted step and the command that would run it."""

    config: Config
    predicted_step_seconds: float
    bubble_fraction: float  # the pipeline's (timeline.bubble_fraction)
    peak_memory_bytes: tuple[float, ...]  # per pipeline rank
    command: str  # `pipesim run ...` for a profiled built-in model, else a Pipeline(...) call
    exposed_allreduce_seconds: float = 0.0  # gradient all-reduce not hidden behind compute

    @property
    def world_size(self) -> int:
        """Processes to launch: ``pipesim.launch(train, world_size=best.world_size)``."""
        return self.config.world_size

    @property
    def pipeline_args(self) -> dict[str, Any]:
        """``pipesim.Pipeline(model, loss_fn=..., **best.pipeline_args)`` runs this plan."""
        return pipeline_args(self.config)

    def to_dict(self) -> dict[str, Any]:
        return {**_config_dict(self.config),
                "predicted_step_seconds": self.predicted_step_seconds,
                "bubble_fraction": self.bubble_fraction,
                "exposed_allreduce_seconds": self.exposed_allreduce_seconds,
                "peak_memory_bytes": list(self.peak_memory_bytes),
                "command": self.command,
                "pipeline_args": self.pipeline_args | {"balance": list(self.config.balance)}}


@dataclass(frozen=True)
class Rejected:
    """A configuration over the memory limit."""

    config: Config
    peak_memory_bytes: tuple[float, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {**_config_dict(self.config), "peak_memory_bytes": list(self.peak_memory_bytes),
                "reason": self.reason}


class Skipped(NamedTuple):
    """What a schedule, the model or the split does not accept (schedule "" for a whole D)."""

    schedule: str
    microbatches: int
    virtual_stages: int
    reason: str
    dp: int = 1


@dataclass(frozen=True)
class PlanResult:
    """Ranked candidates (best first), the rejected and the skipped."""

    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejected, ...] = ()
    skipped: tuple[Skipped, ...] = ()
    meta: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def best(self) -> Candidate | None:
        return self.candidates[0] if self.candidates else None

    def to_dict(self) -> dict[str, Any]:
        return {"best": self.best.to_dict() if self.best else None,
                "candidates": [c.to_dict() for c in self.candidates],
                "rejected": [r.to_dict() for r in self.rejected],
                "skipped": [s._asdict() for s in self.skipped], **self.meta}


def _config_dict(config: Config) -> dict[str, Any]:
    return config._asdict() | {"balance": list(config.balance), "pp": config.pp}


__all__ = ["Candidate", "Config", "PlanResult", "Rejected", "Skipped"]
