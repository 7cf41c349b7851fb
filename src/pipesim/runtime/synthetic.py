"""``--synthetic``: make each action of a stage last a given time, to measure engine overhead.

A stage wrapper: after the real compute, the stage sleeps to a deadline (the action's start
plus its given seconds) before returning, so the engine sends the output only then. Sleeping to
a deadline rather than for a duration keeps timer overshoot and compute from adding up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pipesim.ir import Op
from pipesim.runtime.stage import StageRunner


def _to_deadline(seconds: float, run: Callable[..., Any]) -> Callable[..., Any]:
    def timed(*args: Any, **kwargs: Any) -> Any:
        begun = time.perf_counter()
        out = run(*args, **kwargs)
        left = seconds - (time.perf_counter() - begun)
        if left > 0:
            time.sleep(left)
        return out
    return timed


def slow_down(runner: StageRunner, seconds: dict[Op, float]) -> None:
    """Wrap ``runner``'s forward, backward (B or I) and weight (W) to last ``seconds[op]``."""
    if not seconds:
        return
    forward, backward, weight = runner.forward, runner.backward, runner.weight
    if Op.F in seconds:
        runner.forward = _to_deadline(seconds[Op.F], forward)  # type: ignore[method-assign]
    full, split = seconds.get(Op.B), seconds.get(Op.I)
    if full is not None or split is not None:
        timed_b = _to_deadline(full, backward) if full is not None else backward
        timed_i = _to_deadline(split, backward) if split is not None else backward

        def either(mb: int, grads: Any, split_backward: bool) -> Any:
            return (timed_i if split_backward else timed_b)(mb, grads, split_backward)
        runner.backward = either  # type: ignore[method-assign,assignment]
    if Op.W in seconds:
        w = seconds[Op.W]

        def weights(*mbs: int) -> None:  # back-to-back W run as one call: each one's time
            _to_deadline(w * len(mbs), weight)(*mbs)
        runner.weight = weights  # type: ignore[method-assign]


__all__ = ["slow_down"]
