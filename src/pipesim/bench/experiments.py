"""Benchmark-only experiments: candidate engine changes applied to one instance, to measure them.

Nothing here changes the runtime. Each patch takes a ``Comm`` and its ``Engine`` and changes
those objects only; ``headtohead.Case(variant=NAME)`` runs a second pipesim side with the patch
beside the stock one, alternating steps in the same ranks.

    reuse-buffers  receive into one buffer per message kept across steps, instead of a fresh
                   ``torch.empty`` per receive (a 128 KiB buffer sits at glibc's mmap threshold:
                   every receive maps, faults in and unmaps its pages)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def reuse_buffers(comm: Any, engine: Any) -> None:
    """Comm._buffer returns the same tensor for the same message in every step."""
    cache: dict[Any, Any] = {}
    fresh = comm._buffer

    def buffer(message: Any) -> Any:
        got = cache.get(message)
        if got is None:
            got = cache[message] = fresh(message)
        return got

    comm._buffer = buffer


PATCHES: dict[str, Callable[[Any, Any], None]] = {"reuse-buffers": reuse_buffers}
