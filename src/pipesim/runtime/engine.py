"""The schedule interpreter: runs one rank's actions in order with a handler per op.

    F  receive (or take locally) the stage input, forward, send the output on
    B  receive the output gradient, full backward, send the input gradient back
    I  like B, with Linear weight gradients deferred
    W  the deferred weight gradients
Receives for upcoming actions are posted ahead (``lookahead``); sends start right after the
producing action and never block. Each action's start and end are recorded on ``clock``.
An overlapped pair (``Schedule.pairs``) runs as torch runs OVERLAP_F_B: its F, then its B, and
only then both sends (``_run``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from pipesim.ir import Action, Op, Schedule
from pipesim.runtime.comm import Comm
from pipesim.runtime.stage import StageRunner
from pipesim.runtime.watchdog import Monitor, NullMonitor

# hook(rank, action, detail) called after each action; detail says where data came from/went
ActionHook = Callable[[int, Action, dict[str, Any]], None]


@dataclass
class StepRecord:
    """What one rank did in one step: events (action, start, end) and the losses it computed."""

    events: list[tuple[Action, float, float]] = field(default_factory=list)
    losses: dict[int, float] = field(default_factory=dict)
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)  # inference: last stage
    start: float = 0.0
    end: float = 0.0


class Engine:
    """Interprets ``schedule`` for ``rank`` over ``runners`` (stage index -> StageRunner)."""

    def __init__(self, schedule: Schedule, rank: int, runners: dict[int, StageRunner],
                 comm: Comm, origin: float = 0.0, hook: ActionHook | None = None,
                 synthetic: dict[Op, float] | None = None, lookahead: int = 2,
                 monitor: Monitor | None = None,
                 before: Callable[[Action], None] | None = None,
                 after: Callable[[Action], None] | None = None) -> None:
        self.schedule = schedule
        self.rank = rank
        self.runners = runners
        self.comm = comm
        self.origin = origin
        self.hook = hook
        self.synthetic = synthetic or {}
        self.lookahead = lookahead
        self.monitor = monitor or NullMonitor()
        self.before = before  # called before each action (fault injection in tests)
        self.after = after  # called after each action (starts gradient all-reduce)
        self.training = not schedule.forward_only
        self.handlers: dict[Op, Callable[[Action], dict[str, Any]]] = {
            Op.F: self._forward, Op.B: self._backward, Op.I: self._backward, Op.W: self._weight,
        }
        self._local: dict[tuple[Action, Action], torch.Tensor] = {}
        self._inputs: Sequence[torch.Tensor] = ()
        self._targets: Sequence[torch.Tensor] = ()
        self._record = StepRecord()
        self._ready: float | None = None  # when the current action's inputs had arrived
        self._paused: Action | None = None  # the action whose synthetic sleep already ran
        self._posted = 0.0  # when the current action began (before waiting for inputs)
        self._computed: float | None = None  # when its output existed (before sending it)
        self._held: list[tuple[Action, torch.Tensor]] | None = None  # a pair's sends, until it ends

    def clock(self) -> float:
        return time.perf_counter() - self.origin

    def step(self, inputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
             ) -> StepRecord:
        """Run every action of this rank once; inputs/targets per microbatch."""
        self._inputs, self._targets = inputs, targets
        self._paused = None
        self._record = record = StepRecord(start=self.clock())
        row = self.schedule.actions[self.rank]
        for i, action in enumerate(row):
            for ahead in row[i:i + 1 + self.lookahead]:
                self.comm.prefetch(ahead)
            self.monitor.running(action)
            if self.before is not None:
                self.before(action)
            self._ready = self._computed = None
            self._posted = self.clock()
            detail = self._run(action)
            self._pause(action)  # no-op unless it already ran before this action's send
            end = self._computed if self._computed is not None else self.clock()
            # an action runs from when its inputs are in hand (waiting for a message is idle
            # time) to when its output exists (sending it is the next rank's business)
            record.events.append((action, self._ready if self._ready is not None
                                  else self._posted, end))
            self.monitor.done(action)
            if self.after is not None:
                self.after(action)
            if self.hook is not None:
                self.hook(self.rank, action, detail)
        self.comm.finish()
        self.monitor.finished()
        for runner in self.runners.values():
            record.losses.update(runner.losses)
            runner.losses.clear()
        record.end = self.clock()
        if self._local:
            raise RuntimeError(f"local hand-offs never consumed: {list(self._local)}")
        return record

    # ------------------------------------------------------------------ handlers
    def _run(self, action: Action) -> dict[str, Any]:
        """The action's handler; a part of an overlapped pair holds its outgoing messages until
        the pair's second part has run, then both leave in order (torch's OVERLAP_F_B)."""
        partner = self.schedule.partner.get(action) if self.schedule.pairs else None
        if partner is None:
            return self.handlers[action.op](action)
        first = (action, partner) in self.schedule.pairs
        if first:
            self._held = []
        detail = self.handlers[action.op](action)
        if not first:
            held, self._held = self._held or [], None
            for producer, tensor in held:
                self.comm.send(producer, tensor)
        return detail

    def _take(self, consumer: Action, producer: Action) -> tuple[torch.Tensor, str]:
        """The input of ``consumer`` produced by ``producer``: local hand-off or a message."""
        src = self.schedule.stage_to_rank[producer.stage]
        if src == self.rank:
            return self._local.pop((producer, consumer)), "local"
        self.monitor.waiting(consumer, producer, src)
        tensor = self.comm.recv(consumer, producer)
        self.monitor.running(consumer)
        self._ready = self.clock()
        return tensor, "recv"

    def _pause(self, action: Action) -> None:
        """--synthetic: make the action last its given time (compute included), before any send.

        Sleeping to a deadline rather than for a duration keeps timer overshoot and the real
        compute from adding up action after action.
        """
        if action.op in self.synthetic and self._paused is not action:
            begun = self._ready if self._ready is not None else self._posted
            left = self.synthetic[action.op] - (self.clock() - begun)
            if left > 0:
                time.sleep(left)
            self._paused = action

    def _give(self, producer: Action, consumer: Action, tensor: torch.Tensor) -> str:
        self._pause(producer)
        if self._computed is None:
            self._computed = self.clock()
        if self.schedule.stage_to_rank[consumer.stage] == self.rank:
            self._local[(producer, consumer)] = tensor
            return "local"
        if self._held is not None:  # part of an overlapped pair: sent when the pair ends
            self._held.append((producer, tensor))
            return "send"
        self.comm.send(producer, tensor)
        return "send"

    def _forward(self, a: Action) -> dict[str, Any]:
        s, mb = a.stage, a.microbatch
        runner = self.runners[s]
        detail: dict[str, Any] = {}
        if s == 0:
            x = self._inputs[mb]
            detail["created"] = tuple(x.shape)
        else:
            x, detail["from"] = self._take(a, Action(s - 1, Op.F, mb))
        target = self._targets[mb] if runner.is_last and self.training else None
        y = runner.forward(mb, x, target, training=self.training)
        if runner.is_last:
            if not self.training:
                self._record.outputs[mb] = y
                detail["output_mean"] = float(y.float().mean())
            else:
                detail["loss"] = runner.losses[mb]
        else:
            consumer = Action(s + 1, Op.F, mb)
            detail["to"] = self._give(a, consumer, y)
        return detail

    def _backward(self, a: Action) -> dict[str, Any]:
        s, mb = a.stage, a.microbatch
        runner = self.runners[s]
        detail: dict[str, Any] = {}
        grad = None
        if not runner.is_last:
            producer = self.schedule.input_grad_action(s + 1, mb)
            grad, detail["from"] = self._take(a, producer)
        grad_in = runner.backward(mb, grad, split=a.op is Op.I)
        if s > 0:
            if grad_in is None:
                raise RuntimeError(f"{a}: the stage input received no gradient")
            detail["to"] = self._give_grad(a, grad_in)
        return detail

    def _give_grad(self, a: Action, grad_in: torch.Tensor) -> str:
        """Send I/B(s)'s input gradient to the input-gradient action of stage s-1."""
        consumer = self.schedule.input_grad_action(a.stage - 1, a.microbatch)
        return self._give(a, consumer, grad_in)

    def _weight(self, a: Action) -> dict[str, Any]:
        self.runners[a.stage].weight(a.microbatch)
        return {}
