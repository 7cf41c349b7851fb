"""Sizes in bytes, read and shown one way everywhere: decimal units (kB, MB, GB), labelled.

    parse_bytes("2GB") -> 2_000_000_000, parse_bytes("512MiB") -> 536_870_912
    format_bytes(3_100_000_000) -> "3.1 GB"
"""

from __future__ import annotations

import re

_BYTE_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
               "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}


def parse_bytes(text: str) -> int:
    """``"2GB"`` -> 2_000_000_000, ``"512MiB"`` -> 536_870_912, ``"1000"`` -> 1000."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _BYTE_UNITS:
        raise ValueError(f"{text!r} is not a size; use e.g. 2GB, 512MiB, 1.5GiB or 1000000")
    value = int(float(match.group(1)) * _BYTE_UNITS[unit])
    if value < 1:
        raise ValueError(f"{text!r}: a memory limit must be at least 1 byte")
    return value


def byte_unit(n: float) -> tuple[float, str]:
    """The decimal unit ``n`` bytes are shown in: (its size, its name), e.g. (1e9, 'GB')."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(n) >= size:
            return size, unit
    return 1.0, "B"


def format_bytes(n: float) -> str:
    """Decimal units with one decimal: 3_100_000_000 -> '3.1 GB'."""
    size, unit = byte_unit(n)
    return f"{n / size:.1f} {unit}" if size > 1 else f"{n:.0f} B"


__all__ = ["byte_unit", "format_bytes", "parse_bytes"]
