"""What every view shares: one colour and name per op, and the units times and memory read in.

The PNG, the HTML page and the ASCII legend all take their colours from ``OP_COLORS``, so a
red box means B everywhere. Times in s, ms or us are shown in whichever of the three makes the
span at least 1 (``time_unit``); other units ("units") are shown as they are. Memory is shown in
decimal bytes (``pipesim.units.format_bytes``) when a timeline knows its stash sizes, else
in *rank stashes* (``pipesim.timeline.stash_over_time``).
"""

from __future__ import annotations

from pipesim.ir import Op
from pipesim.timeline import RankMetrics, StashChange, Timeline
from pipesim.units import byte_unit, format_bytes

__all__ = ["OP_COLORS", "OP_COLOR_NAMES", "OP_LABELS", "PEAK_NOTE", "STASH_COLOR", "drawn_range",
           "memory_unit", "peak_of", "peak_text", "time_unit"]

OP_COLORS = {Op.F: "#4C72B0", Op.I: "#DD8452", Op.W: "#55A868", Op.B: "#C44E52"}
OP_COLOR_NAMES = {Op.F: "blue", Op.I: "orange", Op.W: "green", Op.B: "red"}
OP_LABELS = {Op.F: "forward", Op.I: "backward (input)", Op.W: "backward (weights)",
             Op.B: "backward (full)"}
STASH_COLOR = "#8172B3"  # the memory lanes

PEAK_NOTE = ("peak stash = most activations a rank keeps for backward at once: bytes when the "
             "costs give\nstash_bytes, else rank stashes (1 = one microbatch through a rank's "
             "whole share of the model)")

_EXPONENT = {"s": 0, "ms": -3, "us": -6}  # of ten, in seconds


def time_unit(span: float, unit: str) -> tuple[float, str]:
    """(factor, name): a time in ``unit`` times factor reads in name; 0.0005 s -> (1000, 'ms')."""
    if unit not in _EXPONENT or not span > 0:
        return 1.0, unit
    for name, exp in _EXPONENT.items():
        if span * 10.0 ** _EXPONENT[unit] >= 10.0 ** exp or name == "us":
            return 10.0 ** (_EXPONENT[unit] - exp), name
    raise AssertionError("unreachable")


def drawn_range(timeline: Timeline) -> tuple[float, float]:
    """(origin, end) of everything a view draws: actions and spans (an all-reduce may end last)."""
    starts = [timeline.start, *(x.start for x in timeline.spans)] if timeline.events else \
        [x.start for x in timeline.spans]
    ends = [timeline.end, *(x.end for x in timeline.spans)] if timeline.events else \
        [x.end for x in timeline.spans]
    return min(starts, default=0.0), max(ends, default=0.0)


def memory_unit(timeline: Timeline, peak: float) -> tuple[float, str]:
    """(factor, name) for stash levels up to ``peak``: bytes when known, else rank stashes."""
    if timeline.stash_bytes:
        size, name = byte_unit(peak)
        return 1 / size, name
    return 1.0, "rank stashes"


def peak_of(changes: list[list[StashChange]]) -> float:
    """The highest level of any rank."""
    return max((c.level for row in changes for c in row), default=0.0)


def peak_text(m: RankMetrics) -> str:
    """A rank's peak stash: '4.2 MB' when bytes are known, else rank stashes ('4', '4.5')."""
    if m.peak_activation_bytes is not None:
        return format_bytes(m.peak_activation_bytes)
    return f"{m.peak_stash:.3g}"
