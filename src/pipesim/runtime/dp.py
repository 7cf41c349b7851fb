"""Data parallelism across pipeline replicas: average each stage's gradients with all-reduce.

A stage's gradients are final after its last B (or W, when split) of the step
(``dataparallel.last_gradient_index``). Right then they are flattened into buckets and
all-reduced asynchronously over the stage's replica group, overlapping whatever the rank
still has to compute; the optimizer steps after ``finish`` has waited for every bucket and
written the averages back.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipesim.ir import Action
from pipesim.planner.dataparallel import BUCKET_BYTES, last_gradient_index
from pipesim.runtime.stage import StageRunner


@dataclass
class _Bucket:
    stage: int
    grads: list[torch.Tensor]
    flat: torch.Tensor
    work: dist.Work
    start: float
    end: float | None = None


class GradReducer:
    """Starts and finishes the gradient all-reduce of each local stage, once per step."""

    def __init__(self, runners: dict[int, StageRunner], group: dist.ProcessGroup | None,
                 replicas: int, clock: Callable[[], float], bucket_bytes: int = BUCKET_BYTES
                 ) -> None:
        self.runners = runners
        self.group = group
        self.replicas = replicas
        self.clock = clock
        self.bucket_bytes = bucket_bytes
        self.pending: list[_Bucket] = []

    def start(self, stage: int) -> None:
        """Launch the all-reduce of ``stage``'s gradients (call once they are final)."""
        bucket: list[torch.Tensor] = []
        size = 0
        for p in self.runners[stage].parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            bucket.append(p.grad)
            size += p.grad.numel() * p.grad.element_size()
            if size >= self.bucket_bytes:
                self._launch(stage, bucket)
                bucket, size = [], 0
        if bucket:
            self._launch(stage, bucket)

    def _launch(self, stage: int, grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        start = self.clock()
        work = dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=self.group, async_op=True)
        assert work is not None
        self.pending.append(_Bucket(stage, grads, flat, work, start))

    def poll(self) -> None:
        """Note the time of any all-reduce that has completed (cheap; call between actions)."""
        for b in self.pending:
            if b.end is None and b.work.is_completed():
                b.end = self.clock()

    def finish(self) -> list[tuple[int, float, float]]:
        """Wait for every bucket, write the replica average into .grad; spans per stage."""
        spans: dict[int, tuple[float, float]] = {}
        for b in self.pending:
            b.work.wait()
            end = b.end if b.end is not None else self.clock()
            b.flat /= self.replicas
            offset = 0
            for g in b.grads:
                g.copy_(b.flat[offset:offset + g.numel()].view_as(g))
                offset += g.numel()
            lo, hi = spans.get(b.stage, (b.start, end))
            spans[b.stage] = (min(lo, b.start), max(hi, end))
        self.pending.clear()
        return [(s, lo, hi) for s, (lo, hi) in sorted(spans.items())]


def last_gradient_actions(row: Sequence[Action]) -> dict[Action, int]:
    """Each stage's last backward-type action in ``row`` -> its stage (grads final after it);
    the rule is ``dataparallel.last_gradient_index``'s, as the simulator's all-reduce uses it."""
    return {row[i]: s for s, i in last_gradient_index(row).items()}


__all__ = ["GradReducer", "last_gradient_actions"]
