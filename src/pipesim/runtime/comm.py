"""Point-to-point messages between stages: tensors only, tagged, received in the sender's order.

Every cross-rank edge of the schedule (``validate.messages``) is one message per step; a message
carries a stage boundary's payload (forward: every member; backward: the gradients of its
floating members), one tensor each under its own tag. On each channel (src -> dst) receives are
posted in the order the sender sends, so the schedule runs the same on gloo (which matches by
tag) and nccl (which matches by posting order). Shapes and dtypes are learned by
``exchange_shapes`` (again whenever the batch's shapes change); after that only tensors travel.
Between ranks of one machine, on CPU, ``connect_local`` moves messages to shared memory
(``runtime/shm.py``); gloo carries the rest.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipesim.ir import Action, Op, Schedule
from pipesim.ranks import available_cores
from pipesim.runtime import shm
from pipesim.runtime.agree import all_ints, boot_id
from pipesim.runtime.stage import Payload, StageRunner
from pipesim.validate import Message, messages

_DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
           torch.int16, torch.int8, torch.uint8, torch.bool]
MAX_TENSORS = 16  # members of one stage boundary's payload
_MAX_DIMS = 8
_META_LEN = 2 + MAX_TENSORS * (2 + _MAX_DIMS)  # [status, count, (dtype, ndim, dims...)*]
_META_TAG = 1 << 30  # tags for the shape exchange, above any message tag
_OK, _UPSTREAM_FAILED = 0, 1


@dataclass
class _Posted:
    works: list[dist.Work]
    buffers: Payload


@dataclass(frozen=True)
class Member:
    """One tensor of a boundary's payload."""

    shape: tuple[int, ...]
    dtype: torch.dtype


Boundary = tuple[Member, ...]  # what crosses between stage b and b+1 (forward)


def describe(payload: Payload) -> Boundary:
    return tuple(Member(tuple(t.shape), t.dtype) for t in payload)


class Comm:
    """Sends and receives of one rank for one schedule, on ``group`` (global ranks in ``peers``)."""

    def __init__(self, schedule: Schedule, rank: int, device: torch.device,
                 peers: Sequence[int] | None = None, group: dist.ProcessGroup | None = None,
                 timeout: float = 600.0) -> None:
        self.rank = rank
        self.device = device
        self.timeout = timeout
        self.group = group
        self.peers = list(peers) if peers is not None else list(range(schedule.ranks))
        self.boundaries: dict[int, Boundary] = {}
        all_msgs = messages(schedule)
        self.tag = {(m.producer, m.consumer): i for i, m in enumerate(all_msgs)}
        position = {a: i for row in schedule.actions for i, a in enumerate(row)}
        self.incoming: dict[Action, list[Message]] = {}
        self.outgoing: dict[Action, list[Message]] = {}
        channels: dict[int, list[Message]] = {}
        out_channels: dict[int, list[Message]] = {}
        for m in all_msgs:
            if m.dst == rank:
                self.incoming.setdefault(m.consumer, []).append(m)
                channels.setdefault(m.src, []).append(m)
            if m.src == rank:
                self.outgoing.setdefault(m.producer, []).append(m)
                out_channels.setdefault(m.dst, []).append(m)
        # per peer rank, messages in the order the sender sends them (in and out)
        self.in_order = {src: sorted(ms, key=lambda m: position[m.producer])
                         for src, ms in channels.items()}
        self.out_order = {dst: sorted(ms, key=lambda m: position[m.producer])
                          for dst, ms in out_channels.items()}
        self.shm_in: dict[Message, shm.Slot] = {}  # messages through shared memory
        self.shm_out: dict[Message, shm.Slot] = {}
        self._got: list[shm.Slot] = []  # received this step, released when it ends
        self.seq = 1  # this step's number, for shared-memory messages
        self.shm_token = 0  # names this rank's channel files (0: none)
        self.shm_sleep = False  # ranks outnumber this machine's cores: a waiting rank sleeps
        self._gloo_channels()
        self.posted: dict[Message, _Posted] = {}
        self._buffers: dict[Message, Payload] = {}
        self.sends: deque[tuple[dist.Work, torch.Tensor]] = deque()
        # gloo: a rank about to wait posts every receive of the step left (see ``recv``)
        self.post_when_idle = device.type == "cpu"

    def _tag(self, m: Message, member: int) -> int:
        return self.tag[m.producer, m.consumer] * MAX_TENSORS + member

    def members(self, m: Message) -> Boundary:
        """What ``m`` carries: the boundary's payload forward, its floating members' gradients
        backward."""
        boundary = self.boundaries[min(m.producer.stage, m.consumer.stage)]
        if m.producer.op is Op.F:
            return boundary
        return tuple(x for x in boundary if x.dtype.is_floating_point)

    def reset_shapes(self) -> None:
        """Forget shapes and buffers (the batch's shapes changed); exchange_shapes again."""
        self.boundaries.clear()
        self._buffers.clear()
        self.shm_in.clear()
        self.shm_out.clear()
        self._gloo_channels()

    def _gloo_channels(self) -> None:
        """The receives gloo carries, per source rank in the sender's order."""
        self.channel = {src: [m for m in ms if m not in self.shm_in]
                        for src, ms in self.in_order.items()}
        self.channel_index = {src: {m: i for i, m in enumerate(ms)}
                              for src, ms in self.channel.items()}
        self.next_post = dict.fromkeys(self.channel, 0)

    def _shapes(self, ms: Sequence[Message]) -> list[list[tuple[tuple[int, ...], torch.dtype]]]:
        return [[(x.shape, x.dtype) for x in self.members(m)] for m in ms]

    def connect_local(self) -> None:
        """Collective (every rank of the world, after ``exchange_shapes``): carry the messages
        between ranks of this machine through shared memory (``transports`` counts them).

        Each receiver creates one file per incoming channel; tokens are all-gathered; each
        sender attaches the files it can see (same machine); a second all-gather tells the
        receivers which channels were attached; then the files' names are removed. A rank
        waiting for a message sleeps (``shm.get``) when this machine's ranks (same boot id),
        times their torch threads, outnumber its cores."""
        if self.device.type != "cpu":  # nccl: every rank's device is a GPU
            return
        self.shm_in.clear()
        self.shm_out.clear()
        me = self.peers[self.rank]
        self.shm_token = token = shm.new_token() if shm.supported() else 0
        made = {}
        for src, ms in self.in_order.items() if token else ():
            channel = shm.create(token, self.peers[src], self._shapes(ms), self._names(ms))
            if channel is not None:
                made[src] = channel
        machine = boot_id()
        tokens = all_ints([token, machine], self.device)
        here = sum(1 for _, theirs in tokens if theirs == machine != -1)
        self.shm_sleep = here * torch.get_num_threads() > available_cores()
        attached = [0] * len(self.peers)
        for dst, ms in self.out_order.items():
            theirs = tokens[self.peers[dst]][0]
            channel = shm.attach(theirs, me, self._shapes(ms), self._names(ms)) \
                if theirs and token else None
            if channel is not None:
                attached[dst] = 1
                self.shm_out.update(zip(ms, channel.slots, strict=True))
        everyone = all_ints(attached, self.device)
        for src, channel in made.items():
            shm.remove(token, self.peers[src])
            if everyone[self.peers[src]][self.rank]:
                self.shm_in.update(zip(self.in_order[src], channel.slots, strict=True))
        self.seq = 1
        self._gloo_channels()

    def transports(self) -> dict[str, int]:
        """This rank's messages of one step (sent and received) by what carries them."""
        total = sum(map(len, self.in_order.values())) + sum(map(len, self.out_order.values()))
        local = len(self.shm_in) + len(self.shm_out)
        return {"shared memory": local, "gloo" if self.device.type == "cpu" else "nccl":
                total - local}

    def _names(self, ms: Sequence[Message]) -> list[str]:
        return [f"rank {self.peers[m.src]} -> rank {self.peers[m.dst]}, "
                f"{m.producer} -> {m.consumer}" for m in ms]

    # ------------------------------------------------------------------ receiving
    def _buffer(self, m: Message) -> Payload:
        """m's receive buffers, allocated once per shape and reused every step.

        Safe because whatever holds a received tensor (a stash, a deferred W) is released
        before its step ends, and a step's receives are posted only after the last step ended.
        Fresh buffers cost page faults: half the bandwidth at 64 MiB.
        """
        buf = self._buffers.get(m)
        if buf is None:
            buf = self._buffers[m] = tuple(
                torch.empty(x.shape, dtype=x.dtype, device=self.device) for x in self.members(m))
        return buf

    def _post_until(self, m: Message) -> None:
        """Post receives on m's channel, in the sender's order, up to and including m."""
        order = self.channel[m.src]
        last = self.channel_index[m.src][m]
        while self.next_post[m.src] <= last:
            msg = order[self.next_post[m.src]]
            bufs = self._buffer(msg)
            works = [_work(dist.irecv(b, src=self.peers[msg.src], group=self.group,
                                      tag=self._tag(msg, j))) for j, b in enumerate(bufs)]
            self.posted[msg] = _Posted(works, bufs)
            self.next_post[m.src] += 1

    def _post_rest(self) -> None:
        """Post every receive of the step not yet posted, on every channel.

        Done only when the rank is about to wait anyway, so it costs no time. gloo moves a
        message's data only after the receiver has announced its receive; a send before that
        only announces itself, and the data leaves later from gloo's event-loop thread, while
        the receiver waits for it. The engine's posting ``lookahead`` alone left that to chance.
        Receive buffers are per message and kept across steps, so this takes no memory.
        Not on nccl, where a receive posted early can hold up a send queued behind it.
        """
        for src, order in self.channel.items():
            if self.next_post[src] < len(order):
                self._post_until(order[-1])

    def prefetch(self, consumer: Action) -> None:
        """Post (without waiting) every receive ``consumer`` will need."""
        for m in self.incoming.get(consumer, ()):
            if m not in self.shm_in:
                self._post_until(m)

    def recv(self, consumer: Action, producer: Action) -> Payload:
        """The payload ``producer`` sent for ``consumer``; blocks until it has arrived."""
        m = next(x for x in self.incoming[consumer] if x.producer == producer)
        slot = self.shm_in.get(m)
        if slot is not None:
            if self.post_when_idle and not shm.arrived(slot, self.seq):
                self._post_rest()
            self._got.append(slot)
            return shm.get(slot, self.seq, self.timeout, self.shm_sleep)
        self._post_until(m)
        posted = self.posted.pop(m)
        if self.post_when_idle and not all(w.is_completed() for w in posted.works):
            self._post_rest()
        for work in posted.works:
            work.wait()
        return posted.buffers

    # ------------------------------------------------------------------ sending
    def send(self, producer: Action, payload: Payload) -> None:
        """Start sending ``producer``'s output to every rank that consumes it; never blocks."""
        out = tuple(t.detach().contiguous() for t in payload)
        for m in self.outgoing.get(producer, ()):
            slot = self.shm_out.get(m)
            if slot is not None:
                shm.put(slot, out, self.seq, self.timeout)
                continue
            for j, t in enumerate(out):
                work = dist.isend(t, dst=self.peers[m.dst], group=self.group, tag=self._tag(m, j))
                self.sends.append((_work(work), t))
        while self.sends and self.sends[0][0].is_completed():  # free what has gone, in order
            self.sends.popleft()

    def finish(self) -> None:
        """Wait for every send of the step (keeping each tensor alive until its wait)."""
        for work, _ in self.sends:
            work.wait()
        self.sends.clear()
        for slot in self._got:
            shm.release(slot, self.seq)
        self._got.clear()
        self.seq += 1
        if self.posted:
            left = ", ".join(f"{m.producer}->{m.consumer}" for m in self.posted)
            raise RuntimeError(f"receives posted but never used: {left}")
        self.next_post = dict.fromkeys(self.channel, 0)

    # ------------------------------------------------------------------ shapes
    def send_meta(self, stage: int, dst: int, boundary: Boundary | None
                  ) -> tuple[dist.Work, torch.Tensor]:
        """Tell ``dst`` what crosses after ``stage`` (None: this side failed, skip the stage)."""
        meta = torch.zeros(_META_LEN, dtype=torch.int64)
        if boundary is None:
            meta[0] = _UPSTREAM_FAILED
        else:
            meta[1] = len(boundary)
            for j, x in enumerate(boundary):
                base = 2 + j * (2 + _MAX_DIMS)
                meta[base], meta[base + 1] = _DTYPES.index(x.dtype), len(x.shape)
                meta[base + 2:base + 2 + len(x.shape)] = torch.tensor(x.shape, dtype=torch.int64)
            self.boundaries[stage] = boundary
        meta = meta.to(self.device)
        work = dist.isend(meta, dst=self.peers[dst], group=self.group, tag=_META_TAG + stage)
        return _work(work), meta  # the caller keeps meta alive until work.wait()

    def recv_meta(self, stage: int, src: int) -> Boundary | None:
        meta = torch.zeros(_META_LEN, dtype=torch.int64, device=self.device)
        dist.recv(meta, src=self.peers[src], group=self.group, tag=_META_TAG + stage)
        values = meta.cpu().tolist()
        if values[0] != _OK:
            return None
        members = []
        for j in range(values[1]):
            base = 2 + j * (2 + _MAX_DIMS)
            ndim = values[base + 1]
            members.append(Member(tuple(values[base + 2:base + 2 + ndim]),
                                  _DTYPES[values[base]]))
        self.boundaries[stage] = tuple(members)
        return self.boundaries[stage]


def _work(work: dist.Work | None) -> dist.Work:
    """torch types a point-to-point call's handle as optional; it is always there here."""
    assert work is not None
    return work


def check_payload(payload: Payload, stage: int) -> None:
    """What the wire can carry: at most MAX_TENSORS members of known dtypes and <= 8 dims."""
    if len(payload) > MAX_TENSORS:
        raise ValueError(f"stage {stage} returned {len(payload)} tensors; at most "
                         f"{MAX_TENSORS} can cross a stage boundary")
    for t in payload:
        if t.dtype not in _DTYPES or t.dim() > _MAX_DIMS:
            raise ValueError(f"stage {stage} returned a {t.dtype} tensor of {t.dim()} dims; "
                             f"boundaries carry {', '.join(map(str, _DTYPES))} up to "
                             f"{_MAX_DIMS} dims")


def exchange_shapes(comm: Comm, schedule: Schedule, runners: dict[int, StageRunner],
                    example: Payload | None) -> str | None:
    """Learn each stage boundary's payload by running each local stage once, without grad.

    Stage 0 runs on ``example`` (one real microbatch), a later stage on zeros of what it
    receives. Stages are visited in order; a boundary that crosses ranks sends a small int64
    header; sends are non-blocking and receives follow stage order, so this cannot deadlock.
    Returns this rank's error (a stage that raised, or one upstream of it) instead of raising,
    so that every rank still sends what the next one waits for; the caller makes the ranks agree.
    """
    place, works = schedule.stage_to_rank, []
    outputs: dict[int, Payload | None] = {}
    error: str | None = None
    with torch.no_grad():
        for s in sorted(runners):
            x: Payload | None
            if s == 0:
                x = example
            elif place[s - 1] == comm.rank:
                x = outputs[s - 1]
            else:
                b = comm.recv_meta(s - 1, place[s - 1])
                x = None if b is None else tuple(
                    torch.zeros(m.shape, dtype=m.dtype, device=comm.device) for m in b)
            y: Payload | None = None
            if x is not None and error is None:
                try:
                    y = runners[s].run(x)
                    check_payload(y, s)
                except Exception as err:  # the user's module: report it on every rank
                    error, y = f"stage {s}: {type(err).__name__}: {err}", None
            elif x is None and error is None:
                error = f"stage {s} got no input: an earlier stage failed"
            outputs[s] = y
            if s + 1 < schedule.stages:
                if y is not None:
                    comm.boundaries[s] = describe(y)
                if place[s + 1] != comm.rank:
                    works.append(comm.send_meta(s, place[s + 1],
                                                None if y is None else describe(y)))
    for work, _ in works:
        work.wait()
    return error


__all__ = ["MAX_TENSORS", "Boundary", "Comm", "Member", "check_payload", "describe",
           "exchange_shapes"]
