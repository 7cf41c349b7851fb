"""Pictures of a Timeline (simulated or measured), for a user's script: text, or files.

    print(pipesim.ascii(timeline))
    pipesim.write_html(timeline, "run.html")     # offline page
    pipesim.write_trace(timeline, "trace.json")  # chrome://tracing, Perfetto
    pipesim.write_png(timeline, "run.png")       # needs matplotlib

Files are written atomically (a temporary file, then a rename). No torch here.
"""

from __future__ import annotations

from pipesim.fileio import write_atomic as _write
from pipesim.timeline import Timeline
from pipesim.views.ascii import render_ascii
from pipesim.views.chrome_trace import chrome_trace_json
from pipesim.views.html import render_timeline_html


def ascii(timeline: Timeline, width: int = 100) -> str:
    """The timeline as text, one row per rank."""
    return render_ascii(timeline, width=width)


def write_html(timeline: Timeline, path: str, title: str | None = None) -> None:
    _write(path, render_timeline_html(timeline, title=title))


def write_trace(timeline: Timeline, path: str) -> None:
    _write(path, chrome_trace_json(timeline))


def write_png(timeline: Timeline, path: str) -> None:
    from pipesim.views.png import png_bytes
    _write(path, png_bytes([(timeline.name or "timeline", timeline)]))


__all__ = ["ascii", "write_html", "write_png", "write_trace"]
