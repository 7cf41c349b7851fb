"""Training state on disk: every rank's stage weights, optimizer state, step and RNG state.

Layout::

    DIR/latest.json                    {"step": k, "ranks": p, "fingerprint": {...}}
    DIR/step-000004/rank-0.pt ...      one file per rank, torch.save of plain tensors/dicts

Every file is written to a temporary name, flushed and renamed, and latest.json moves only
after every rank's file of that step is in place: a crash mid-save leaves the previous
checkpoint whole. Loading uses ``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

import torch

from pipesim.fileio import write_atomic

FORMAT = 1
KEEP = 2  # checkpoints kept; older step directories are removed


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why (a user's mistake: exit 2)."""


def step_dir(root: str, step: int) -> str:
    return os.path.join(root, f"step-{step:06d}")


def save_rank(root: str, step: int, rank: int, state: Mapping[str, Any]) -> None:
    """Write this rank's state for ``step`` (atomically)."""
    directory = step_dir(root, step)
    os.makedirs(directory, exist_ok=True)
    write_atomic(os.path.join(directory, f"rank-{rank}.pt"),
                 lambda fh: torch.save({"format": FORMAT, **state}, fh))


def publish(root: str, step: int, ranks: int, fingerprint: Mapping[str, Any]) -> None:
    """Point latest.json at ``step`` (after every rank saved), then prune old steps."""
    body = json.dumps({"format": FORMAT, "step": step, "ranks": ranks,
                       "fingerprint": dict(fingerprint)}, indent=2).encode()
    write_atomic(os.path.join(root, "latest.json"), body)
    steps = sorted(d for d in os.listdir(root) if d.startswith("step-"))
    for old in steps[:-KEEP]:
        shutil.rmtree(os.path.join(root, old), ignore_errors=True)


def read_latest(root: str) -> dict[str, Any]:
    """latest.json, checked for shape; CheckpointError with the reason otherwise."""
    path = os.path.join(root, "latest.json")
    if not os.path.isdir(root):
        raise CheckpointError(f"--resume {root}: no such directory")
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError:
        raise CheckpointError(f"--resume {root}: no checkpoint there (latest.json missing)") \
            from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"--resume {root}: latest.json is unreadable ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("step"), int) \
            or not isinstance(data.get("fingerprint"), dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"--resume {root}: latest.json is not a pipesim checkpoint")
    return data


def check_fingerprint(saved: Mapping[str, Any], current: Mapping[str, Any], root: str) -> None:
    """Refuse a checkpoint of another model, world size or partition, naming what differs."""
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, this run {v!r}"
             for k, v in current.items() if saved.get(k) != v]
    if diffs:
        raise CheckpointError(f"--resume {root}: the checkpoint does not match this run ("
                              + "; ".join(diffs) + ")")


def load_rank(root: str, step: int, rank: int) -> dict[str, Any]:
    path = os.path.join(step_dir(root, step), f"rank-{rank}.pt")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint file {path} is missing") from None
    except Exception as err:  # torch raises many kinds for a damaged file
        raise CheckpointError(f"checkpoint file {path} is damaged or not a pipesim "
                              f"checkpoint ({type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT or state.get("step") != step:
        raise CheckpointError(f"checkpoint file {path} is not a pipesim checkpoint of step {step}")
    return state


__all__ = [
    "FORMAT",
    "KEEP",
    "CheckpointError",
    "check_fingerprint",
    "load_rank",
    "publish",
    "read_latest",
    "save_rank",
    "step_dir"
]
