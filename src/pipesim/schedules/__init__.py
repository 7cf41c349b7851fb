"""The schedule registry: every generator by name, each a pure (ranks, microbatches[, v]) -> Schedule.

>>> get_schedule("1f1b", ranks=4, microbatches=8).num_actions
64
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from pipesim.ir import Schedule
from pipesim.schedules._common import ConfigError
from pipesim.schedules.dualpipe import dualpipe_v
from pipesim.schedules.interleaved import interleaved_1f1b, looped_bfs
from pipesim.schedules.simple import forward, gpipe, one_f_one_b
from pipesim.schedules.zero_bubble import zb_h1, zbv

__all__ = ["SCHEDULES", "ConfigError", "ScheduleSpec", "UnknownScheduleError", "get_schedule",
           "same_placement"]


class UnknownScheduleError(ValueError):
    """A schedule name that is not registered; the message lists the valid names."""


@dataclass(frozen=True)
class ScheduleSpec:
    """A registered generator and what it accepts."""

    name: str
    summary: str
    build: Callable[..., Schedule]
    # None: one stage per rank; an int: that many, fixed; "any": the caller's -v (default 2)
    virtual: int | str | None = None
    training: bool = True  # False for inference-only schedules

    def stages_per_rank(self, virtual_stages: int | None) -> int:
        if self.virtual == "any":
            return 2 if virtual_stages is None else virtual_stages
        fixed = 1 if self.virtual is None else int(self.virtual)
        if virtual_stages not in (None, fixed):
            raise ConfigError(
                f"{self.name} always has {fixed} stage{'s' if fixed > 1 else ''} per rank; "
                f"drop -v/--virtual-stages (got {virtual_stages})"
            )
        return fixed


SCHEDULES: dict[str, ScheduleSpec] = {
    spec.name: spec
    for spec in (
        ScheduleSpec("forward", "forward only (inference), the tutorial's pipeline", forward,
                     training=False),
        ScheduleSpec("gpipe", "all forwards then all backwards (fill-drain)", gpipe),
        ScheduleSpec("1f1b", "one forward one backward (PipeDream-Flush)", one_f_one_b),
        ScheduleSpec("interleaved-1f1b", "Megatron's interleaved 1F1B, v stages per rank",
                     interleaved_1f1b, virtual="any"),
        ScheduleSpec("looped-bfs", "breadth-first looped, v stages per rank", looped_bfs,
                     virtual="any"),
        ScheduleSpec("zb-h1", "zero bubble H1: B split into I and W, 1F1B memory", zb_h1),
        ScheduleSpec("zbv", "zero bubble V: 2 stages per rank in a V", zbv, virtual=2),
        ScheduleSpec("dualpipev", "DeepSeek's DualPipeV: 2 stages per rank in a V", dualpipe_v,
                     virtual=2),
    )
}


def get_spec(name: str) -> ScheduleSpec:
    try:
        return SCHEDULES[name]
    except KeyError:
        raise UnknownScheduleError(
            f"unknown schedule {name!r}; valid: {', '.join(SCHEDULES)}"
        ) from None


_MAX_ACTIONS = 5_000_000  # past this a schedule is a typo, not a plan: it would fill memory


def _check_size(name: str, ranks: int, microbatches: int, virtual_stages: int) -> None:
    if not all(isinstance(x, int) for x in (ranks, microbatches, virtual_stages)):
        return  # the generator's own check names the bad argument
    actions = 3 * ranks * virtual_stages * microbatches  # F, I, W per stage and microbatch
    if actions > _MAX_ACTIONS:
        raise ConfigError(
            f"{name} with {ranks} ranks, {virtual_stages} stage(s) per rank and {microbatches} "
            f"microbatches is up to {actions:,} actions; pipesim handles at most {_MAX_ACTIONS:,}"
        )


def get_schedule(name: str, ranks: int, microbatches: int,
                 virtual_stages: int | None = None) -> Schedule:
    """Generate the named schedule; raises UnknownScheduleError or ConfigError with a reason."""
    spec = get_spec(name)
    v = spec.stages_per_rank(virtual_stages)
    _check_size(name, ranks, microbatches, v)
    if spec.virtual == "any":
        return spec.build(ranks, microbatches, v)
    return spec.build(ranks, microbatches)


def same_placement(ranks: int, microbatches: int, stage_to_rank: Sequence[int]
                   ) -> Iterator[tuple[str, Schedule]]:
    """(name, schedule) of each registered training schedule (one or two stages per rank) that
    builds for ``ranks`` x ``microbatches`` and places stages as ``stage_to_rank``: what a
    synthesized schedule competes with."""
    for name, spec in SCHEDULES.items():
        if not spec.training or spec.virtual not in (None, 2):
            continue
        try:
            sched = spec.build(ranks, microbatches)
        except ConfigError:
            continue
        if sched.stage_to_rank == tuple(stage_to_rank):
            yield name, sched
