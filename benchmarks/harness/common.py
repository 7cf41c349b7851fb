"""What every benchmark shares: machine facts, a JSON-lines result log and plain-text tables.

Each result row is one JSON object per line: the benchmark's own fields plus ``bench``, ``date``,
``command``, ``load`` (1/5/15-minute load average when the row was taken) and ``machine``
(CPU count, Python, torch, the environment variables that change CPU timings).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

# Environment variables that change CPU figures; recorded with every row, the same for both sides.
TIMING_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "GLIBC_TUNABLES", "MALLOC_ARENA_MAX",
              "LD_PRELOAD", "GLOO_SOCKET_IFNAME")

Row = dict[str, Any]


def load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages, rounded (what ``uptime`` prints)."""
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    """CPU count, model name, Python, torch and the timing-relevant environment."""
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "env": {k: os.environ.get(k) for k in TIMING_ENV if k in os.environ},
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch"] = str(torch.__version__)
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


@dataclass
class ResultLog:
    """Appends rows to a JSON-lines file (``path`` None: keep them in memory only)."""

    path: str | None
    command: str = field(default_factory=lambda: " ".join(sys.argv))
    rows: list[Row] = field(default_factory=list)
    tags: dict[str, Any] = field(default_factory=dict)  # added to every row (e.g. allocator)

    def add(self, bench: str, row: Row) -> Row:
        """Stamp ``row`` with the benchmark name, date, command, load and machine; store it."""
        full: Row = {"bench": bench, **row, **self.tags,
                     "date": datetime.datetime.now(datetime.timezone.utc).isoformat(
                         timespec="seconds"),
                     "command": self.command, "load": load_average(),
                     "machine": machine_info()}
        self.rows.append(full)
        if self.path:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(full, default=str) + "\n")
        return full


_KEEP_FREED_MEMORY = [True]  # the allocator setting of every rank launched from now on


def glibc_default_allocator() -> None:
    """Ranks launched from now on keep glibc's allocator defaults (mmap and trim thresholds),
    as a torch user without tunables runs, instead of pipesim's launcher default of keeping
    freed memory (``LaunchOptions.keep_freed_memory``)."""
    _KEEP_FREED_MEMORY[0] = False


def launch_options(threads: int = 1) -> Any:
    """The LaunchOptions of every benchmark's ranks: one torch thread, the allocator chosen."""
    from pipesim.processes.launch import LaunchOptions

    return LaunchOptions(threads=threads, keep_freed_memory=_KEEP_FREED_MEMORY[0])


def median(values: Iterable[float]) -> float:
    data = list(values)
    return statistics.median(data) if data else float("nan")


def format_table(rows: Sequence[Row], columns: Sequence[tuple[str, str, str]]) -> str:
    """A fixed-width table; ``columns`` are (key, header, format spec such as ',.0f')."""
    cells = [[_cell(r.get(key), spec) for key, _, spec in columns] for r in rows]
    heads = [head for _, head, _ in columns]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(heads)]
    lines = ["  ".join(h.rjust(w) for h, w in zip(heads, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def _cell(value: Any, spec: str) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and spec:
        return format(value, spec)
    return str(value)
