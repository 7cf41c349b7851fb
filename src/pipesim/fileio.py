"""Atomic file writes: the one place pipesim writes a file that must be whole or absent."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import BinaryIO


def write_atomic(path: str, data: str | bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    A reader sees the old file or the new one, never half of one. ``data`` is text (UTF-8),
    bytes, or a function that writes into the binary file it is given (e.g. ``torch.save``).
    The file gets the usual permissions (0666 less the umask), not mkstemp's 0600. Raises
    OSError (the temporary file removed) when the directory is missing or unwritable.
    """
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".pipesim-", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            umask = os.umask(0)
            os.umask(umask)
            os.fchmod(fh.fileno(), 0o666 & ~umask)
            if isinstance(data, str):
                fh.write(data.encode("utf-8"))
            elif isinstance(data, bytes):
                fh.write(data)
            else:
                data(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


__all__ = ["write_atomic"]
