"""Helpers shared by the generators: placements and argument checks."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pipesim.checks import is_positive_int
from pipesim.ir import Action, Schedule


class ConfigError(ValueError):
    """A schedule that does not accept the requested configuration; the message says why."""


def check_sizes(ranks: int, microbatches: int, virtual_stages: int = 1) -> None:
    for label, value in (("ranks", ranks), ("microbatches", microbatches),
                         ("virtual stages", virtual_stages)):
        if not is_positive_int(value):
            raise ConfigError(f"{label} must be an integer >= 1, got {value!r}")


def looped_placement(ranks: int, virtual_stages: int) -> tuple[int, ...]:
    """Stage s on rank s mod ranks (Megatron's interleaved layout)."""
    return tuple(s % ranks for s in range(ranks * virtual_stages))


def v_placement(ranks: int) -> tuple[int, ...]:
    """Two stages per rank in a V: rank r holds stages r and 2*ranks-1-r."""
    return tuple(s if s < ranks else 2 * ranks - 1 - s for s in range(2 * ranks))


def build(
    name: str,
    ranks: int,
    microbatches: int,
    placement: Sequence[int],
    rows: Sequence[Sequence[Action]],
    pairs: Iterable[tuple[Action, Action]] = (),
) -> Schedule:
    return Schedule(
        ranks=ranks,
        stages=len(placement),
        microbatches=microbatches,
        stage_to_rank=tuple(placement),
        actions=tuple(tuple(r) for r in rows),
        name=name,
        pairs=frozenset(pairs),
    )
