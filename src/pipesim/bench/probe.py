"""Benchmark-only instrumentation of one rank's pipesim engine: where a step's time goes.

``Probe.attach(comm, runners)`` wraps, on those instances only (the runtime is untouched),
the calls the engine makes, and adds their wall time into buckets:

    compute   StageRunner.forward / backward / weight (per stage and op, every call kept)
    wait      Comm.recv      (blocked until a message arrived)
    post      Comm.prefetch  (posting irecvs ahead, allocating their buffers)
    send      Comm.send      (isend, and pruning finished sends)
    finish    Comm.finish    (waiting for the step's sends at its end)
    overhead  the rest of Engine.step: the interpreter loop, hand-offs, records (step - sum)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipesim.ir import Op

BUCKETS = ("compute", "wait", "post", "send", "finish")


class Probe:
    """Per-bucket seconds and call counts since the last ``reset``; per (stage, op) durations."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(BUCKETS, 0.0)
        self.calls = dict.fromkeys(BUCKETS, 0)
        self.durations: dict[tuple[int, str], list[float]] = {}
        self.recording = True  # per-call durations kept only while True
        self.torch: Any = None  # the TorchPipeline beside it, if any (its compute is timed too)

    def reset(self) -> None:
        self.seconds = dict.fromkeys(BUCKETS, 0.0)
        self.calls = dict.fromkeys(BUCKETS, 0)

    def _wrap(self, bucket: str, fn: Callable[..., Any],
              key: Callable[..., tuple[int, str]] | None = None) -> Callable[..., Any]:
        clock = time.perf_counter

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = clock()
            try:
                return fn(*args, **kwargs)
            finally:
                dt = clock() - t0
                self.seconds[bucket] += dt
                self.calls[bucket] += 1
                if key is not None and self.recording:
                    self.durations.setdefault(key(*args, **kwargs), []).append(dt)

        return timed

    def attach(self, comm: Any, runners: dict[int, Any]) -> None:
        """Wrap ``comm``'s and each runner's methods in place (instance attributes)."""
        comm.recv = self._wrap("wait", comm.recv)
        comm.prefetch = self._wrap("post", comm.prefetch)
        comm.send = self._wrap("send", comm.send)
        comm.finish = self._wrap("finish", comm.finish)
        for s, runner in runners.items():
            runner.forward = self._wrap("compute", runner.forward, _fixed(s, Op.F.value))
            runner.backward = self._wrap("compute", runner.backward, _backward_key(s))
            runner.weight = self._wrap("compute", runner.weight, _fixed(s, Op.W.value))


def _fixed(stage: int, op: str) -> Callable[..., tuple[int, str]]:
    return lambda *a, **k: (stage, op)


def _backward_key(stage: int) -> Callable[..., tuple[int, str]]:
    def key(mb: int, grad: Any, split: bool) -> tuple[int, str]:
        return (stage, Op.I.value if split else Op.B.value)

    return key
