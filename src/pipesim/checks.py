"""The one "integer >= 1" rule for counts (ranks, microbatches, stages, layers per stage, ...)."""

from __future__ import annotations

from typing import TypeGuard


def is_positive_int(value: object) -> TypeGuard[int]:
    """True for an int >= 1; False for anything else, bools (``True == 1``) and floats included.

    Callers raise their own error (ConfigError, PlanError, ...) with their own wording.
    """
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


__all__ = ["is_positive_int"]
