"""Message costs between ranks: latency, bandwidth and the sender's own time per message, on the
transport the engine uses between two ranks of this machine (shared memory, else gloo)."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

from pipesim.layercosts import LayerCosts
from pipesim.profiling.profiler import _STATISTICS
from pipesim.runtime import shm


class CommCosts(NamedTuple):
    """What ``measure_comm`` measured (seconds, bytes per second)."""

    latency: float  # one-way time of a 4-byte message to a rank waiting for it
    bandwidth: float  # bytes per second beyond the latency; inf if not measurable
    send_overhead: float  # the sender's own time to post a message, as the engine sends


@dataclass(frozen=True)
class PingPong:
    """Picklable 2-rank worker: the one-way time of a message of each of ``sizes`` bytes as a
    pipeline's ranks see it (median or min), then the time rank 0 spends sending the last size
    while rank 1 is busy computing (with its receive posted, on gloo).

    One-way, as in a pipeline: rank 1 waits for the message while rank 0 computes for ``busy``
    seconds and then sends; the time from the send to rank 1 holding the message (both read
    the same monotonic clock: one machine). ``transport``: "shm" (the engine's shared-memory
    channel, ``runtime/shm.py``, polled) or "gloo" (a blocked receive; a ping-pong of two ranks
    that do nothing else is 2-4x faster there: a blocked rank wakes slower than a busy one).
    """

    sizes: tuple[int, ...]
    repeats: int = 30
    statistic: str = "median"
    busy: float = 0.002  # seconds rank 0 computes before each message (an action's length)
    transport: str = "gloo"

    def __call__(self, rank: int, world: int, monitor: Any = None) -> list[float] | None:
        slots = self._channel(rank) if self.transport == "shm" else None
        out = []
        for i, size in enumerate(self.sizes):
            buf = torch.zeros(max(1, size // 4), dtype=torch.float32)
            times = []
            for n in range(self.repeats + 3):
                dist.barrier()
                if rank == 0:
                    _compute(self.busy)
                    sent = time.perf_counter()
                    self._send(slots, i, buf, n + 1)
                    dist.send(torch.tensor([sent], dtype=torch.float64), 1)
                else:
                    self._recv(slots, i, buf, n + 1)
                    arrived = time.perf_counter()
                    stamp = torch.zeros(1, dtype=torch.float64)
                    dist.recv(stamp, 0)
                    times.append(arrived - float(stamp[0]))
            out.append(_STATISTICS[self.statistic](times[3:]) if rank == 1 else 0.0)
        out.append(self._send_overhead(rank, slots, max(1, self.sizes[-1] // 4)))
        return _from_both(out)

    def _channel(self, rank: int) -> list[shm.Slot]:
        """One shared-memory channel 0 -> 1 with a slot per size, and one for the overhead."""
        shapes = [[((max(1, n // 4),), torch.float32)] for n in (*self.sizes, self.sizes[-1])]
        names = [f"ping {n}" for n in range(len(shapes))]
        token = torch.tensor([shm.new_token() if rank == 1 else 0])
        channel = shm.create(int(token), 0, shapes, names) if rank == 1 else None
        dist.broadcast(token, 1)
        if rank == 0:
            channel = shm.attach(int(token), 0, shapes, names)
        dist.barrier()
        shm.remove(int(token), 0)
        if channel is None:
            raise RuntimeError("shared memory: rank 0 could not attach rank 1's channel")
        return channel.slots

    @staticmethod
    def _send(slots: list[shm.Slot] | None, i: int, buf: torch.Tensor, seq: int) -> None:
        if slots is None:
            dist.send(buf, 1)
        else:
            shm.put(slots[i], (buf,), seq, timeout=60)

    @staticmethod
    def _recv(slots: list[shm.Slot] | None, i: int, buf: torch.Tensor, seq: int) -> None:
        if slots is None:
            work = dist.irecv(buf, 0)
            assert work is not None  # None only for a rank outside the group
            work.wait()
        else:
            shm.get(slots[i], seq, timeout=60)
            shm.release(slots[i], seq)

    def _send_overhead(self, rank: int, slots: list[shm.Slot] | None, numel: int) -> float:
        buf, ack = torch.zeros(numel), torch.zeros(1)
        last = len(self.sizes)
        times = []
        for n in range(self.repeats + 3):
            if rank == 0:
                t0 = time.perf_counter()
                if slots is None:
                    work = dist.isend(buf, 1)
                    times.append(time.perf_counter() - t0)
                    assert work is not None  # None only for a rank outside the group
                    work.wait()
                else:
                    shm.put(slots[last], (buf,), n + 1, timeout=60)
                    times.append(time.perf_counter() - t0)
                dist.recv(ack, 1)
            else:
                work = dist.irecv(buf, 0) if slots is None else None
                _compute(0.001)  # busy while the message comes
                if work is not None:
                    work.wait()
                else:
                    self._recv(slots, last, buf, n + 1)
                dist.send(ack, 0)
        return _STATISTICS[self.statistic](times[3:]) if rank == 0 else 0.0


def _compute(seconds: float) -> None:
    a, w = torch.randn(64, 256), torch.randn(256, 256)
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        a @ w


def _from_both(values: list[float]) -> list[float] | None:
    """On rank 0: each figure from the rank that measured it (the other gave 0)."""
    mine = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(mine)
    return mine.tolist() if dist.get_rank() == 0 else None


def measure_comm(message_bytes: int, repeats: int = 30, statistic: str = "median"
                 ) -> CommCosts:
    """Two forked ranks on this machine, on the engine's transport between them (shared memory
    where ``runtime/shm.py`` can, else gloo): latency, bandwidth and send overhead.

    Latency is the one-way time of a 4-byte message to a rank blocked waiting for it while the
    sender computed (``PingPong``); bandwidth fits the extra time of a ``message_bytes``
    message (the model's largest activation), infinite if not measurable;
    the send overhead is the sender's time in ``isend`` of such a message to a busy rank that
    posted its receive ahead (as the engine does; over loopback TCP it is 0.1-0.4 ms here,
    a copy into shared memory 10-30 us).
    """
    from pipesim.processes.launch import launch
    small, large = 4, max(message_bytes, 8)
    transport = "shm" if shm.supported() else "gloo"
    times = launch(PingPong((small, large), repeats, statistic, transport=transport), 2)
    latency, big, send = float(times[0]), float(times[1]), float(times[2])
    extra = big - latency
    bandwidth = (large - small) / extra if extra > 0 else float("inf")
    return CommCosts(latency, bandwidth, send)


def with_comm(costs: LayerCosts, statistic: str = "median") -> LayerCosts:
    """``costs`` with the message latency, bandwidth and send overhead measured for its largest
    activation between layers (``measure_comm``); unchanged for a one-layer model."""
    if len(costs) < 2:
        return costs
    comm = measure_comm(int(max(c.activation_bytes for c in costs.layers[:-1])),
                        statistic=statistic)
    return dataclasses.replace(costs, comm_latency=comm.latency, comm_bandwidth=comm.bandwidth,
                               comm_send_overhead=comm.send_overhead)


__all__ = ["CommCosts", "PingPong", "measure_comm", "with_comm"]
