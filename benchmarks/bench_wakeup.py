"""What waking a waiting process costs on this machine: why same-machine messages poll shared
memory (``pipesim/runtime/shm.py``) instead of blocking in a socket read.

    .venv/bin/python benchmarks/bench_wakeup.py [--messages 300] [--busy-ms 1]

Two processes, no torch. The sender computes ``--busy-ms`` (so the receiver has been waiting a
while, as a pipeline stage waits for its input), then sends the time as 8 bytes; the receiver
notes when it has them. Two ways to wait:

- block: the receiver sleeps in ``read()`` on a pipe; the sender's ``write()`` wakes it;
- poll:  the receiver reads a word of shared memory in a loop, calling ``sched_yield()`` between
  reads (as pipesim's shared-memory channel waits); the sender stores the word.

Printed per way: the median and 90th percentile of the sender's own time to send (the write
call, or the store) and of the one-way latency (send to the receiver holding it), in µs.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import struct
import time


def _spin(seconds: float) -> None:
    stop = time.perf_counter() + seconds
    while time.perf_counter() < stop:
        pass


def measure(way: str, messages: int, busy: float) -> tuple[list[float], list[float]]:
    """(sender's time, latency) per message, in seconds."""
    shared = mmap.mmap(-1, 4096)
    words = memoryview(shared).cast("q")  # [0] sequence, [1] stamp (ns), [2] ack, [3..] latencies
    data_r, data_w = os.pipe()
    ack_r, ack_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the receiver
        latencies = []
        for i in range(1, messages + 1):
            if way == "block":
                (sent,) = struct.unpack("q", os.read(data_r, 8))
            else:
                while words[0] < i:
                    os.sched_yield()
                sent = words[1]
            latencies.append(time.perf_counter_ns() - sent)
            if way == "block":
                os.write(ack_w, b"x")
            else:
                words[2] = i
        os.write(ack_w, struct.pack(f"{messages}q", *latencies))
        os._exit(0)
    costs = []
    for i in range(1, messages + 1):
        _spin(busy)
        start = time.perf_counter_ns()
        if way == "block":
            os.write(data_w, struct.pack("q", start))
        else:
            words[1] = start
            words[0] = i
        costs.append((time.perf_counter_ns() - start) / 1e9)
        if way == "block":
            os.read(ack_r, 1)
        else:
            while words[2] < i:
                pass
    raw = b""
    while len(raw) < 8 * messages:
        raw += os.read(ack_r, 8 * messages - len(raw))
    os.waitpid(pid, 0)
    return costs, [x / 1e9 for x in struct.unpack(f"{messages}q", raw)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=300)
    parser.add_argument("--busy-ms", type=float, default=1.0)
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, load {load}, {os.cpu_count()} CPUs, "
          f"{args.messages} messages, sender busy {args.busy_ms:g} ms before each")
    print(f"{'way':>6}  {'send µs (median, p90)':>22}  {'latency µs (median, p90)':>25}")
    for way in ("block", "poll"):
        costs, latencies = measure(way, args.messages, args.busy_ms / 1e3)

        def cell(xs: list[float]) -> str:
            xs = sorted(xs)
            return f"{statistics.median(xs) * 1e6:.1f}, {xs[int(0.9 * len(xs))] * 1e6:.1f}"
        print(f"{way:>6}  {cell(costs):>22}  {cell(latencies):>25}")


if __name__ == "__main__":
    main()
