"""Who is doing what: per-rank progress in shared memory, and the stall report built from it.

Each rank writes its state (running an action, waiting for a message, done) into one row of a
shared array; the launcher reads every row. When a rank that has work left completes nothing
for ``stall_timeout`` seconds, the launcher stops the job and prints every rank's row.
"""

from __future__ import annotations

import time
from typing import Any

from pipesim.ir import Action, Op

_OPS = list(Op)
_WIDTH = 12  # floats per rank row
# row layout
_STATE, _STAGE, _OP, _MB, _SRC, _PSTAGE, _POP, _PMB, _LSTAGE, _LOP, _LMB, _TIME = range(_WIDTH)
SETUP, RUNNING, WAITING, DONE = 0.0, 1.0, 2.0, 3.0


class StallError(RuntimeError):
    """No progress for too long; the message holds every rank's state."""


def shared_rows(ctx: Any, world: int) -> Any:
    """A lock-free shared double array, one row per rank (the launcher creates it)."""
    return _init_rows(ctx.RawArray("d", world * _WIDTH), world)


def private_rows(world: int) -> list[float]:
    """Rows in this process only (torchrun: each rank watches itself)."""
    rows: list[float] = _init_rows([0.0] * (world * _WIDTH), world)
    return rows


def _init_rows(rows: Any, world: int) -> Any:
    now = time.monotonic()
    for r in range(world):
        rows[r * _WIDTH + _TIME] = now
        rows[r * _WIDTH + _LSTAGE] = -1
    return rows


class Monitor:
    """One rank's writer into the shared rows (or a private row under torchrun)."""

    def __init__(self, rows: Any, rank: int) -> None:
        self.rows = rows
        self.base = rank * _WIDTH

    def _set(self, state: float, a: Action) -> None:
        b, rows = self.base, self.rows
        rows[b + _STAGE], rows[b + _OP], rows[b + _MB] = a.stage, _OPS.index(a.op), a.microbatch
        rows[b + _STATE] = state

    def running(self, a: Action) -> None:
        if self.rows[self.base + _STATE] == SETUP:  # the first action: the clock starts now
            self.rows[self.base + _TIME] = time.monotonic()
        self._set(RUNNING, a)

    def waiting(self, consumer: Action, producer: Action, src: int) -> None:
        b, rows = self.base, self.rows
        rows[b + _SRC] = src
        rows[b + _PSTAGE], rows[b + _POP], rows[b + _PMB] = (
            producer.stage, _OPS.index(producer.op), producer.microbatch)
        self._set(WAITING, consumer)

    def done(self, a: Action) -> None:
        b, rows = self.base, self.rows
        rows[b + _LSTAGE], rows[b + _LOP], rows[b + _LMB] = a.stage, _OPS.index(a.op), a.microbatch
        rows[b + _TIME] = time.monotonic()

    def finished(self) -> None:
        self.rows[self.base + _STATE] = DONE
        self.rows[self.base + _TIME] = time.monotonic()


def _action(rows: Any, b: int, i: int) -> Action:
    return Action(int(rows[b + i]), _OPS[int(rows[b + i + 1])], int(rows[b + i + 2]))


def describe(rows: Any, rank: int, now: float) -> str:
    """One line: what ``rank`` is doing and the last action it completed."""
    b = rank * _WIDTH
    state = rows[b + _STATE]
    last = "nothing yet" if rows[b + _LSTAGE] < 0 else str(_action(rows, b, _LSTAGE))
    idle = now - rows[b + _TIME]
    if state == WAITING:
        consumer, producer = _action(rows, b, _STAGE), _action(rows, b, _PSTAGE)
        kind = "activation" if consumer.op is Op.F else "gradient"
        what = (f"waits for the {kind} of {producer} from rank {int(rows[b + _SRC])} "
                f"(to run {consumer})")
    elif state == RUNNING:
        what = f"is running {_action(rows, b, _STAGE)}"
    elif state == DONE:
        what = "has finished its actions"
    else:
        what = "is still setting up (rendezvous, model, shapes)"
    return f"rank {rank} {what}; last completed: {last}; {idle:.1f} s since its last progress"


def stalled(rows: Any, alive: set[int], timeout: float, now: float | None = None) -> list[int]:
    """Ranks with work left that made no progress for ``timeout`` seconds.

    Set-up (rendezvous, building the model) is not counted: it has the collective timeout.
    """
    now = time.monotonic() if now is None else now
    return [r for r in sorted(alive)
            if rows[r * _WIDTH + _STATE] not in (DONE, SETUP)
            and now - rows[r * _WIDTH + _TIME] > timeout]


def stall_report(rows: Any, world: int, timeout: float) -> str:
    now = time.monotonic()
    lines = [f"stalled: no action completed for {timeout:g} s (--stall-timeout); every rank:"]
    lines += [f"  {describe(rows, r, now)}" for r in range(world)]
    return "\n".join(lines)


class NullMonitor(Monitor):
    """A monitor that records into a private row (no launcher is watching)."""

    def __init__(self) -> None:
        super().__init__(private_rows(1), 0)


__all__ = [
    "Monitor", "NullMonitor", "StallError", "describe", "private_rows", "shared_rows",
    "stall_report", "stalled"
]
