"""Where one rank's pipesim step goes, from the engine's own records (nothing is patched).

The engine tells its observers ``started(rank, action)`` once an action's receives are posted
and ``done(rank, action, detail)`` once its output is sent, and records each action as (action,
inputs in hand, output made), all on the pipeline's clock (``Pipeline.clock``).
Between those instants (``b``, ``s``, ``e``, ``a``) a step splits into buckets:

    post     previous ``a`` (or the step's start) -> ``b``: posting receives ahead, the loop
    wait     ``b`` -> ``s``: blocked until the action's message arrived
    compute  ``s`` -> ``e``: the stage's F / B / I / W call (per stage and op, every call kept)
    send     ``e`` -> ``a``: isend of the output (or the hand-off to the rank's other stage)
    finish   last ``a`` -> the step's end: waiting for the step's sends, collecting losses
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipesim.runtime.engine import Observer

BUCKETS = ("compute", "wait", "post", "send", "finish")


class Probe(Observer):
    """Per-bucket seconds and action counts since the last ``reset``; per (stage, op) durations.

    Pass it among a Pipeline's ``observers``, set ``clock`` to the Pipeline's, and hand each
    step's record to ``account``.
    """

    def __init__(self, cpu_time: bool = False) -> None:
        self.wants_cpu_time = cpu_time  # the engine adds each computation's CPU seconds
        self.seconds = dict.fromkeys(BUCKETS, 0.0)
        self.actions = 0
        self.durations: dict[tuple[int, str], list[float]] = {}
        self.cpu: dict[tuple[int, str], list[float]] = {}  # CPU seconds, as ``durations``
        self.recording = True  # per-call durations kept only while True
        self.torch: Any = None  # the TorchPipeline beside it, if any (its compute is timed)
        self._before: list[float] = []
        self._after: list[float] = []
        self.clock: Callable[[], float] = time.perf_counter

    def reset(self) -> None:
        self.seconds = dict.fromkeys(BUCKETS, 0.0)
        self.actions = 0

    def started(self, rank: int, action: Any) -> None:
        self._before.append(self.clock())

    def done(self, rank: int, action: Any, detail: dict[str, Any]) -> None:
        self._after.append(self.clock())
        if self.recording:  # a merged W's work is in the first W's CPU time
            self.cpu.setdefault((action.stage, action.op.value), []).append(
                detail.get("cpu", 0.0))

    def account(self, record: Any) -> None:
        """Add one step (an engine StepRecord: ``events``, ``start``, ``end``) to the buckets."""
        before, after, self._before, self._after = self._before, self._after, [], []
        if not (len(before) == len(after) == len(record.events)):
            raise RuntimeError(f"probe saw {len(before)}/{len(after)} actions, the record "
                               f"{len(record.events)}: give the probe to the Pipeline")
        previous = record.start
        for (action, start, end), b, a in zip(record.events, before, after, strict=True):
            self.seconds["post"] += b - previous
            self.seconds["wait"] += max(0.0, start - b)
            self.seconds["compute"] += end - start
            self.seconds["send"] += a - end
            previous = a
            if self.recording:
                key = (action.stage, action.op.value)
                self.durations.setdefault(key, []).append(end - start)
        self.seconds["finish"] += record.end - previous
        self.actions += len(record.events)
