"""The ranks' meeting once a step, through shared memory when every rank is on this machine.

``Pipeline.step`` checks each step's batch on every rank with one all-gather of a few ints
(``BatchCheck``), so a bad batch is one clear error everywhere before any tensor moves. On
gloo that all-gather costs 0.5 ms (median) per step between 2 ranks of a 2-core virtual machine
(socket writes, gloo's worker and event-loop threads, a wake-up each; benchmarks/RESULTS.md),
a few percent of a small model's step. Here, when every rank of the job shares this machine,
each rank writes its ints into a shared-memory message to every other rank (``shm.put``, the
pipeline messages' channels, one int64 row each) and reads theirs in place: a round is a store
and a few polls. Round r waits for each receiver's acknowledgement of round r-1, so a rank
never overwrites a row another rank has not read. Anything else (another machine, a GPU, no
/dev/shm, ``PIPESIM_SHM=0`` on any rank, more than ``MAX_RANKS`` ranks) keeps gloo's
all-gather; every rank decides the same way, from what all of them reported.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.distributed as dist

from pipesim.ranks import available_cores
from pipesim.runtime import shm
from pipesim.runtime.agree import all_ints, boot_id

MAX_RANKS = 16  # a meeting of more ranks stays on gloo: (n - 1) files per rank


class Meeting:
    """Collective to build (every rank of the world, in the same order); then ``all_ints``.

    ``width``: how many ints each rank brings to every round (rounds of another width go
    through gloo, which every rank then does, since the width is the same everywhere).
    """

    def __init__(self, device: torch.device, width: int, timeout: float = 600.0) -> None:
        self.device, self.width, self.timeout = device, width, timeout
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.round = 0
        self.inbox: dict[int, shm.Slot] = {}  # from each other rank
        self.outbox: dict[int, shm.Slot] = {}  # to each other rank
        self.sleep = False  # ranks outnumber this machine's cores: a waiting rank sleeps
        self._channels: list[shm.Channel] = []  # keeps the mappings alive
        if device.type == "cpu" and 1 < self.world <= MAX_RANKS:
            self._connect()

    def _connect(self) -> None:
        others = [q for q in range(self.world) if q != self.rank]
        row = [((self.width,), torch.int64)]
        token = shm.new_token() if shm.supported() else 0
        made: dict[int, shm.Channel] = {}
        for q in others if token else ():
            channel = shm.create(token, q, [row], [f"meeting, rank {q} -> rank {self.rank}"])
            if channel is not None:
                made[q] = channel
        attached: dict[int, shm.Channel] = {}
        try:  # the files' names go however this ends (a rank killed here leaves them)
            machine = boot_id()
            tokens = all_ints([token, machine, len(made)], self.device)
            usable = all(t and m == machine != -1 and n == len(others) for t, m, n in tokens)
            for q in others if usable else ():
                channel = shm.attach(tokens[q][0], self.rank, [row],
                                     [f"meeting, rank {self.rank} -> rank {q}"])
                if channel is not None:
                    attached[q] = channel
            everyone = all_ints([len(attached)], self.device)
        finally:
            for q in made:
                shm.remove(token, q)
        if not usable or any(n != len(others) for n, in everyone):
            return  # gloo, on every rank: each saw the same reports
        self.inbox = {q: made[q].slots[0] for q in others}
        self.outbox = {q: attached[q].slots[0] for q in others}
        self._channels = [*made.values(), *attached.values()]
        self.sleep = self.world * torch.get_num_threads() > available_cores()

    @property
    def transport(self) -> str:
        """What carries the rounds: "shm" or "gloo"."""
        return "shm" if self.inbox else "gloo"

    def all_ints(self, values: Sequence[int]) -> list[list[int]]:
        """Collective: every rank's ``values``, in rank order (``agree.all_ints``)."""
        if not self.inbox or len(values) != self.width:
            return all_ints(values, self.device)
        self.round += 1
        mine = torch.tensor(list(values), dtype=torch.int64)
        for slot in self.outbox.values():
            shm.put(slot, (mine,), self.round, self.timeout)
        rows: list[list[int]] = [[] for _ in range(self.world)]
        rows[self.rank] = [int(v) for v in values]
        for q, slot in self.inbox.items():
            (got,) = shm.get(slot, self.round, self.timeout, self.sleep)
            rows[q] = got.tolist()
            shm.release(slot, self.round)
        return rows


__all__ = ["MAX_RANKS", "Meeting"]
