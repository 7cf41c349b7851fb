"""Single-stage-per-rank schedules: forward-only, GPipe and 1F1B (PipeDream-Flush)."""

from __future__ import annotations

from pipesim.ir import Action, Op, Schedule
from pipesim.schedules._common import build, check_sizes


def forward(ranks: int, microbatches: int) -> Schedule:
    """The tutorial's inference pipeline: every rank runs F for each microbatch in order.

    Each rank runs one step behind the one before it. ranks=4, microbatches=4 (one column per
    unit step)::

        rank 0: 0F0 0F1 0F2 0F3  .   .   .
        rank 1:  .  1F0 1F1 1F2 1F3  .   .
        rank 2:  .   .  2F0 2F1 2F2 2F3  .
        rank 3:  .   .   .  3F0 3F1 3F2 3F3
    """
    check_sizes(ranks, microbatches)
    rows = [[Action(r, Op.F, mb) for mb in range(microbatches)] for r in range(ranks)]
    return build("forward", ranks, microbatches, range(ranks), rows)


def gpipe(ranks: int, microbatches: int) -> Schedule:
    """GPipe (fill-drain): all forwards, then all backwards; every rank stashes m activations.

    Fill, then drain: the last rank turns round at step 7, rank r starts its B's 3-r later.
    ranks=4, microbatches=4 (unit steps; B drawn one step wide)::

        rank 0: 0F0 0F1 0F2 0F3  .   .   .   .   .   .  0B0 0B1 0B2 0B3
        rank 1:  .  1F0 1F1 1F2 1F3  .   .   .   .  1B0 1B1 1B2 1B3  .
        rank 2:  .   .  2F0 2F1 2F2 2F3  .   .  2B0 2B1 2B2 2B3  .   .
        rank 3:  .   .   .  3F0 3F1 3F2 3F3 3B0 3B1 3B2 3B3  .   .   .
    """
    check_sizes(ranks, microbatches)
    rows = [
        [Action(r, Op.F, mb) for mb in range(microbatches)]
        + [Action(r, Op.B, mb) for mb in range(microbatches)]
        for r in range(ranks)
    ]
    return build("gpipe", ranks, microbatches, range(ranks), rows)


def one_f_one_b(ranks: int, microbatches: int) -> Schedule:
    """1F1B (PipeDream-Flush): ranks-rank-1 warm-up forwards, then alternate F and B.

    Rank r stashes at most min(ranks - r, microbatches) activations. Below, rank r has
    3-r warm-up F's, then F B alternating, then the cool-down B's.
    ranks=4, microbatches=4 (unit steps)::

        rank 0: 0F0 0F1 0F2 0F3  .   .   .  0B0  .  0B1  .  0B2  .  0B3
        rank 1:  .  1F0 1F1 1F2  .   .  1B0 1F3 1B1  .  1B2  .  1B3  .
        rank 2:  .   .  2F0 2F1  .  2B0 2F2 2B1 2F3 2B2  .  2B3  .   .
        rank 3:  .   .   .  3F0 3B0 3F1 3B1 3F2 3B2 3F3 3B3  .   .   .
    """
    check_sizes(ranks, microbatches)
    rows = []
    for r in range(ranks):
        warmup = min(ranks - r - 1, microbatches)
        row = [Action(r, Op.F, mb) for mb in range(warmup)]
        for i in range(microbatches - warmup):
            row += [Action(r, Op.F, warmup + i), Action(r, Op.B, i)]
        row += [Action(r, Op.B, mb) for mb in range(microbatches - warmup, microbatches)]
        rows.append(row)
    return build("1f1b", ranks, microbatches, range(ranks), rows)


__all__ = ["forward", "gpipe", "one_f_one_b"]
