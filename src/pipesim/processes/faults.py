"""Fault injection for tests of the launcher: make one rank fail at one action, on purpose.

Set ``PIPESIM_FAULT=RANK:ACTION:KIND[:STEP]`` (e.g. ``1:1F2:hang``); KIND is one of
``raise`` (an exception), ``exit`` (the process exits with code 3), ``kill`` (SIGKILL to
itself) or ``hang`` (sleeps forever, for the stall watchdog). STEP defaults to 0.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

from pipesim.ir import Action, parse_action

KINDS = ("raise", "exit", "kill", "hang")


class InjectedFault(RuntimeError):
    """The exception a ``raise`` fault throws."""


@dataclass(frozen=True)
class Fault:
    rank: int
    action: Action
    kind: str
    step: int = 0

    def maybe_fire(self, rank: int, action: Action, step: int) -> None:
        if (rank, action, step) != (self.rank, self.action, self.step):
            return
        if self.kind == "raise":
            raise InjectedFault(f"injected fault at {action} (step {step})")
        if self.kind == "exit":
            os._exit(3)
        if self.kind == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        while True:  # hang
            time.sleep(3600)


def fault_from_env(env: dict[str, str] | None = None) -> Fault | None:
    text = (env if env is not None else os.environ).get("PIPESIM_FAULT", "")
    if not text:
        return None
    parts = text.split(":")
    if len(parts) not in (3, 4) or parts[2] not in KINDS:
        raise ValueError(f"PIPESIM_FAULT={text!r}: expected RANK:ACTION:KIND[:STEP] with KIND "
                         f"in {', '.join(KINDS)}")
    return Fault(int(parts[0]), parse_action(parts[1]), parts[2],
                 int(parts[3]) if len(parts) == 4 else 0)


__all__ = ["KINDS", "Fault", "InjectedFault", "fault_from_env"]
