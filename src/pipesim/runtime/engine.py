"""The schedule interpreter: runs one rank's actions in order with a handler per op.

    F  take the stage input (the batch, a message, or a local hand-off), forward, send it on
    B  take the output gradient, full backward, send the input gradient back
    I  like B, with Linear weight gradients deferred
    W  the deferred weight gradients
Where an action's data comes from is ``ir.deps``: its one dependency on another stage is the
producer of its input (the same rule the validator and the simulator use). Receives for
upcoming actions are posted ahead (``lookahead``); sends start right after the producing action
and never block. Each handler returns when its inputs were in hand and when its output existed;
an action's event spans the two (waiting for a message is idle time, sending is the consumer's
business). W that run back to back on one stage are one GEMM per layer (``_weights``).
An overlapped pair (``Schedule.pairs``) runs as torch runs OVERLAP_F_B: its F,
then its B, and only then both sends (``_run``). Observers see every action (progress lines,
the stall watchdog, fault injection, data-parallel all-reduce) through one interface.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pipesim.ir import Action, Op, Schedule, deps
from pipesim.runtime.comm import Comm
from pipesim.runtime.stage import Payload, StageRunner

Clock = Callable[[], float]


class Observer:
    """Sees one rank's actions; override what you need (every method is a no-op here).

    ``detail`` says where data came from ("from": "recv"/"local") and went ("to": "send"/
    "local"), "created" (the shape of a batch input), "merged" (a W computed in the GEMM of
    the W before it), "loss" (a 0-d tensor, last stage), "output" (inference output payload,
    last stage) and, for an observer with ``wants_cpu_time``, "cpu" (the CPU seconds of the
    action's computation, ``time.thread_time``). Reading a tensor in it costs a sync on CUDA.
    """

    wants_cpu_time = False  # True: the engine times each computation's CPU use too

    def started(self, rank: int, action: Action) -> None:
        """``action`` begins (before it waits for its inputs)."""

    def waiting(self, rank: int, action: Action, producer: Action, src: int) -> None:
        """``action`` blocks on ``producer``'s message from rank ``src``."""

    def arrived(self, rank: int, action: Action) -> None:
        """The message ``action`` waited for has arrived; it computes now."""

    def done(self, rank: int, action: Action, detail: dict[str, Any]) -> None:
        """``action`` has finished (its output sent or handed on)."""

    def finished(self, rank: int) -> None:
        """The rank has run every action of the step."""


@dataclass
class StepRecord:
    """What one rank did in one step: events (action, start, end), losses and outputs."""

    events: list[tuple[Action, float, float]] = field(default_factory=list)
    losses: dict[int, torch.Tensor] = field(default_factory=dict)  # mb -> unscaled loss
    outputs: dict[int, Payload] = field(default_factory=dict)  # inference: last stage
    start: float = 0.0
    end: float = 0.0
    # ``Pipeline.step``: when this rank began the step (before the batch check every rank
    # takes part in) and when that check's collective returned (0: not recorded)
    begin: float = 0.0
    synced: float = 0.0

    def loss_sum(self) -> float:
        """The sum of this rank's microbatch losses: one read of the device, once per step."""
        if not self.losses:
            return 0.0
        return float(torch.stack(list(self.losses.values())).sum())


@dataclass
class _Done:
    ready: float  # when the inputs were in hand
    made: float  # when the output existed (before sending it)
    detail: dict[str, Any]


class Engine:
    """Interprets ``schedule`` for ``rank`` over ``runners`` (stage index -> StageRunner)."""

    def __init__(self, schedule: Schedule, rank: int, runners: dict[int, StageRunner],
                 comm: Comm, clock: Clock, observers: Sequence[Observer] = (),
                 lookahead: int = 2) -> None:
        self.schedule = schedule
        self.rank = rank
        self.runners = runners
        self.comm = comm
        self.clock = clock
        self.observers = list(observers)
        self.lookahead = lookahead
        self.training = not schedule.forward_only
        self.handlers: dict[Op, Callable[[Action], _Done]] = {
            Op.F: self._forward, Op.B: self._backward, Op.I: self._backward, Op.W: self._weight,
        }
        self._local: dict[tuple[Action, Action], Payload] = {}
        self._inputs: Sequence[Payload] = ()
        self._targets: Sequence[Any] = ()
        self._record = StepRecord()
        self._held: list[tuple[Action, Payload]] | None = None  # a pair's sends, until it ends
        # fixed by the schedule, so worked out once, not before every action of every step
        row = schedule.actions[rank]
        self._producers = {a: next((d for d in deps(a, schedule) if d.stage != a.stage), None)
                           for a in row}
        self._runs = [self._weights_run(row, i) for i in range(len(row))]
        # each computation's CPU time in detail["cpu"], if an observer asks: what ranks that
        # share cores each used of them (the benchmarks' shared-core ideal)
        self.cpu_clock: Clock | None = time.thread_time \
            if any(o.wants_cpu_time for o in self.observers) else None

    def step(self, inputs: Sequence[Payload], targets: Sequence[Any]) -> StepRecord:
        """Run every action of this rank once; inputs/targets per microbatch (where needed)."""
        self._inputs, self._targets = inputs, targets
        self._record = record = StepRecord(start=self.clock())
        row = self.schedule.actions[self.rank]
        i = 0
        while i < len(row):
            n = self._runs[i]
            for ahead in row[i:i + n + self.lookahead]:
                self.comm.prefetch(ahead)
            if n > 1:
                self._weights(row[i:i + n])
                i += n
                continue
            action = row[i]
            for o in self.observers:
                o.started(self.rank, action)
            done = self._run(action)
            record.events.append((action, done.ready, done.made))
            for o in self.observers:
                o.done(self.rank, action, done.detail)
            i += 1
        self.comm.finish()
        for o in self.observers:
            o.finished(self.rank)
        for runner in self.runners.values():
            record.losses.update(runner.losses)
            runner.losses.clear()
        record.end = self.clock()
        if self._local:
            raise RuntimeError(f"local hand-offs never consumed: {list(self._local)}")
        return record

    def _weights_run(self, row: Sequence[Action], i: int) -> int:
        """How many W of ``row[i]``'s stage run back to back from ``i`` (1 if it is no W);
        a W in an overlapped pair runs alone."""
        first, partner = row[i], self.schedule.partner
        j = i
        while (j < len(row) and row[j].op is Op.W and row[j].stage == first.stage
               and row[j] not in partner):
            j += 1
        return max(1, j - i)

    def _weights(self, group: Sequence[Action]) -> None:
        """Back-to-back W of one stage as one GEMM per layer. The first W's event spans the
        work; the others are recorded as done at its end, with no time of their own."""
        for o in self.observers:
            o.started(self.rank, group[0])
        ready, cpu = self.clock(), self._cpu()
        self.runners[group[0].stage].weight(*(a.microbatch for a in group))
        made, first = self.clock(), self._cpu_since(cpu, {})
        for k, a in enumerate(group):
            if k:
                for o in self.observers:
                    o.started(self.rank, a)
            self._record.events.append((a, ready if k == 0 else made, made))
            for o in self.observers:
                o.done(self.rank, a, {"merged": True} if k else first)

    def _run(self, action: Action) -> _Done:
        """The action's handler; a part of an overlapped pair holds its outgoing messages until
        the pair's second part has run, then both leave in order (torch's OVERLAP_F_B)."""
        partner = self.schedule.partner.get(action) if self.schedule.pairs else None
        if partner is None:
            return self.handlers[action.op](action)
        first = (action, partner) in self.schedule.pairs
        if first:
            self._held = []
        done = self.handlers[action.op](action)
        if not first:
            held, self._held = self._held or [], None
            for producer, payload in held:
                self.comm.send(producer, payload)
        return done

    # ------------------------------------------------------------------ data in and out
    def _producer(self, a: Action) -> Action | None:
        """The action on another stage whose output ``a`` consumes (``ir.deps``), if any."""
        return self._producers[a]

    def _take(self, consumer: Action, producer: Action, detail: dict[str, Any]) -> Payload:
        """The input of ``consumer`` produced by ``producer``: local hand-off or a message."""
        src = self.schedule.stage_to_rank[producer.stage]
        if src == self.rank:
            detail["from"] = "local"
            return self._local.pop((producer, consumer))
        for o in self.observers:
            o.waiting(self.rank, consumer, producer, src)
        detail["from"] = "recv"
        payload = self.comm.recv(consumer, producer)
        for o in self.observers:
            o.arrived(self.rank, consumer)
        return payload

    def _give(self, producer: Action, consumer: Action, payload: Payload) -> str:
        if self.schedule.stage_to_rank[consumer.stage] == self.rank:
            self._local[(producer, consumer)] = payload
            return "local"
        if self._held is not None:  # part of an overlapped pair: sent when the pair ends
            self._held.append((producer, payload))
            return "send"
        self.comm.send(producer, payload)
        return "send"

    # ------------------------------------------------------------------ handlers
    def _forward(self, a: Action) -> _Done:
        s, mb = a.stage, a.microbatch
        runner, detail = self.runners[s], dict[str, Any]()
        producer = self._producer(a)
        if producer is None:
            x = self._inputs[mb]
            detail["created"] = tuple(x[0].shape)
        else:
            x = self._take(a, producer, detail)
        ready, cpu = self.clock(), self._cpu()
        target = self._targets[mb] if runner.is_last and self.training else None
        y = runner.forward(mb, x, target, training=self.training)
        made = self.clock()
        self._cpu_since(cpu, detail)
        if runner.is_last:
            if self.training:
                detail["loss"] = runner.losses[mb]
            else:
                self._record.outputs[mb] = detail["output"] = y
        else:
            detail["to"] = self._give(a, Action(s + 1, Op.F, mb), y)
        return _Done(ready, made, detail)

    def _backward(self, a: Action) -> _Done:
        s, mb = a.stage, a.microbatch
        detail: dict[str, Any] = {}
        producer = self._producer(a)
        grads = None if producer is None else self._take(a, producer, detail)
        ready, cpu = self.clock(), self._cpu()
        grad_in = self.runners[s].backward(mb, grads, a.op is Op.I)
        made = self.clock()
        self._cpu_since(cpu, detail)
        if s > 0:
            if grad_in is None:
                raise RuntimeError(f"{a}: the stage input received no gradient")
            consumer = self.schedule.input_grad_action(s - 1, mb)
            detail["to"] = self._give(a, consumer, grad_in)
        return _Done(ready, made, detail)

    def _weight(self, a: Action) -> _Done:
        ready, cpu = self.clock(), self._cpu()
        self.runners[a.stage].weight(a.microbatch)
        made = self.clock()
        return _Done(ready, made, self._cpu_since(cpu, {}))

    def _cpu(self) -> float:
        return self.cpu_clock() if self.cpu_clock is not None else 0.0

    def _cpu_since(self, start: float, detail: dict[str, Any]) -> dict[str, Any]:
        if self.cpu_clock is not None:
            detail["cpu"] = self.cpu_clock() - start
        return detail


def perf_clock(origin: float) -> Clock:
    """Seconds since ``origin`` on the monotonic performance counter."""
    return lambda: time.perf_counter() - origin


__all__ = ["Clock", "Engine", "Observer", "StepRecord", "perf_clock"]
