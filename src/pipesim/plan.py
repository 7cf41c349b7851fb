"""Search schedules x microbatch counts x virtual stages x partitions with the simulator.

``plan(layer_costs, ranks, batch)`` tries every training schedule in the registry that accepts
each configuration, simulates it with the per-layer costs summed into stages, and ranks the
configurations by predicted step time (ties: lower peak memory). Model of a step:

- the batch of ``batch`` samples is cut into m microbatches of ``batch / m`` samples (an integer);
- times and activation/stash bytes scale linearly from the profiled microbatch size (a
  simplification: small microbatches run less efficiently on real hardware, so the planner is
  optimistic about large m; the per-message latency is the only per-microbatch overhead);
- peak memory of a rank = ``optimizer_factor`` x its parameter bytes (default 4: weights,
  gradients and Adam's two moments, all as stored; 16 bytes per fp32 parameter) + the most
  stashed activation bytes alive at once, walking its actions in order: F adds its stage's stash
  bytes, B (or W, when the backward is split) frees them. Over ``memory_limit_bytes`` is rejected
  without simulating.

Search space (defaults): schedules = every training schedule; microbatch counts = divisors of
the batch up to 4 x ranks; ``virtual`` = (1, 2): a schedule with a fixed number of stages per
rank (1f1b: 1, zbv: 2) is tried when that number is listed, one that takes any (interleaved-1f1b)
with each listed value >= 2; partitions = balanced by per-layer F+B time and uniform layer counts
(or one of "time", "params", "uniform", or an explicit balance list).
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from operator import itemgetter
from typing import Any, NamedTuple

from pipesim.costs import CostModel
from pipesim.ir import Op, Schedule
from pipesim.layercosts import LayerCosts, stage_costs, stage_memory
from pipesim.partition import check_balance, partition_balanced, partition_uniform
from pipesim.schedules import SCHEDULES, ConfigError, get_schedule
from pipesim.simulate import simulate

PARTITIONS = ("auto", "time", "params", "uniform")
DEFAULT_STEPS = 10  # --steps in the suggested `pipesim run` command


class PlanError(ValueError):
    """Planner inputs that cannot be searched; the message says what to change."""


class Config(NamedTuple):
    """One point of the search space."""

    schedule: str
    microbatches: int
    virtual_stages: int
    microbatch_size: int
    partition: str  # "time", "params", "uniform" or "explicit"
    balance: tuple[int, ...]  # layers per stage, stages = ranks x virtual_stages


@dataclass(frozen=True)
class Candidate:
    """A configuration that fits: its predicted step and the command that would run it."""

    config: Config
    predicted_step_seconds: float
    bubble_fraction: float
    peak_memory_bytes: tuple[float, ...]  # per rank
    command: str

    def to_dict(self) -> dict[str, Any]:
        return {**_config_dict(self.config),
                "predicted_step_seconds": self.predicted_step_seconds,
                "bubble_fraction": self.bubble_fraction,
                "peak_memory_bytes": list(self.peak_memory_bytes),
                "command": self.command}


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
    """A (schedule, microbatches, virtual stages) the schedule or the model does not accept."""

    schedule: str
    microbatches: int
    virtual_stages: int
    reason: str


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
    d = config._asdict()
    d["balance"] = list(config.balance)
    return d


# ----------------------------------------------------------------------------- sizes in bytes

_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """``"2GB"`` -> 2_000_000_000, ``"512MiB"`` -> 536_870_912, ``"1000"`` -> 1000."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _BYTE_UNITS:
        raise ValueError(f"{text!r} is not a size; use e.g. 2GB, 512MiB, 1.5GiB or 1000000")
    value = int(float(match.group(1)) * _BYTE_UNITS[unit])
    if value < 1:
        raise ValueError(f"{text!r}: a memory limit must be at least 1 byte")
    return value


def format_bytes(n: float) -> str:
    """Decimal units with one decimal: 3_100_000_000 -> '3.1 GB'."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


# ----------------------------------------------------------------------------- the search


def plan(layer_costs: LayerCosts, ranks: int, batch: int,
         memory_limit_bytes: float | None = None,
         schedules: Sequence[str] | None = None,
         microbatch_counts: Sequence[int] | None = None,
         virtual: Sequence[int] = (1, 2),
         partition: str | Sequence[int] = "auto",
         optimizer_factor: float = 4.0) -> PlanResult:
    """Rank every accepted configuration by predicted step time; see the module docstring."""
    _check_inputs(layer_costs, ranks, batch, memory_limit_bytes, optimizer_factor)
    partition = check_partition(partition, len(layer_costs))
    counts = _microbatch_counts(batch, ranks, microbatch_counts)
    pairs = _schedule_virtuals(schedules, virtual)
    candidates: list[Candidate] = []
    rejected: list[Rejected] = []
    skipped: list[Skipped] = []
    data = _StageData(layer_costs)
    by_stages: dict[int, list[tuple[str, tuple[int, ...]]] | str] = {}
    for name, v in pairs:
        if ranks * v not in by_stages:
            by_stages[ranks * v] = _balances(layer_costs, ranks * v, partition)
        balances = by_stages[ranks * v]
        if isinstance(balances, str):
            skipped.append(Skipped(name, 0, v, balances))
            continue
        for m in counts:
            try:
                sched = get_schedule(name, ranks, m, v)
            except ConfigError as err:
                skipped.append(Skipped(name, m, v, str(err)))
                continue
            digest = _digest(sched)
            for label, balance in balances:
                config = Config(name, m, v, batch // m, label, balance)
                outcome = _evaluate(sched, digest, config, data, memory_limit_bytes,
                                    optimizer_factor)
                if isinstance(outcome, Candidate):
                    candidates.append(outcome)
                else:
                    rejected.append(outcome)
    order = list(SCHEDULES)
    candidates.sort(key=lambda c: (float(f"{c.predicted_step_seconds:.9g}"),
                                   max(c.peak_memory_bytes), order.index(c.config.schedule),
                                   c.config.microbatches, c.config.virtual_stages))
    rejected.sort(key=lambda r: (max(r.peak_memory_bytes), order.index(r.config.schedule)))
    meta = {"model": layer_costs.model, "ranks": ranks, "batch": batch, "layers": len(layer_costs),
            "memory_limit_bytes": memory_limit_bytes, "optimizer_factor": optimizer_factor}
    return PlanResult(tuple(candidates), tuple(rejected), tuple(skipped), meta)


def evaluate(schedule: Schedule, config: Config, layer_costs: LayerCosts,
             memory_limit_bytes: float | None = None,
             optimizer_factor: float = 4.0) -> Candidate | Rejected:
    """Memory first (no simulation if over the limit), then the simulated step."""
    return _evaluate(schedule, _digest(schedule), config, _StageData(layer_costs),
                     memory_limit_bytes, optimizer_factor)


class _StageData:
    """Per-stage costs and memory for (balance, microbatch size), computed once per plan()."""

    def __init__(self, layer_costs: LayerCosts) -> None:
        self.layer_costs = layer_costs
        self._costs: dict[tuple[tuple[int, ...], int], CostModel] = {}
        self._memory: dict[tuple[tuple[int, ...], int], tuple[list[float], list[float]]] = {}

    def costs(self, config: Config) -> CostModel:
        key = (config.balance, config.microbatch_size)
        if key not in self._costs:
            self._costs[key] = stage_costs(self.layer_costs, *key)
        return self._costs[key]

    def memory(self, config: Config) -> tuple[list[float], list[float]]:
        key = (config.balance, config.microbatch_size)
        if key not in self._memory:
            self._memory[key] = stage_memory(self.layer_costs, *key)
        return self._memory[key]


class _Digest(NamedTuple):
    """What the memory walk and the busy time need from a schedule, computed once per schedule."""

    codes: tuple[list[int], ...]  # per rank, in order: 2s for F(s), 2s+1 for B(s) or W(s)
    stages_of: tuple[tuple[int, ...], ...]  # per rank
    split: tuple[int, ...]  # per stage: microbatches whose backward is split into I and W


def _digest(schedule: Schedule) -> _Digest:
    f, i = Op.F, Op.I
    codes = tuple([2 * s if op is f else 2 * s + 1 for s, op, _ in row if op is not i]
                  for row in schedule.actions)
    split = [0] * schedule.stages
    for stage, _ in schedule.split_backward:
        split[stage] += 1
    return _Digest(codes, tuple(schedule.stages_of(r) for r in range(schedule.ranks)),
                   tuple(split))


def _evaluate(schedule: Schedule, digest: _Digest, config: Config, data: _StageData,
              memory_limit_bytes: float | None, optimizer_factor: float) -> Candidate | Rejected:
    stash, params = data.memory(config)
    peaks = tuple(_peaks(digest, stash, params, optimizer_factor))
    if memory_limit_bytes is not None:
        worst = max(range(len(peaks)), key=peaks.__getitem__)
        if peaks[worst] > memory_limit_bytes:
            return Rejected(config, peaks, f"rank {worst} needs {format_bytes(peaks[worst])} > "
                                           f"limit {format_bytes(memory_limit_bytes)}")
    costs = data.costs(config)
    events = simulate(schedule, costs).events
    span = max(map(itemgetter(3), events)) - min(map(itemgetter(2), events))
    m = schedule.microbatches
    busy = math.fsum(m * f + k * (i + w) + (m - k) * b for f, i, w, b, k in zip(
        costs.forward, costs.backward_input, costs.backward_weight, costs.backward,
        digest.split, strict=True))  # every stage runs m F's and m backwards (B, or I and W)
    bubble = 1 - busy / (schedule.ranks * span) if span > 0 else 0.0
    return Candidate(config, span, bubble, peaks,
                     run_command(config, schedule.ranks, data.layer_costs.model))


def peak_memory(schedule: Schedule, stash_bytes: Sequence[float],
                param_bytes: Sequence[float], optimizer_factor: float = 4.0) -> list[float]:
    """Per rank: optimizer_factor x its parameter bytes + its peak stashed activation bytes.

    Walks each rank's actions in order: F(s) adds stash_bytes[s]; B(s), or W(s) when the backward
    is split, frees them; I frees nothing.
    """
    return _peaks(_digest(schedule), stash_bytes, param_bytes, optimizer_factor)


def _peaks(digest: _Digest, stash_bytes: Sequence[float], param_bytes: Sequence[float],
           optimizer_factor: float) -> list[float]:
    signed = [x for s in stash_bytes for x in (s, -s)]  # indexed by the digest's codes
    return [optimizer_factor * math.fsum(param_bytes[s] for s in stages)
            + max(accumulate(map(signed.__getitem__, codes), initial=0.0))
            for codes, stages in zip(digest.codes, digest.stages_of, strict=True)]


def run_command(config: Config, ranks: int, model: str = "") -> str:
    """The ``pipesim run`` command line that runs ``config``."""
    words = ["pipesim", "run"]
    if model:
        words += ["--model", shlex.quote(model)]
    words += ["--schedule", config.schedule, "-w", str(ranks), "-m", str(config.microbatches),
              "-b", str(config.microbatch_size), "-v", str(config.virtual_stages),
              "--balance", ",".join(map(str, config.balance)), "--steps", str(DEFAULT_STEPS)]
    return " ".join(words)


# ----------------------------------------------------------------------------- search space


def _check_inputs(layer_costs: LayerCosts, ranks: int, batch: int, limit: float | None,
                  factor: float) -> None:
    for label, value in (("ranks", ranks), ("batch", batch)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
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
    for m in counts:
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise PlanError(f"microbatch counts must be integers >= 1, got {m!r}")
    usable = sorted({m for m in counts if batch % m == 0})
    if not usable:
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        raise PlanError(f"batch {batch} is not divisible by any microbatch count "
                        f"({', '.join(map(str, counts))}); counts that divide it: {shown}")
    return usable


def _schedule_virtuals(names: Sequence[str] | None,
                       virtual: Sequence[int]) -> list[tuple[str, int]]:
    """(schedule, stages per rank) pairs to try, in registry order."""
    for v in virtual:
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
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
