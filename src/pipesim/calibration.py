"""The engine's own time, measured once per machine and torch version, cached in a small file.

``pipesim profile --engine`` runs small models on 2 ranks and reads off the runs
(``predict.engine_gaps``) what the engine spends before each action (bookkeeping, posting
receives, handing tensors over) and at the ranks' meeting (every rank's batch check, one
collective a step, then the step's set-up), from a model whose actions work through a
megabyte each as real models' do (the engine's own Python runs slower on the caches they
leave), and each rank between steps before the ranks meet (data, zero_grad, the step's end)
from a model that computes next to nothing. Where this machine has two cores or more it also
measures ranks that share cores, two ranks per core, on two of them: how much more CPU time
their actions take than with a core each (``shared_compute``; a rank that resumes after
another ran on its core finds the caches cold). The result is cached::

    $PIPESIM_CACHE_DIR/engine-<key>.json      (default ~/.cache/pipesim; $XDG_CACHE_HOME too)
    {"format": "pipesim-engine-costs", "version": 1,
     "machine": "host x86_64, 2 CPUs, Intel Xeon ...", "torch": "2.13.0+cpu",
     "action_overhead": 1.1e-04, "step_overhead": 3.0e-04, "sync": 5.0e-04,   # seconds
     "shared_compute": 1.2,                                   # a ratio (0: not measured)
     "measured": "2026-12-01 20:40", "notes": "...", "fits": {"1f1b": [o, g, s], ...}}

``<key>`` hashes the machine, the torch version, the transport between ranks of one machine
(``pipesim.transport``) and the engine's revision, so another machine, torch, transport or
engine finds no file and calibrates anew. ``pipesim run --predict`` reads it (and calibrates
once when there is none); ``pipesim profile`` writes it into the cost files it makes
(``engine_action_overhead``, ``engine_step_overhead``, ``engine_sync``, ``shared_compute``),
which ``pipesim plan`` and ``pipesim simulate --costs`` use.
Pure: no torch (its version is read from the installed package's metadata).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from pipesim.layercosts import LayerCosts
from pipesim.transport import local_transport

__all__ = ["ENV", "EngineCosts", "cache_path", "load_engine_costs", "machine_id",
           "torch_version", "with_engine"]

ENGINE_REVISION = 6  # raised when the engine's own costs change (2: shared-memory messages;
# 3: the step overhead measured on every rank, before the ranks meet, and the meeting apart;
# 4: the meeting through shared memory; 5: the time per action and the meeting read off a
# model that works as real ones do, the engine's per-action lookups worked out once; 6: ranks
# that share cores measured too)
ENV = "PIPESIM_CACHE_DIR"  # where the cache lives (tests point it at a temporary folder)
FORMAT = "pipesim-engine-costs"


@dataclass(frozen=True)
class EngineCosts:
    """What the engine spends of its own, in seconds, on ``machine`` with ``torch``."""

    action_overhead: float  # before each action
    step_overhead: float  # on each rank between steps, beyond the optimizer
    machine: str = ""
    torch: str = ""
    measured: str = ""  # when, as text
    notes: str = ""
    fits: dict[str, list[float]] = field(default_factory=dict)  # schedule -> [action, step,
    # sync]
    sync: float = 0.0  # the ranks' meeting once a step: last arrival to a free first action
    # ranks that share cores, 2 per core: their actions' CPU time over that with a core each
    # (0: not measured)
    shared_compute: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, "version": 1, **dataclasses.asdict(self)},
                          indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: Any) -> EngineCosts:
        """A cached object; ValueError names what is wrong."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} object")
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in ("action_overhead", "step_overhead", "sync", "shared_compute"):
            value = values.get(key, None if key.endswith("overhead") else 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{key}: {value!r} is not a number >= 0")
        return cls(**values)


def machine_id() -> str:
    """This machine as text: host name, architecture, CPU count and model."""
    model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            model = next((line.split(":", 1)[1].strip() for line in fh
                          if line.startswith("model name")), "")
    except OSError:
        pass
    return f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, {model}".strip(", ")


def torch_version() -> str:
    """The installed torch's version, without importing it ("" if it is not installed)."""
    try:
        return metadata.version("torch")
    except metadata.PackageNotFoundError:
        return ""


def cache_dir() -> Path:
    """``$PIPESIM_CACHE_DIR``, else ``$XDG_CACHE_HOME/pipesim``, else ``~/.cache/pipesim``."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "pipesim"


def cache_path(machine: str | None = None, torch: str | None = None,
               transport: str | None = None) -> Path:
    """The cache file for ``machine``, ``torch`` and the same-machine ``transport`` (default:
    this machine, the installed torch, ``transport.local_transport()``)."""
    key = f"{machine if machine is not None else machine_id()}|" \
          f"{torch if torch is not None else torch_version()}|" \
          f"{transport if transport is not None else local_transport()}|{ENGINE_REVISION}"
    return cache_dir() / f"engine-{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def load_engine_costs(path: Path | None = None) -> EngineCosts | None:
    """This machine's calibration, or None when there is none (or it cannot be read: a
    damaged cache is measured again, never an error)."""
    path = path if path is not None else cache_path()
    try:
        return EngineCosts.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def with_engine(layer_costs: LayerCosts, engine: EngineCosts | None) -> LayerCosts:
    """``layer_costs`` with ``engine``'s times, unless it carries its own (or there is none)."""
    if engine is None or layer_costs.engine_action_overhead or layer_costs.engine_step_overhead \
            or layer_costs.engine_sync:
        return layer_costs
    return dataclasses.replace(layer_costs, engine_action_overhead=engine.action_overhead,
                               engine_step_overhead=engine.step_overhead,
                               engine_sync=engine.sync, shared_compute=engine.shared_compute)
