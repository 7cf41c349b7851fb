"""Zero-bubble schedules (Qi et al., 2024, arXiv:2401.10241): backward split into I and W.

I (the input gradient) stays on the critical path; W (the weight gradient) has no consumer on
another rank, so it is deferred into what would otherwise be bubbles.
"""

from __future__ import annotations

from pipesim.ir import Action, Op, Schedule
from pipesim.schedules._common import build, check_sizes, v_placement


def zb_h1(ranks: int, microbatches: int) -> Schedule:
    """ZB-H1: 1F1B with B split into I and W; rank r defers its first r W's.

    Rank r: ranks-1-r warm-up F's, then F I (W) repeated, W lagging r I's behind, remaining W's
    last. Every rank stashes at most `ranks` activations (an activation lives until its W), 1F1B's
    peak; with F = I = W the bubble is (ranks-1)(F+I-W), a third of 1F1B's. Below, the I's (on
    the critical path) move up from 1F1B's B's and the W's fill the drain.
    ranks=4, microbatches=4 (unit steps)::

        rank 0: 0F0 0F1 0F2 0F3  .   .   .  0I0 0W0 0I1 0W1 0I2 0W2 0I3 0W3
        rank 1:  .  1F0 1F1 1F2  .   .  1I0 1F3 1I1 1W0 1I2 1W1 1I3 1W2 1W3
        rank 2:  .   .  2F0 2F1  .  2I0 2F2 2I1 2F3 2I2 2W0 2I3 2W1 2W2 2W3
        rank 3:  .   .   .  3F0 3I0 3F1 3I1 3F2 3I2 3F3 3I3 3W0 3W1 3W2 3W3
    """
    check_sizes(ranks, microbatches)
    rows = []
    for r in range(ranks):
        warmup = min(ranks - r - 1, microbatches)
        row = [Action(r, Op.F, mb) for mb in range(warmup)]
        pending_w = 0
        for i in range(microbatches):
            if warmup + i < microbatches:
                row.append(Action(r, Op.F, warmup + i))
            row.append(Action(r, Op.I, i))
            if i >= r:
                row.append(Action(r, Op.W, pending_w))
                pending_w += 1
        row += [Action(r, Op.W, mb) for mb in range(pending_w, microbatches)]
        rows.append(row)
    return build("zb-h1", ranks, microbatches, range(ranks), rows)


def zbv(ranks: int, microbatches: int) -> Schedule:
    """ZB-V: two stages per rank in a V (rank r holds r and 2*ranks-1-r), B split into I and W.

    The ordering follows the paper's handcrafted V schedule as torch.distributed.pipelining's
    ScheduleZBVZeroBubble lays it out: microbatches are padded to 2*ranks-1 to fill the pipeline,
    then the padding is dropped. Rank r stashes at most min(2*ranks, 2*m, m+r+1) activations
    of its half-size stages: 2*ranks (1F1B's memory) once m >= 2*ranks-1. Below, rank 0 runs
    the first and the last stage; rank r starts with 2*(4-r)-1 F's of its first stage (only 4
    exist), pairs of F's, then F I W on its second stage; the turn of the V (3F -> 4F on rank 3)
    sends no message. ranks=4, microbatches=4 (unit steps)::

        rank 0: 0F0 0F1 0F2 0F3  .   .   .  7F0 7I0 7W0 7F1 7I1 7W1 7F2 7I2 7W2 7F3 7I3 7W3 0I0 0W0  .  0I1 0W1  .  0I2 0W2  .  0I3 0W3
        rank 1:  .  1F0 1F1 1F2 1F3  .  6F0  .  6F1 6I0 6W0 6F2 6I1 6W1 6F3 6I2 6W2 1I0 1W0 6I3 6W3 1I1 1W1  .  1I2 1W2  .  1I3 1W3  .
        rank 2:  .   .  2F0 2F1 2F2 5F0 2F3 5F1  .  5F2 5I0 5W0 5F3 5I1 5W1 2I0 2W0 5I2 5W2 2I1 2W1 5I3 5W3 2I2 2W2  .  2I3 2W3  .   .
        rank 3:  .   .   .  3F0 4F0 3F1 4F1 3F2 4F2 3F3 4F3 4I0 4W0 3I0 3W0 4I1 4W1 3I1 3W1 4I2 4W2 3I2 3W2 4I3 4W3 3I3 3W3  .   .   .
    """
    check_sizes(ranks, microbatches)
    n = max(2 * ranks - 1, microbatches)  # padded microbatch count
    stages = 2 * ranks
    rows = []
    for r in range(ranks):
        s0, s1 = r, stages - 1 - r
        row: list[Action] = []
        count = {("F", 0): 0, ("F", 1): 0, ("B", 0): 0, ("B", 1): 0}

        def emit(chunk: int, *ops: Op, row: list[Action] = row,
                 count: dict[tuple[str, int], int] = count, s0: int = s0, s1: int = s1) -> None:
            stage = s0 if chunk == 0 else s1
            key = ("F", chunk) if ops[0] is Op.F else ("B", chunk)
            for op in ops:
                row.append(Action(stage, op, count[key]))
            count[key] += 1

        for _ in range(2 * (ranks - r) - 1):
            emit(0, Op.F)
        for _ in range(r):
            emit(1, Op.F)
            emit(0, Op.F)
        for _ in range(ranks - r):
            emit(1, Op.F)
            emit(1, Op.I, Op.W)
        while count["F", 1] < count["F", 0] or count["F", 0] < n:
            if count["F", 0] < n:
                emit(0, Op.F)
            emit(0, Op.I, Op.W)
            emit(1, Op.F)
            emit(1, Op.I, Op.W)
        w0, w1 = count["B", 0], count["B", 1]
        for _ in range(r):
            emit(0, Op.I)
            emit(1, Op.I)
        for _ in range(ranks - r):
            emit(0, Op.I)
            row.append(Action(s0, Op.W, w0))
            w0 += 1
        row += [Action(s1, Op.W, mb) for mb in range(w1, count["B", 1])]
        row += [Action(s0, Op.W, mb) for mb in range(w0, count["B", 0])]
        rows.append([a for a in row if a.microbatch < microbatches])
    return build("zbv", ranks, microbatches, v_placement(ranks), rows)


__all__ = ["zb_h1", "zbv"]
