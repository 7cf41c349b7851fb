"""Data parallel x pipeline parallel: D pipeline replicas averaging gradients by ring all-reduce.

Every replica runs the same schedule on its shard of the global batch, so one simulated pipeline
stands for all of them. What D adds is the gradient all-reduce of each stage among its D copies:

- it starts when the stage's gradients are final: the end of its last B of the step (or its last
  W, when the backward is split) - all of a stage's buckets become ready then (gradients inside a
  stage's backward are not tracked layer by layer);
- it runs on the rank's communication stream, in parallel with compute: the stage's gradient
  bytes (its ``param_bytes``) are cut into buckets of ``bucket_bytes`` (25 MiB, as PyTorch DDP),
  each a ring all-reduce, one after another; a rank's stages queue in the order they become
  ready (ties: lower stage first);
- the step ends on a rank at max(its last compute, its last all-reduce) + ``optimizer_time``;
  the step time is the latest rank's. ``exposed_allreduce`` = step time - optimizer time -
  pipeline makespan: the all-reduce that compute did not hide.

Ring all-reduce of n bytes over D ranks (Patarasuk & Yuan 2009; the Baidu ring all-reduce; the
NCCL docs' bus-bandwidth note): a reduce-scatter and an all-gather of D - 1 steps each, every step
moving n / D bytes over each link::

    t(n, D) = 2 (D - 1) / D x n / bandwidth + 2 (D - 1) x latency        (0 when D = 1)

Which link a ring uses: global ranks are numbered node by node, ``ranks_per_node`` to a node.
``order`` says how pipeline ranks and replicas map to global ranks (the runtime's RankGrid rule):

    "pipeline-first" (default)  g = replica x P + pipeline_rank: one pipeline's ranks are
                                consecutive, so a stage's replicas sit P ranks apart
    "replica-first"             g = pipeline_rank x D + replica: a stage's replicas consecutive

A ring whose ranks all sit on one node runs at the intra-node latency and bandwidth; any other
runs at the inter-node ones (the slowest link paces a ring). With "pipeline-first" and
P >= ranks_per_node every ring crosses nodes. Bandwidths are per GPU (one NIC share each) and
concurrent rings do not contend. Times and bandwidths are in the cost model's unit (seconds in
the planner); the defaults below are illustrative, not measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import accumulate
from typing import Any, NamedTuple

from pipesim.checks import is_positive_int
from pipesim.costs import CostModel
from pipesim.ir import ActionKey, Op, Schedule
from pipesim.ranks import ORDERS, RankGrid
from pipesim.simulate import simulate
from pipesim.timeline import Event, Span, Timeline, bubble_fraction

MiB = 2**20
BUCKET_BYTES = 25 * MiB  # PyTorch DistributedDataParallel's default bucket_cap_mb


def ring_allreduce_time(nbytes: float, replicas: int, latency: float, bandwidth: float) -> float:
    """2(D-1)/D x nbytes / bandwidth + 2(D-1) x latency; 0 when D = 1 or there are no bytes."""
    if replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    if replicas == 1 or nbytes <= 0:
        return 0.0
    steps = 2 * (replicas - 1)
    return steps / replicas * nbytes / bandwidth + steps * latency


@dataclass(frozen=True)
class DPConfig:
    """D replicas and the network their rings run on (times in the cost model's unit)."""

    replicas: int = 1
    latency: float = 1e-5  # inter-node, per ring step (illustrative: 10 us)
    bandwidth: float = 25e9  # inter-node bytes per unit per GPU (illustrative: 200 Gb/s)
    intra_node_latency: float = 3e-6  # per ring step inside a node (illustrative)
    intra_node_bandwidth: float = 300e9  # NVLink-class bytes per unit (illustrative)
    ranks_per_node: int = 8  # GPUs per node
    bucket_bytes: float = BUCKET_BYTES  # gradient bytes per all-reduce; inf: one per stage
    order: str = "pipeline-first"  # see the module docstring
    optimizer_time: float = 0.0  # added to every rank's step after its last all-reduce

    def __post_init__(self) -> None:
        for name in ("replicas", "ranks_per_node"):
            value = getattr(self, name)
            if not is_positive_int(value):
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        for name in ("latency", "intra_node_latency", "optimizer_time"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        for name in ("bandwidth", "intra_node_bandwidth", "bucket_bytes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        if self.order not in ORDERS:
            raise ValueError(f"unknown rank order {self.order!r}; valid: {', '.join(ORDERS)}")

    def global_rank(self, replica: int, pipeline_rank: int, pipeline_ranks: int) -> int:
        """The runtime's numbering, from the one rule both use (pipesim.ranks.RankGrid)."""
        return RankGrid(pipeline_ranks, self.replicas, self.order).rank(replica, pipeline_rank)

    def intra_node(self, pipeline_rank: int, pipeline_ranks: int) -> bool:
        """Whether every replica of ``pipeline_rank`` sits on one node."""
        nodes = {self.global_rank(d, pipeline_rank, pipeline_ranks) // self.ranks_per_node
                 for d in range(self.replicas)}
        return len(nodes) == 1

    def allreduce_time(self, nbytes: float, pipeline_rank: int, pipeline_ranks: int) -> float:
        """All-reduce of ``nbytes`` of gradients on ``pipeline_rank``'s ring, bucket by bucket."""
        if self.replicas == 1 or nbytes <= 0:
            return 0.0
        return self.ring_time(nbytes, self.intra_node(pipeline_rank, pipeline_ranks))

    def ring_time(self, nbytes: float, intra_node: bool) -> float:
        """All-reduce of ``nbytes`` in buckets over an intra- or an inter-node ring."""
        if intra_node:
            latency, bandwidth = self.intra_node_latency, self.intra_node_bandwidth
        else:
            latency, bandwidth = self.latency, self.bandwidth
        if nbytes <= self.bucket_bytes:  # one bucket (always, when bucket_bytes is inf)
            return ring_allreduce_time(nbytes, self.replicas, latency, bandwidth)
        full, rest = divmod(nbytes, self.bucket_bytes)
        return (full * ring_allreduce_time(self.bucket_bytes, self.replicas, latency, bandwidth)
                + ring_allreduce_time(rest, self.replicas, latency, bandwidth))

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and math.isinf(v) else v)
                for k, v in self.__dict__.items()}


class RankStep(NamedTuple):
    """One rank's step: when compute ends, its all-reduce time and end, when its step ends."""

    compute_end: float
    allreduce_busy: float  # time its communication stream spent all-reducing
    allreduce_end: float  # end of its last all-reduce; compute_end if it has none
    step_end: float
    intra_node: bool  # whether its ring stays inside one node


@dataclass(frozen=True)
class DPResult:
    """The step of D replicas; ``timeline`` is one replica's, with the all-reduce spans added."""

    step_time: float
    makespan: float  # the pipeline's, without the all-reduce
    bubble: float  # the pipeline's: timeline.bubble_fraction
    exposed_allreduce: float  # step_time - optimizer_time - makespan
    per_rank: tuple[RankStep, ...]
    timeline: Timeline
    dp: DPConfig

    def to_dict(self) -> dict[str, Any]:
        return {"dp": self.dp.replicas, "step_time": self.step_time, "makespan": self.makespan,
                "bubble_fraction": self.bubble, "exposed_allreduce": self.exposed_allreduce,
                "network": self.dp.to_dict(),
                "per_rank": [r._asdict() for r in self.per_rank]}


class GradReady(NamedTuple):
    """Where a schedule's gradients become final, as indices into simulate()'s event tuple."""

    last: tuple[int, ...]  # per rank: index of its last event, -1 if it has none
    stages: tuple[tuple[int, int, int], ...]  # (rank, stage, index of its last B or W)


def last_gradient_index(row: Sequence[ActionKey], held: int = 0) -> dict[int, int]:
    """The one rule of when gradients are final: each stage in ``row`` (one rank's actions in
    order) -> the index of its last B or W; its gradients are final once that action ends.

    A valid row runs W(s, mb) after I(s, mb), so no I follows its stage's last W. Walks from the
    end and stops once ``held`` stages are found (0: walk the whole row).
    """
    found: dict[int, int] = {}
    for i in range(len(row) - 1, -1, -1):
        s, op, _ = row[i]
        if (op is Op.B or op is Op.W) and s not in found:
            found[s] = i
            if len(found) == held:
                break
    return found


def grad_ready(schedule: Schedule) -> GradReady:
    """For each rank its last action, and for each stage its last B (or W) in rank order.

    simulate() returns events rank by rank, each rank's in its schedule order, and a rank runs
    one action at a time, so the last in order is the last to end.
    """
    last: list[int] = []
    stages: list[tuple[int, int, int]] = []
    holds = [0] * schedule.ranks
    for r in schedule.stage_to_rank:
        holds[r] += 1
    offset = 0
    for rank, row in enumerate(schedule.actions):
        last.append(offset + len(row) - 1 if row else -1)
        found = last_gradient_index(row, holds[rank])
        stages.extend((rank, s, offset + i) for s, i in found.items())
        offset += len(row)
    return GradReady(tuple(last), tuple(stages))


def dp_step(ready: GradReady, events: tuple[Event, ...], param_bytes: tuple[float, ...],
            dp: DPConfig, pipeline_ranks: int) -> tuple[list[RankStep], list[Span]]:
    """Each rank's step and its all-reduce spans, from one replica's simulated events."""
    queues: list[list[tuple[float, int]]] = [[] for _ in ready.last]
    if dp.replicas > 1 and param_bytes:
        for rank, stage, index in ready.stages:
            event = events[index]
            if event.rank != rank or event.action.stage != stage:  # simulate() broke its order
                raise ValueError(f"event {index} is {event.action} on rank {event.rank}, not "
                                 f"stage {stage}'s last backward on rank {rank}")
            if param_bytes[stage] > 0:
                queues[rank].append((event.end, stage))
    steps: list[RankStep] = []
    spans: list[Span] = []
    for rank, (index, queue) in enumerate(zip(ready.last, queues, strict=True)):
        compute_end = events[index].end if index >= 0 else 0.0
        free = busy = 0.0
        for t, stage in sorted(queue):
            start = max(t, free)
            duration = dp.allreduce_time(param_bytes[stage], rank, pipeline_ranks)
            free = start + duration
            busy += duration
            spans.append(Span(rank, f"allreduce stage {stage}", start, free))
        free = free if queue else compute_end
        steps.append(RankStep(compute_end, busy, free, max(compute_end, free) + dp.optimizer_time,
                              dp.intra_node(rank, pipeline_ranks)))
    return steps, spans


def simulate_dp(schedule: Schedule, costs: CostModel, dp: DPConfig) -> DPResult:
    """Simulate one replica's pipeline, then each rank's gradient all-reduce; see the module doc.

    The all-reduce moves ``costs.param_bytes`` per stage (gradients as large as the parameters).
    """
    timeline = simulate(schedule, costs)
    steps, spans = dp_step(grad_ready(schedule), timeline.events, costs.param_bytes, dp,
                           schedule.ranks)
    start, makespan = timeline.start, timeline.makespan
    busy = math.fsum(e.end - e.start for e in timeline.events)
    bubble = bubble_fraction(busy, schedule.ranks, makespan)
    step_time = max((r.step_end for r in steps), default=0.0) - start
    exposed = max(0.0, step_time - dp.optimizer_time - makespan)
    meta = {**timeline.meta, "dp": dp.replicas, "step_time": step_time,
            "exposed_allreduce": exposed}
    timeline = replace(timeline, spans=timeline.spans + tuple(spans), meta=meta)
    return DPResult(step_time, makespan, bubble, exposed, tuple(steps), timeline, dp)


# ----------------------------------------------------------------------------- planning


def world_splits(world_size: int, layers: int, batch: int,
                 replicas: Sequence[int] | None = None) -> list[tuple[int, int, str]]:
    """(D, P, why not or "") for every D dividing ``world_size`` (or each listed one), P = N / D.

    A split is out when P exceeds the layers (a stage needs one) or D does not divide the batch.
    """
    splits = [d for d in range(1, world_size + 1) if world_size % d == 0]
    for d in replicas or ():
        if d not in splits:
            raise ValueError(f"{d} replicas do not divide {world_size} GPUs; valid: "
                             f"{', '.join(map(str, splits))}")
    out = []
    for d in sorted(set(replicas)) if replicas else splits:
        p = world_size // d
        reason = (f"the model has {layers} layers, fewer than the pipeline ranks" if p > layers else
                  f"batch {batch} does not split evenly over {d} replicas" if batch % d else "")
        out.append((d, p, reason))
    return out


def microbatch_counts_for(share: int, ranks: int, counts: Sequence[int] | None = None
                          ) -> list[int]:
    """Microbatch counts worth trying for ``ranks`` pipeline ranks on ``share`` samples.

    The listed ``counts`` that divide ``share``; by default the divisors from P to 4 x P (fewer
    than P leaves the pipeline never full; beyond 4 x P the bubble shrinks little while the
    simulation grows), or, when none lies there, the nearest below P and the nearest above 4 x P.
    """
    divisors = [m for m in range(1, share + 1) if share % m == 0]
    if counts is not None:
        return sorted({m for m in counts if share % m == 0})
    inside = [m for m in divisors if ranks <= m <= 4 * ranks]
    below, above = [m for m in divisors if m < ranks], [m for m in divisors if m > 4 * ranks]
    return inside or [*below[-1:], *above[:1]]


def step_lower_bound(costs: CostModel, m: int, ranks: int, dp: DPConfig) -> float:
    """A step time no schedule of ``ranks`` ranks, m microbatches and these costs can beat.

    For pruning a search: it needs no schedule and no simulation. Messages count as free.

    With head(s) = the F's of the stages before s (microbatch 0's way to stage s), every stage
    runs its m F's and m backwards one after another on its rank, no sooner than head(s); its
    all-reduce follows its last backward; after its last B (or I) that microbatch's input
    gradient still crosses every stage below; and the busiest rank has at least the mean work.
    Overlapped pairs may run their F and B in ``costs.overlap`` of their time: every compute
    term is scaled by it (when below 1).
    """
    k = min(1.0, costs.overlap)
    bw = [k * min(b, i + w) for b, i, w in zip(costs.backward, costs.backward_input,
                                               costs.backward_weight, strict=True)]
    bi = [k * min(b, i) for b, i in zip(costs.backward, costs.backward_input, strict=True)]
    forward = [k * f for f in costs.forward]
    head = list(accumulate(forward, initial=0.0))
    tail = list(accumulate(bi, initial=0.0))
    bound = m * math.fsum(f + b for f, b in zip(forward, bw, strict=True)) / ranks
    for s, (f, x) in enumerate(zip(forward, costs.param_bytes or [0.0] * len(bw),
                                   strict=True)):
        ring = min(dp.ring_time(x, True), dp.ring_time(x, False))
        bound = max(bound, head[s] + m * (f + bw[s]) + ring, head[s] + m * (f + bi[s]) + tail[s])
    return (bound + dp.optimizer_time) * (1 - 1e-9)  # below any rounding of the simulator's sums


__all__ = [
    "BUCKET_BYTES", "DPConfig", "DPResult", "GradReady", "MiB", "RankStep", "dp_step",
    "grad_ready", "last_gradient_index", "microbatch_counts_for", "ring_allreduce_time",
    "simulate_dp", "step_lower_bound", "world_splits"
]
