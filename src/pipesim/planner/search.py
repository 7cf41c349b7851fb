"""Search schedules x microbatches x virtual stages x partitions (x data-parallel splits).

``plan(layer_costs, ranks, batch)`` tries every training schedule in the registry that accepts
each configuration, simulates it with the per-layer costs summed into stages, and ranks the
configurations by predicted step time (ties: lower peak memory). ``plan_world(layer_costs,
world_size, batch)`` does the same for every split of ``world_size`` GPUs into D replicas of a
P-rank pipeline (D x P = world_size), adding each stage's gradient all-reduce
(``pipesim.planner.dataparallel``). Model of a step:

- the batch is split evenly over the D replicas, each replica's share into m microbatches of
  ``batch / (D m)`` samples (integers, or the split is not tried);
- times and activation/stash bytes scale linearly from the profiled microbatch size (a
  simplification: small microbatches run less efficiently on real hardware, so the planner is
  optimistic about large m; the per-message latency is the only per-microbatch overhead);
- peak memory of a rank = ``optimizer_factor`` x its parameter bytes (default 4: weights,
  gradients and Adam's two moments, all as stored; 16 bytes per fp32 parameter) + the most
  stashed activation bytes alive at once, walking its actions in order: F adds its stage's stash
  bytes, B (or W, when the backward is split) frees them. D does not change it (every replica
  holds its own weights and optimizer state). Over ``memory_limit_bytes`` is rejected without
  simulating.

Search space (defaults): schedules = every training schedule; microbatch counts = divisors of
the (per-replica) batch up to 4 x P; ``virtual`` = (1, 2): a schedule with a fixed number of
stages per rank (1f1b: 1, zbv: 2) is tried when that number is listed, one that takes any
(interleaved-1f1b) with each listed value >= 2; partitions = balanced by per-layer F+B time and
uniform layer counts (or one of "time", "params", "uniform", or an explicit balance list).

``plan_world`` prunes, so that 1,024 GPUs plan in seconds: it skips a D whose P exceeds the
layer count, that does not divide the batch, or whose P leaves more than the memory limit in
parameters and optimizer state alone (``optimizer_factor`` x all parameter bytes / P); its
microbatch counts default to ``dataparallel.microbatch_counts_for`` (divisors of the per-replica
batch from P to 4 x P); and with ``keep=K`` it neither generates nor simulates a configuration
whose lower bound (``dataparallel.step_lower_bound``) exceeds both the K-th best step found so
far and the best of its own D. Configurations run in the order of their bounds, so the K best
and the best of each D are exactly a full search's.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import replace
from operator import itemgetter
from typing import Any, NamedTuple

from pipesim.checks import is_positive_int
from pipesim.layercosts import LayerCosts
from pipesim.planner.command import command_for, pipeline_args, pipeline_call, run_command
from pipesim.planner.dataparallel import (
    DPConfig,
    microbatch_counts_for,
    step_lower_bound,
    world_splits,
)
from pipesim.planner.results import Candidate, Config, PlanResult, Rejected, Skipped
from pipesim.planner.score import StageData, digest_of, evaluate, peak_memory, score
from pipesim.planner.space import (
    PARTITIONS,
    PlanError,
    _balances,
    _check_counts,
    _check_inputs,
    _microbatch_counts,
    _schedule_virtuals,
    check_partition,
    format_bytes,
    parse_bytes,
)
from pipesim.planner.synth import SYNTHESIZED, synth_pairs, synth_schedule
from pipesim.schedules import SCHEDULES, ConfigError, get_schedule


def plan(layer_costs: LayerCosts, ranks: int, batch: int,
         memory_limit_bytes: float | None = None,
         schedules: Sequence[str] | None = None,
         microbatch_counts: Sequence[int] | None = None,
         virtual: Sequence[int] = (1, 2),
         partition: str | Sequence[int] = "auto",
         optimizer_factor: float = 4.0,
         dp: DPConfig | None = None,
         synthesize: float | None = None) -> PlanResult:
    """Rank every accepted configuration of a ``ranks``-rank pipeline by predicted step time.

    ``dp`` (default one replica): ``dp.replicas`` copies share the batch and all-reduce their
    gradients over ``dp``'s network. ``synthesize``: also search a schedule for each
    configuration's costs, this many seconds each (``pipesim.planner.synth``). See the module
    docstring.
    """
    dp = dp or DPConfig()
    _check_inputs(layer_costs, ranks, batch, memory_limit_bytes, optimizer_factor)
    if batch % dp.replicas:
        raise PlanError(f"batch {batch} does not split evenly over {dp.replicas} replicas")
    pairs = _schedule_virtuals(schedules, virtual)
    pairs += synth_pairs(virtual) if synthesize else []
    search = _Search(layer_costs, check_partition(partition, len(layer_costs)), pairs,
                     memory_limit_bytes, optimizer_factor, synth_seconds=synthesize)
    share = batch // dp.replicas
    search.add(ranks, dp, share, _microbatch_counts(share, ranks, microbatch_counts))
    meta = {"model": layer_costs.model, "ranks": ranks, "batch": batch, "layers": len(layer_costs),
            "memory_limit_bytes": memory_limit_bytes, "optimizer_factor": optimizer_factor}
    return search.run(meta | ({"dp": dp.replicas} if dp.replicas > 1 else {}))


def plan_world(layer_costs: LayerCosts, world_size: int, batch: int,
               memory_limit_bytes: float | None = None,
               schedules: Sequence[str] | None = None,
               microbatch_counts: Sequence[int] | None = None,
               virtual: Sequence[int] = (1, 2),
               partition: str | Sequence[int] = "auto",
               optimizer_factor: float = 4.0,
               network: DPConfig | None = None,
               replicas: Sequence[int] | None = None,
               keep: int | None = None,
               synthesize: float | None = None) -> PlanResult:
    """Every split of ``world_size`` GPUs into D replicas x P pipeline ranks, ranked.

    ``network``: links and buckets of the all-reduce (its ``replicas`` is ignored);
    ``replicas``: the values of D to try (default every divisor of ``world_size``);
    ``keep``: find the ``keep`` best exactly and prune what cannot join them (module docstring);
    ``synthesize``: as in ``plan``.
    """
    network = network or DPConfig()
    _check_inputs(layer_costs, 1, batch, memory_limit_bytes, optimizer_factor)
    for label, value in (("world size", world_size), ("keep", 1 if keep is None else keep)):
        if not is_positive_int(value):
            raise PlanError(f"{label} must be an integer >= 1, got {value!r}")
    pairs = _schedule_virtuals(schedules, virtual)
    pairs += synth_pairs(virtual) if synthesize else []
    search = _Search(layer_costs, check_partition(partition, len(layer_costs)), pairs,
                     memory_limit_bytes, optimizer_factor, keep, synth_seconds=synthesize)
    least = optimizer_factor * math.fsum(layer_costs.layer_params())  # over P: some rank's
    try:
        splits = world_splits(world_size, len(layer_costs), batch,
                              None if replicas is None else _check_counts(replicas, "replicas"))
    except ValueError as err:
        raise PlanError(str(err)) from None
    for d, p, reason in splits:
        if not reason and memory_limit_bytes is not None and least / p > memory_limit_bytes:
            reason = (f"parameters and optimizer state alone need at least "
                      f"{format_bytes(least / p)} per rank > limit "
                      f"{format_bytes(memory_limit_bytes)}")
        counts = [] if reason else microbatch_counts_for(
            batch // d, p, None if microbatch_counts is None else _check_counts(microbatch_counts))
        if reason or not counts:
            search.skipped.append(Skipped("", 0, 0, reason or (
                f"no listed microbatch count divides the per-replica batch {batch // d}"), d))
        else:
            search.add(p, replace(network, replicas=d), batch // d, counts)
    meta = {"model": layer_costs.model, "world_size": world_size, "batch": batch,
            "layers": len(layer_costs), "memory_limit_bytes": memory_limit_bytes,
            "optimizer_factor": optimizer_factor, "keep": keep,
            "network": {k: v for k, v in network.to_dict().items() if k != "replicas"}}
    return search.run(meta)


class _Job(NamedTuple):
    """One schedule to generate and the configurations (bound, config) that share it."""

    bound: float
    name: str
    ranks: int
    microbatches: int
    virtual: int
    dp: DPConfig
    configs: tuple[tuple[float, Config], ...]


class _Search:
    """Collects jobs, then runs them best bound first, pruning against the ``keep`` best."""

    def __init__(self, layer_costs: LayerCosts, partition: str | Sequence[int],
                 pairs: list[tuple[str, int]], limit: float | None, factor: float,
                 keep: int | None = None, synth_seconds: float | None = None) -> None:
        self.synth_seconds = synth_seconds or 1.0
        self.data = StageData(layer_costs)
        self.partition, self.pairs, self.limit, self.factor, self.keep = (
            partition, pairs, limit, factor, keep)
        self.jobs: list[_Job] = []
        self.candidates: list[Candidate] = []
        self.rejected: list[Rejected] = []
        self.skipped: list[Skipped] = []
        self.best: list[float] = []  # max-heap (negated) of the ``keep`` best steps so far
        self.split_best: dict[int, float] = {}  # D -> its best step so far
        self.pruned = 0
        self._balances: dict[int, list[tuple[str, tuple[int, ...]]] | str] = {}

    def add(self, ranks: int, dp: DPConfig, share: int, counts: Sequence[int]) -> None:
        # one rank per replica is no pipeline: every schedule is the same accumulation loop,
        # so it is planned once (gpipe, v=1), not as interleaved stages on one rank
        pairs = [("gpipe", 1)] if ranks == 1 else self.pairs
        for name, v in pairs:
            if ranks * v not in self._balances:
                self._balances[ranks * v] = _balances(self.data.layer_costs, ranks * v,
                                                      self.partition)
            balances = self._balances[ranks * v]
            if isinstance(balances, str):
                self.skipped.append(Skipped(name, 0, v, balances, dp.replicas))
                continue
            for m in counts:
                configs = [Config(name, m, v, share // m, label, balance, dp.replicas)
                           for label, balance in balances]
                bounds = [0.0 if self.keep is None else
                          step_lower_bound(self.data.costs(c), m, ranks, dp) for c in configs]
                self.jobs.append(_Job(min(bounds), name, ranks, m, v, dp,
                                      tuple(zip(bounds, configs, strict=True))))

    def cutoff(self, replicas: int) -> float:
        """Steps above this can neither enter the ``keep`` best nor be the best of their D."""
        if self.keep is None or len(self.best) < self.keep:
            return math.inf
        return max(-self.best[0], self.split_best.get(replicas, math.inf)) * (1 + 1e-9)

    def run(self, meta: dict[str, Any]) -> PlanResult:
        for job in sorted(self.jobs, key=itemgetter(0)):
            if job.bound > self.cutoff(job.dp.replicas):
                self.pruned += len(job.configs)
                continue
            try:
                sched = None if job.name in SYNTHESIZED else \
                    get_schedule(job.name, job.ranks, job.microbatches, job.virtual)
            except ConfigError as err:
                self.skipped.append(Skipped(job.name, job.microbatches, job.virtual, str(err),
                                            job.dp.replicas))
                continue
            digest = None if sched is None else digest_of(sched)
            for bound, config in job.configs:
                if bound > self.cutoff(job.dp.replicas):
                    self.pruned += 1
                    continue
                mine, mine_digest = sched, digest
                if mine is None:  # synthesized for this configuration's own costs
                    mine = synth_schedule(job.name, job.ranks, job.microbatches,
                                          self.data.costs(config), *self.data.memory(config),
                                          self.limit, self.factor, self.synth_seconds)
                    if mine is None:
                        continue
                    mine_digest = digest_of(mine)
                assert mine_digest is not None
                outcome = score(mine, mine_digest, config, self.data, self.limit,
                                    self.factor, job.dp)
                if isinstance(outcome, Rejected):
                    self.rejected.append(outcome)
                    continue
                self.candidates.append(outcome)
                step, d = outcome.predicted_step_seconds, config.dp
                self.split_best[d] = min(step, self.split_best.get(d, math.inf))
                heapq.heappush(self.best, -outcome.predicted_step_seconds)
                if self.keep is not None and len(self.best) > self.keep:
                    heapq.heappop(self.best)
        order = [*SCHEDULES, *SYNTHESIZED]
        self.candidates.sort(key=lambda c: (
            float(f"{c.predicted_step_seconds:.9g}"), max(c.peak_memory_bytes),
            order.index(c.config.schedule), c.config.microbatches, c.config.virtual_stages,
            c.config.dp))
        self.rejected.sort(key=lambda r: (max(r.peak_memory_bytes), order.index(r.config.schedule),
                                          r.config.dp, r.config.microbatches))
        if self.keep is not None:
            meta = meta | {"pruned": self.pruned}
        return PlanResult(tuple(self.candidates), tuple(self.rejected), tuple(self.skipped), meta)


__all__ = ["PARTITIONS", "Candidate", "Config", "PlanError", "PlanResult", "Rejected", "Skipped",
           "check_partition", "command_for", "evaluate", "format_bytes", "parse_bytes",
           "peak_memory", "pipeline_args", "pipeline_call", "plan", "plan_world", "run_command"]
