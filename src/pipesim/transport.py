"""What carries a message between two ranks of one machine on CPU: shared memory
(``runtime/shm.py``) where it can, else gloo. Pure (no torch), so that the engine calibration's
cache can be kept per transport."""

from __future__ import annotations

import os
import platform

SHM_DIR = "/dev/shm"
ENV = "PIPESIM_SHM"  # "0": gloo carries every message


def local_transport() -> str:
    """"shm" where shared-memory messages are possible (x86-64, a shared-memory file system,
    not turned off by ``PIPESIM_SHM=0``), else "gloo"."""
    if (os.environ.get(ENV, "1") != "0" and os.path.isdir(SHM_DIR)
            and platform.machine().lower() in ("x86_64", "amd64")):
        return "shm"
    return "gloo"


__all__ = ["ENV", "SHM_DIR", "local_transport"]
