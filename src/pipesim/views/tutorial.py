"""The tutorial's ``--visualize`` picture, drawn from a real schedule of any size.

Each rank is a row of boxes, one per action, placed at the unit step it runs in (every op one
step, as in ``pipesim schedule``). ``─►`` joins a rank's back-to-back actions; ``▼`` over a box
marks an input handed down from the rank above (an activation, in a straight pipeline), ``▲``
under a box one handed up from the rank below (a gradient, or an activation at a V's turn);
hand-offs between ranks that are not neighbours (an interleaved pipeline's wrap) are not drawn.
A picture wider than ``max_width`` shows its first steps and says so.
"""

from __future__ import annotations

from pipesim.costs import CostModel
from pipesim.ir import Action, Op, Schedule, deps
from pipesim.simulate import simulate

_OP_TEXT = {Op.F: "Fwd", Op.B: "Bwd", Op.I: "BwI", Op.W: "BwW"}
_RULE = "═" * 75


def render_tutorial_diagram(schedule: Schedule, max_width: int = 120) -> str:
    """The framed picture as text (box-drawing characters; no trailing newline)."""
    grid = _steps(schedule)
    steps = max((len(row) for row in grid), default=0)
    several = any(len(schedule.stages_of(r)) > 1 for r in range(schedule.ranks))
    box = max((len(_label(a, several)) for row in grid for a in row if a), default=9)
    cell = box + 2  # the box and its "─►"
    head = len(f"{'Rank' if several else 'Stage'} {schedule.ranks - 1}:  ")
    shown = max(1, min(steps, (max_width - 4 - 3 - head - 4) // cell))  # indent, frame, " ..."
    inner: list[str] = [""]
    for r, row in enumerate(grid):
        inner.append(_boxes(r, row[:shown], box, head, several, shown < steps))
        if r + 1 < len(grid):
            inner.append(_handoffs(schedule, grid[r][:shown], grid[r + 1][:shown], box, head))
    inner.append("")
    width = max(len(line) for line in inner) + 2
    title = (f"PIPELINE SCHEDULE: {schedule.name or 'schedule'}, {schedule.ranks} ranks, "
             f"{schedule.microbatches} microbatches")
    lines = ["", f"    {_RULE}", f"    {title}", f"    {_RULE}", "",
             "    Time → (one column per step; every op takes one step)",
             "    ┌" + "─" * width + "┐"]
    lines += [f"    │ {line:<{width - 1}}│" for line in inner]
    lines.append("    └" + "─" * width + "┘")
    if shown < steps:
        lines.append(f"    (first {shown} of {steps} steps; 'pipesim schedule' prints them all)")
    lines += ["", "    MB = microbatch, Fwd = forward, Bwd = backward, "
                  "BwI/BwW = backward for input / weights",
              "    ─► the rank's next action; ▼ input from the rank above; "
              "▲ input from the rank below", ""]
    lines += [f"    {line}" for line in _insight(schedule, grid, steps)]
    lines += ["", f"    {_RULE}"]
    return "\n".join(lines)


def _steps(schedule: Schedule) -> list[list[Action | None]]:
    """Per rank, the action at each unit step (None when idle)."""
    unit = CostModel.from_lists(schedule.stages, 1.0, 1.0, 1.0, 1.0)
    timeline = simulate(schedule, unit)
    width = round(timeline.end)
    grid: list[list[Action | None]] = [[None] * width for _ in range(schedule.ranks)]
    for e in timeline.events:
        grid[e.rank][round(e.start)] = e.action
    return grid


def _label(a: Action, several: bool) -> str:
    stage = f"S{a.stage} " if several else ""
    return f"[{stage}MB{a.microbatch} {_OP_TEXT[a.op]}]"


def _boxes(rank: int, row: list[Action | None], box: int, head: int, several: bool,
           cut: bool) -> str:
    name = f"{'Rank' if several else 'Stage'} {rank}:"
    out = [f"{name:<{head}}"]
    for k, a in enumerate(row):
        out.append(_label(a, several).ljust(box) if a else " " * box)
        nxt = row[k + 1] if k + 1 < len(row) else None
        out.append("─►" if a and nxt else "  ")
    text = "".join(out).rstrip()
    return text + (" ..." if cut else "")


def _handoffs(schedule: Schedule, upper: list[Action | None], lower: list[Action | None],
              box: int, head: int) -> str:
    """The line between two ranks' rows: ▼ over a box fed from above, ▲ under one fed from below."""
    cell = box + 2
    chars = [" "] * (head + cell * len(upper))
    place = schedule.stage_to_rank
    for k, a in enumerate(lower):
        if a and any(place[d.stage] == place[a.stage] - 1 for d in deps(a, schedule)):
            chars[head + k * cell + box // 2 - 1] = "▼"
    for k, a in enumerate(upper):
        if a and any(place[d.stage] == place[a.stage] + 1 for d in deps(a, schedule)):
            chars[head + k * cell + box // 2 + 1] = "▲"
    return "".join(chars).rstrip()


def _insight(schedule: Schedule, grid: list[list[Action | None]], steps: int) -> list[str]:
    busy = sum(a is not None for row in grid for a in row)
    total = schedule.ranks * steps
    lines = [f"Busy: {busy} of {total} rank-steps ({busy / total:.0%}); "
             f"the rest is the pipeline bubble." if total else "No actions."]
    full = next((k for k in range(steps) if all(row[k] is not None for row in grid)), None)
    if schedule.ranks > 1 and full is not None:
        work = ", ".join(f"rank {r} MB{row[full].microbatch}"  # type: ignore[union-attr]
                         for r, row in enumerate(grid[:3]))
        lines.append(f"Key insight: at step {full} every rank is busy ({work}"
                     f"{', ...' if schedule.ranks > 3 else ''}):")
        lines.append("the pipeline is full.")
    elif schedule.ranks > 1:
        lines.append("Key insight: no step has every rank busy;")
        lines.append("more microbatches would fill the pipeline.")
    return lines


__all__ = ["render_tutorial_diagram"]
