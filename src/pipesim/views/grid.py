"""The rank-by-step grid: each action one step wide, placed at its earliest unit-time step.

This is the picture torch.distributed.pipelining's docs draw; ``.`` is an idle step.
"""

from __future__ import annotations

from pipesim.costs import CostModel
from pipesim.ir import Schedule
from pipesim.simulate import simulate
from pipesim.validate import check


def step_grid(schedule: Schedule) -> list[list[str]]:
    """Rows of cells (action text or ``.``), every op taking one step.

    Raises InvalidScheduleError (with the validator's reasons) for a schedule that cannot run.
    """
    check(schedule)
    unit = CostModel.from_lists(schedule.stages, 1.0, 1.0, 1.0, 1.0)
    timeline = simulate(schedule, unit)
    width = int(timeline.end)
    rows = [["."] * width for _ in range(schedule.ranks)]
    for e in timeline.events:
        rows[e.rank][int(e.start)] = str(e.action)
    return rows


def format_step_grid(schedule: Schedule, indent: str = "") -> str:
    """The grid as aligned text, one line per rank."""
    rows = step_grid(schedule)
    width = max((len(c) for row in rows for c in row), default=1)
    label = len(f"rank {schedule.ranks - 1}")
    lines = []
    for rank, row in enumerate(rows):
        cells = " ".join(c.center(width) for c in row).rstrip()
        lines.append(f"{indent}{f'rank {rank}':<{label}}: {cells}")
    return "\n".join(lines)


__all__ = ["format_step_grid", "step_grid"]
