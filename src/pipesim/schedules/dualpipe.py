"""DualPipeV (DeepSeek-V3's DualPipe folded into a V), as torch.distributed.pipelining defines it."""

from __future__ import annotations

from collections import deque

from pipesim.ir import Action, Op, Schedule
from pipesim.schedules._common import ConfigError, build, check_sizes, v_placement


class _Rank:
    """Per-rank counters: next microbatch per (stage, kind) and the queue of deferred W's."""

    def __init__(self) -> None:
        self.row: list[Action] = []
        self.pairs: list[tuple[Action, Action]] = []
        self.next_f: dict[int, int] = {}
        self.next_b: dict[int, int] = {}
        self.pending_w: deque[tuple[int, int]] = deque()

    def forward(self, stage: int) -> None:
        mb = self.next_f.get(stage, 0)
        self.row.append(Action(stage, Op.F, mb))
        self.next_f[stage] = mb + 1

    def backward(self, stage: int, split: bool) -> None:
        mb = self.next_b.get(stage, 0)
        self.row.append(Action(stage, Op.I if split else Op.B, mb))
        self.next_b[stage] = mb + 1
        if split:
            self.pending_w.append((stage, mb))

    def overlapped(self, forward_stage: int, backward_stage: int) -> None:
        """DualPipe's F&B: a forward and a full backward run as one overlapped pair."""
        self.forward(forward_stage)
        self.backward(backward_stage, split=False)
        self.pairs.append((self.row[-2], self.row[-1]))

    def weight(self) -> None:
        if self.pending_w:
            stage, mb = self.pending_w.popleft()
            self.row.append(Action(stage, Op.W, mb))


def dualpipe_v(ranks: int, microbatches: int) -> Schedule:
    """DualPipeV: V placement, 8 phases per rank; DeepSeek's overlapped F&B as pairs.

    Needs microbatches >= 2 * ranks (the number of stages). Every rank stashes at most
    2*ranks + 1 activations of its half-size stages. Equal to torch's ScheduleDualPipeV action
    for action, pairs included (``Schedule.pairs``; torch writes "(F;B)OVERLAP_F_B"): a pair
    starts when both inputs are in and sends both outputs when it ends. With one stage's times
    F = I = W (B = 2W) and no overlap gain, every rank works 2m(F + B) and idles
    (p - 1)(F&B + B - 3W), F&B = F + B: DualPipe README's (PP/2 - 1)(F&B + B - 3W) with PP = 2p
    stages (tested over a grid of p and m).
    ranks=4, microbatches=8 (unit steps)::

        rank 0: 0F0 0F1 0F2 0F3 0F4 0F5 0F6 7F0 7I0 7W0 7F1 7I1 7W1 7F2 7I2 7W2 7F3 0F7 7B3 7F4 0B0 7B4  .  7F5 0B1 7B5  .  7F6 0B2 7B6  .  7F7 0B3 7B7 0I4 0W4 0I5 0W5 0I6 0W6 0I7 0W7
        rank 1:  .  1F0 1F1 1F2 1F3 1F4 6F0 1F5 6F1 6I0 6W0 6F2 6I1 6W1 6F3 1F6 6B2 6F4 1B0 1F7 6B3 6F5 1B1 6B4  .  6F6 1B2 6B5  .  6F7 1B3 6B6 1B4  .  6I7 1I5 6W7 1I6 1W5 1I7 1W6 1W7
        rank 2:  .   .  2F0 2F1 2F2 5F0 2F3 5F1 2F4 5F2 5I0 5W0 5F3 2F5 5B1 5F4 2B0 2F6 5B2 5F5 2B1 2F7 5B3 5F6 2B2 5B4  .  5F7 2B3 5B5 2B4  .  5B6 2I5  .  5I7 2I6 2W5 2I7 5W7 2W6 2W7
        rank 3:  .   .   .  3F0 4F0 3F1 4F1 3F2 4F2 3F3 4F3 3F4 4B0 4F4 3B0 3F5 4B1 4F5 3B1 3F6 4B2 4F6 3B2 3F7 4B3 4F7 3B3 4B4 3B4  .  4B5 3B5  .  4I6 3I6  .  4I7 3I7 4W6 3W6 4W7 3W7
    """
    check_sizes(ranks, microbatches)
    if microbatches < 2 * ranks:
        raise ConfigError(
            f"dualpipev needs at least as many microbatches as stages (2 x {ranks} ranks = "
            f"{2 * ranks}); got {microbatches}"
        )
    rows = []
    pairs: list[tuple[Action, Action]] = []
    for r in range(ranks):
        s0, s1 = r, 2 * ranks - 1 - r
        k = _Rank()
        for _ in range(2 * (ranks - r - 1)):           # 1: F0
            k.forward(s0)
        for _ in range(r + 1):                           # 2: F0 F1
            k.forward(s0)
            k.forward(s1)
        for _ in range(ranks - r - 1):                   # 3: I1 W F1
            k.backward(s1, split=True)
            k.weight()
            k.forward(s1)
        for i in range(microbatches - 2 * ranks + r + 1):  # 4: (F0 & B1) (F1 & B0)
            if i == 0 and r == ranks - 1:  # the turn of the V: not overlapped (as torch)
                k.forward(s0)
                k.backward(s1, split=False)
            else:
                k.overlapped(s0, s1)
            k.overlapped(s1, s0)
        for _ in range(ranks - r - 1):                   # 5: B1 (F1 & B0)
            k.backward(s1, split=False)
            k.overlapped(s1, s0)
        split = False
        for i in range(r + 1):                           # 6: B1 B0, second half split
            if i == (r + 1) // 2 and r % 2 == 1:
                split = True
            k.backward(s1, split)
            if i == (r + 1) // 2 and r % 2 == 0:
                split = True
            k.backward(s0, split)
        for _ in range(ranks - r - 1):                   # 7: W B0
            k.weight()
            k.backward(s0, split)
        while k.pending_w:                               # 8: W (r + 1 of them)
            k.weight()
        rows.append(k.row)
        pairs += k.pairs
    return build("dualpipev", ranks, microbatches, v_placement(ranks), rows, pairs)


__all__ = ["dualpipe_v"]
