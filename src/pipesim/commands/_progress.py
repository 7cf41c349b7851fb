"""A line on stderr while long work runs (profiling, prediction, planning): what, and how long.

    with working("profiling 6 layers", enabled=not args.json) as status:
        ...
        status.update("measuring messages")

Nothing is drawn for work that ends within ``delay`` seconds, under ``--json``/``--quiet``
(``enabled=False``), or when stderr is not a terminal (a log file gets no spinner frames).
The line is erased when the work ends, so the command's own output follows cleanly.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Status", "working"]

_FRAMES = "|/-\\"
DELAY = 2.0  # seconds of silence before the line appears: short work stays quiet


class Status:
    """The text shown and the thread that redraws it with the elapsed time."""

    def __init__(self, text: str, stream: TextIO, delay: float, interval: float = 0.2) -> None:
        self.text, self.stream, self.delay, self.interval = text, stream, delay, interval
        self.start = time.monotonic()
        self._stop = threading.Event()
        self._drawn = False
        self._thread = threading.Thread(target=self._loop, name="pipesim-progress", daemon=True)

    def update(self, text: str) -> None:
        """Say what the work is doing now."""
        self.text = text

    def line(self, frame: int = 0) -> str:
        elapsed = time.monotonic() - self.start
        return f"{_FRAMES[frame % len(_FRAMES)]} {self.text} ... {elapsed:.0f} s"

    def _loop(self) -> None:
        if self._stop.wait(self.delay):
            return
        frame = 0
        while not self._stop.is_set():
            self._write("\r\033[K" + self.line(frame))
            self._drawn = True
            frame += 1
            self._stop.wait(self.interval)

    def _close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._drawn:
            self._write("\r\033[K")

    def _write(self, text: str) -> None:
        # one os.write, no Python-level lock: the work may fork ranks while this thread runs
        try:
            os.write(self.stream.fileno(), text.encode())
        except (AttributeError, OSError, ValueError):
            self.stream.write(text)
            self.stream.flush()


@contextmanager
def working(text: str, enabled: bool = True, stream: TextIO | None = None,
            delay: float = DELAY) -> Iterator[Status]:
    """Show ``text`` with a spinner and the elapsed time on stderr while the block runs."""
    out = stream if stream is not None else sys.stderr
    status = Status(text, out, delay)
    live = enabled and out.isatty()
    if live:
        status._thread.start()
    try:
        yield status
    finally:
        if live:
            status._close()
