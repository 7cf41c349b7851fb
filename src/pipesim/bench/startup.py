"""Whole-command timings: ``pipesim run`` vs the tutorial script, each a fresh process.

    startup    ``pipesim run`` (the default demo) vs ``python pipeline_simulation.py``, output to
               /dev/null, runs interleaved; wall time of each process
    messages   forward only, 4 ranks, hidden 64, many microbatches, ``--quiet``: the command's
               wall time, and pipesim's own step time from ``--json``

The tutorial binds the fixed port 29502, so it runs from a private copy in a temporary
directory, one at a time. ``env`` adds to (or with None, removes from) the inherited environment.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pipesim.bench.common import median

# the tutorial script this project grew from: $PIPESIM_TUTORIAL, else ../shared/seed/ beside
# the checkout (where the team keeps it)
TUTORIAL = Path(os.environ.get("PIPESIM_TUTORIAL") or
                Path(__file__).resolve().parents[3].parent / "shared" / "seed" /
                "pipeline_simulation.py")
Env = Mapping[str, str | None]


def pipesim_command() -> list[str]:
    """``pipesim`` beside this interpreter (the console script a user runs), else -m."""
    script = Path(sys.executable).with_name("pipesim")
    return [str(script)] if script.exists() else [sys.executable, "-m", "pipesim"]


def _env(extra: Env) -> dict[str, str]:
    env = dict(os.environ)
    for key, value in extra.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def timed(cmd: Sequence[str], env: Env, cwd: str | None = None, capture: bool = False
          ) -> tuple[float, str]:
    """Wall seconds of ``cmd`` (stdout to /dev/null unless ``capture``); raises if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.run(list(cmd), env=_env(env), cwd=cwd, check=False, text=True,
                          stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=600)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}: {proc.stderr[-400:]}")
    return wall, proc.stdout if capture else ""


class Tutorial:
    """A private copy of the tutorial script; use as a context manager."""

    def __init__(self, source: Path = TUTORIAL) -> None:
        self.source = source
        self.dir = ""

    def __enter__(self) -> Tutorial:
        if not self.source.is_file():
            raise FileNotFoundError(f"the tutorial script is not at {self.source}; "
                                    f"set PIPESIM_TUTORIAL to its path")
        self.dir = tempfile.mkdtemp(prefix="pipesim-tutorial-")
        shutil.copy(self.source, self.dir)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, str(Path(self.dir) / self.source.name), *args]


def run_startup(runs: int, env: Env) -> dict[str, Any]:
    """``runs`` interleaved wall times of the default demo, pipesim and tutorial."""
    walls: dict[str, list[float]] = {"pipesim": [], "tutorial": []}
    with Tutorial() as tut:
        for i in range(runs):
            order = ("pipesim", "tutorial") if i % 2 == 0 else ("tutorial", "pipesim")
            for who in order:
                cmd = [*pipesim_command(), "run"] if who == "pipesim" else tut.command()
                walls[who].append(timed(cmd, env, cwd=tut.dir)[0])
    return {"runs": runs, "env": dict(env), "pipesim_s": median(walls["pipesim"]),
            "tutorial_s": median(walls["tutorial"]),
            "ratio": median(walls["pipesim"]) / median(walls["tutorial"]),
            "pipesim_all_s": walls["pipesim"], "tutorial_all_s": walls["tutorial"]}


def run_forward_messages(microbatches: int, env: Env, tutorial: bool = True
                         ) -> dict[str, Any]:
    """Forward only, 4 ranks, hidden 64: pipesim's wall and step time, the tutorial's wall."""
    args = ["run", "-w", "4", "--hidden-size", "64", "-m", str(microbatches), "--quiet",
            "--json"]
    wall, out = timed([*pipesim_command(), *args], env, capture=True)
    data = json.loads(out)
    row: dict[str, Any] = {"microbatches": microbatches, "env": dict(env), "pipesim_wall_s": wall,
                           "pipesim_step_s": median(data["step_seconds"])}
    row["pipesim_us_per_microbatch"] = row["pipesim_step_s"] / microbatches * 1e6
    if tutorial:
        with Tutorial() as tut:
            row["tutorial_wall_s"] = timed(tut.command("-m", str(microbatches)), env,
                                           cwd=tut.dir)[0]
        row["wall_ratio"] = row["pipesim_wall_s"] / row["tutorial_wall_s"]
    return row
