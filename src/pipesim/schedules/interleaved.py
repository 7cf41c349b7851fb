"""Multi-stage-per-rank schedules on a looped placement: interleaved 1F1B and looped BFS."""

from __future__ import annotations

from pipesim.ir import Action, Op, Schedule
from pipesim.schedules._common import ConfigError, build, check_sizes, looped_placement
from pipesim.schedules.simple import one_f_one_b


def _round_size(ranks: int, microbatches: int) -> int:
    """Microbatches per round, as torch.distributed.pipelining's flexible interleaving has it.

    rounds = max(1, m // p); m must split evenly into rounds, each of m // rounds microbatches.
    """
    rounds = max(1, microbatches // ranks)
    if microbatches % rounds:
        valid = [m for m in range(max(1, microbatches - ranks), microbatches + ranks + 1)
                 if m % max(1, m // ranks) == 0]
        raise ConfigError(
            f"interleaved-1f1b needs microbatches divisible by max(1, microbatches // ranks) "
            f"= {rounds}; {microbatches} is not. Nearby valid counts for {ranks} ranks: "
            + ", ".join(map(str, valid))
        )
    return microbatches // rounds


def interleaved_1f1b(ranks: int, microbatches: int, virtual_stages: int = 2) -> Schedule:
    """Megatron's interleaved 1F1B: v model chunks per rank, stage s on rank s mod ranks.

    Depth first: a rank runs a round of g microbatches on chunk 0, then the same round on
    chunk 1, ...; warm-up is (v-1)*g + 2*(ranks-1-rank) forwards, then one F one B, so rank r
    stashes at most min((v-1)*g + 2*(ranks-1-r) + 1, microbatches*v) chunk activations.
    Equal to torch's ScheduleInterleaved1F1B for v >= 2. With v = 1 it is 1F1B (torch keeps
    its interleaved warm-up there). Below (g=4): warm-up 10 > 8 forwards on rank 0 (all of them),
    8, 6 and 4 on rank 3, then one F one B. ranks=4, microbatches=4, v=2 (unit steps)::

        rank 0: 0F0 0F1 0F2 0F3 4F0 4F1 4F2 4F3  .   .   .  4B0  .  4B1  .  4B2  .  4B3 0B0 0B1 0B2 0B3
        rank 1:  .  1F0 1F1 1F2 1F3 5F0 5F1 5F2 5F3  .  5B0  .  5B1  .  5B2  .  5B3 1B0 1B1 1B2 1B3  .
        rank 2:  .   .  2F0 2F1 2F2 2F3 6F0 6F1 6F2 6B0 6F3 6B1  .  6B2  .  6B3 2B0 2B1 2B2 2B3  .   .
        rank 3:  .   .   .  3F0 3F1 3F2 3F3 7F0 7B0 7F1 7B1 7F2 7B2 7F3 7B3 3B0 3B1 3B2 3B3  .   .   .
    """
    check_sizes(ranks, microbatches, virtual_stages)
    if virtual_stages == 1:
        sched = one_f_one_b(ranks, microbatches)
        return build("interleaved-1f1b", ranks, microbatches, sched.stage_to_rank, sched.actions)
    v, g = virtual_stages, _round_size(ranks, microbatches)
    total = microbatches * v

    # the k-th forward (backward) of any rank: (chunk, microbatch), depth first by rounds of g
    fwd = [((k // g) % v, (k // (g * v)) * g + k % g) for k in range(total)]
    bwd = [(v - 1 - c, mb) for c, mb in fwd]
    forward, backward, new = Op.F, Op.B, tuple.__new__  # hot loop: ~260k actions at 64x1024

    rows = []
    for r in range(ranks):
        f_row = [new(Action, (c * ranks + r, forward, mb)) for c, mb in fwd]
        b_row = [new(Action, (c * ranks + r, backward, mb)) for c, mb in bwd]
        warmup = min((v - 1) * g + 2 * (ranks - 1 - r), total)
        row = f_row[:warmup]
        for i in range(total - warmup):
            row += (f_row[warmup + i], b_row[i])
        row += b_row[total - warmup:]
        rows.append(row)
    return build("interleaved-1f1b", ranks, microbatches, looped_placement(ranks, v), rows)


def looped_bfs(ranks: int, microbatches: int, virtual_stages: int = 2) -> Schedule:
    """Breadth-first looped schedule: each chunk runs every microbatch before the next chunk.

    Backward visits the chunks in reverse. Like GPipe per chunk: peak m*v stashed activations.
    ranks=4, microbatches=4, v=2 (unit steps)::

        rank 0: 0F0 0F1 0F2 0F3 4F0 4F1 4F2 4F3  .   .   .   .   .   .  4B0 4B1 4B2 4B3 0B0 0B1 0B2 0B3
        rank 1:  .  1F0 1F1 1F2 1F3 5F0 5F1 5F2 5F3  .   .   .   .  5B0 5B1 5B2 5B3 1B0 1B1 1B2 1B3  .
        rank 2:  .   .  2F0 2F1 2F2 2F3 6F0 6F1 6F2 6F3  .   .  6B0 6B1 6B2 6B3 2B0 2B1 2B2 2B3  .   .
        rank 3:  .   .   .  3F0 3F1 3F2 3F3 7F0 7F1 7F2 7F3 7B0 7B1 7B2 7B3 3B0 3B1 3B2 3B3  .   .   .
    """
    check_sizes(ranks, microbatches, virtual_stages)
    v = virtual_stages
    rows = []
    for r in range(ranks):
        chunks = [c * ranks + r for c in range(v)]
        row = [Action(s, Op.F, mb) for s in chunks for mb in range(microbatches)]
        row += [Action(s, Op.B, mb) for s in reversed(chunks) for mb in range(microbatches)]
        rows.append(row)
    return build("looped-bfs", ranks, microbatches, looped_placement(ranks, v), rows)


__all__ = ["interleaved_1f1b", "looped_bfs"]
