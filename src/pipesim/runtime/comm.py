"""Point-to-point messages between stages: tensors only, tagged, received in the sender's order.

Every cross-rank edge of the schedule (``validate.messages``) is one message per step with its
own tag. On each channel (src -> dst) receives are posted in the order the sender sends, so the
schedule runs the same on gloo (which matches by tag) and nccl (which matches by posting order).
Shapes and dtypes are learned once (``exchange_shapes``); after that only tensors travel.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipesim.ir import Action, Schedule
from pipesim.validate import Message, messages

_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32]
_META_LEN = 8  # [dtype code, ndim, dims...]
_META_TAG = 1 << 20  # tags for the one-time shape exchange, above any message tag


@dataclass
class _Posted:
    work: dist.Work
    buffer: torch.Tensor


@dataclass(frozen=True)
class Boundary:
    """The tensor crossing between stage b and b+1 (activation forward, gradient backward)."""

    shape: tuple[int, ...]
    dtype: torch.dtype


class Comm:
    """Sends and receives of one rank for one schedule, on ``group`` (global ranks in ``peers``)."""

    def __init__(self, schedule: Schedule, rank: int, device: torch.device,
                 peers: Sequence[int] | None = None, group: dist.ProcessGroup | None = None
                 ) -> None:
        self.rank = rank
        self.device = device
        self.group = group
        self.peers = list(peers) if peers is not None else list(range(schedule.ranks))
        self.boundaries: dict[int, Boundary] = {}
        all_msgs = messages(schedule)
        self.tag = {(m.producer, m.consumer): i for i, m in enumerate(all_msgs)}
        position = {a: i for row in schedule.actions for i, a in enumerate(row)}
        self.incoming: dict[Action, list[Message]] = {}
        self.outgoing: dict[Action, list[Message]] = {}
        channels: dict[int, list[Message]] = {}
        for m in all_msgs:
            if m.dst == rank:
                self.incoming.setdefault(m.consumer, []).append(m)
                channels.setdefault(m.src, []).append(m)
            if m.src == rank:
                self.outgoing.setdefault(m.producer, []).append(m)
        # per source rank, messages in the order that rank sends them
        self.channel = {src: sorted(ms, key=lambda m: position[m.producer])
                        for src, ms in channels.items()}
        self.channel_index = {src: {m: i for i, m in enumerate(ms)}
                              for src, ms in self.channel.items()}
        self.next_post = dict.fromkeys(self.channel, 0)
        self.posted: dict[Message, _Posted] = {}
        self._buffers: dict[Message, torch.Tensor] = {}
        self.sends: deque[tuple[dist.Work, torch.Tensor]] = deque()

    # ------------------------------------------------------------------ receiving
    def _buffer(self, m: Message) -> torch.Tensor:
        """m's receive buffer, allocated once and reused every step.

        Safe because whatever holds a received tensor (a stash, a deferred W) is released
        before its step ends, and a step's receives are posted only after the last step ended.
        Fresh buffers cost page faults: half the bandwidth at 64 MiB.
        """
        buf = self._buffers.get(m)
        if buf is None:
            b = self.boundaries[min(m.producer.stage, m.consumer.stage)]
            buf = self._buffers[m] = torch.empty(b.shape, dtype=b.dtype, device=self.device)
        return buf

    def _post_until(self, m: Message) -> None:
        """Post receives on m's channel, in the sender's order, up to and including m."""
        order = self.channel[m.src]
        last = self.channel_index[m.src][m]
        while self.next_post[m.src] <= last:
            msg = order[self.next_post[m.src]]
            buf = self._buffer(msg)
            work = dist.irecv(buf, src=self.peers[msg.src], group=self.group,
                              tag=self.tag[msg.producer, msg.consumer])
            self.posted[msg] = _Posted(work, buf)
            self.next_post[m.src] += 1

    def prefetch(self, consumer: Action) -> None:
        """Post (without waiting) every receive ``consumer`` will need."""
        for m in self.incoming.get(consumer, ()):
            self._post_until(m)

    def recv(self, consumer: Action, producer: Action) -> torch.Tensor:
        """The tensor ``producer`` sent for ``consumer``; blocks until it has arrived."""
        m = next(x for x in self.incoming[consumer] if x.producer == producer)
        self._post_until(m)
        posted = self.posted.pop(m)
        posted.work.wait()
        return posted.buffer

    # ------------------------------------------------------------------ sending
    def send(self, producer: Action, tensor: torch.Tensor) -> None:
        """Start sending ``producer``'s output to every rank that consumes it; never blocks."""
        out = tensor.detach().contiguous()
        for m in self.outgoing.get(producer, ()):
            work = dist.isend(out, dst=self.peers[m.dst], group=self.group,
                              tag=self.tag[m.producer, m.consumer])
            self.sends.append((work, out))
        while self.sends and self.sends[0][0].is_completed():  # free what has gone, in order
            self.sends.popleft()

    def finish(self) -> None:
        """Wait for every send of the step (keeping each tensor alive until its wait)."""
        for work, _ in self.sends:
            work.wait()
        self.sends.clear()
        if self.posted:
            left = ", ".join(f"{m.producer}->{m.consumer}" for m in self.posted)
            raise RuntimeError(f"receives posted but never used: {left}")
        self.next_post = dict.fromkeys(self.channel, 0)

    # ------------------------------------------------------------------ shapes, once
    def send_meta(self, stage: int, dst: int, tensor: torch.Tensor
                  ) -> tuple[dist.Work, torch.Tensor]:
        meta = torch.zeros(_META_LEN, dtype=torch.int64)
        meta[0] = _DTYPES.index(tensor.dtype)
        meta[1] = tensor.dim()
        meta[2:2 + tensor.dim()] = torch.tensor(tensor.shape)
        self.boundaries[stage] = Boundary(tuple(tensor.shape), tensor.dtype)
        meta = meta.to(self.device)
        work = dist.isend(meta, dst=self.peers[dst], group=self.group, tag=_META_TAG + stage)
        return work, meta  # the caller keeps meta alive until work.wait()

    def recv_meta(self, stage: int, src: int) -> Boundary:
        meta = torch.zeros(_META_LEN, dtype=torch.int64, device=self.device)
        dist.recv(meta, src=self.peers[src], group=self.group, tag=_META_TAG + stage)
        meta = meta.cpu()
        ndim = int(meta[1])
        b = Boundary(tuple(int(d) for d in meta[2:2 + ndim]), _DTYPES[int(meta[0])])
        self.boundaries[stage] = b
        return b


def exchange_shapes(comm: Comm, schedule: Schedule, modules: dict[int, torch.nn.Module],
                    example_input: torch.Tensor | None) -> None:
    """Learn each stage boundary's shape and dtype once, by running each stage on zeros.

    Stages are visited in order; a boundary that crosses ranks sends a small int64 header.
    Sends are non-blocking and receives follow stage order, so this cannot deadlock.
    """
    place = schedule.stage_to_rank
    works = []
    outputs: dict[int, torch.Tensor] = {}
    with torch.no_grad():
        for s in sorted(modules):
            if s == 0:
                if example_input is None:
                    raise ValueError("the rank holding stage 0 needs an example input")
                x = example_input
            elif place[s - 1] == comm.rank:
                x = outputs[s - 1]
            else:
                b = comm.recv_meta(s - 1, place[s - 1])
                x = torch.zeros(b.shape, dtype=b.dtype, device=comm.device)
            y = modules[s](x)
            outputs[s] = y
            if s + 1 < schedule.stages:
                comm.boundaries[s] = Boundary(tuple(y.shape), y.dtype)
                if place[s + 1] != comm.rank:
                    works.append(comm.send_meta(s, place[s + 1], y))
    for work, _ in works:
        work.wait()
