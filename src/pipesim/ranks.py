"""The rank grid: D pipeline replicas x P pipeline ranks, and which global rank is which.

    order "pipeline-first" (default): global rank g = replica * P + pipeline_rank, so one
        pipeline's ranks are consecutive (a pipeline inside a node first, as torchrun numbers
        ranks node by node) and a stage's replicas sit P ranks apart;
    order "replica-first": g = pipeline_rank * D + replica (the replicas of a stage together).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

ORDERS = ("pipeline-first", "replica-first")


@dataclass(frozen=True)
class RankGrid:
    pp: int  # ranks per pipeline
    dp: int = 1  # pipeline replicas
    order: str = "pipeline-first"

    def __post_init__(self) -> None:
        if self.order not in ORDERS:
            raise ValueError(f"unknown rank order {self.order!r}; valid: {', '.join(ORDERS)}")

    @property
    def world(self) -> int:
        return self.pp * self.dp

    def rank(self, replica: int, pipe_rank: int) -> int:
        if self.order == "pipeline-first":
            return replica * self.pp + pipe_rank
        return pipe_rank * self.dp + replica

    def coords(self, rank: int) -> tuple[int, int]:
        """(replica, pipeline rank) of a global rank."""
        if self.order == "pipeline-first":
            return divmod(rank, self.pp)
        pipe_rank, replica = divmod(rank, self.dp)
        return replica, pipe_rank

    def pipeline(self, replica: int) -> list[int]:
        """Global ranks of one replica's pipeline ranks 0..P-1."""
        return [self.rank(replica, p) for p in range(self.pp)]

    def stage_group(self, pipe_rank: int) -> list[int]:
        """Global ranks holding the same stages in every replica (the all-reduce group)."""
        return [self.rank(d, pipe_rank) for d in range(self.dp)]


def available_cores() -> int:
    """The CPU cores this process may run on (its affinity), which forked ranks share."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


__all__ = ["ORDERS", "RankGrid", "available_cores"]
