"""Whole-command timings: ``pipesim run`` vs the tutorial script, each a fresh process.

    startup    ``pipesim run`` (the default demo) vs ``python pipeline_simulation.py``, output to
               /dev/null, runs interleaved; wall time of each process
    messages   forward only, 4 ranks, hidden 64, many microbatches, ``--quiet``: the command's
               wall time, and pipesim's own step time from ``--json``

The tutorial script (``pipeline_simulation.py``, which pipesim grew from) is not part of the
project: it runs only where its path is given (``--tutorial PATH`` or ``$PIPESIM_TUTORIAL``);
without it only pipesim's side is timed. It binds the fixed port 29502, so it runs from a
private copy in a temporary directory, one at a time. ``env`` adds to (or with None, removes
from) the inherited environment.
"""

from __future__ import annotations

import contextlib
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

from .common import median

Env = Mapping[str, str | None]


def tutorial_path(given: str | None) -> Path | None:
    """The tutorial script: ``given``, else $PIPESIM_TUTORIAL, else None (comparison skipped).

    Raises FileNotFoundError when a path is given but is not a file.
    """
    text = given or os.environ.get("PIPESIM_TUTORIAL")
    if not text:
        return None
    path = Path(text).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"the tutorial script {path} is not a file")
    return path


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

    def __init__(self, source: Path) -> None:
        self.source = source
        self.dir = ""

    def __enter__(self) -> Tutorial:
        self.dir = tempfile.mkdtemp(prefix="pipesim-tutorial-")
        shutil.copy(self.source, self.dir)
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, str(Path(self.dir) / self.source.name), *args]


def run_startup(runs: int, env: Env, tutorial: Path | None) -> dict[str, Any]:
    """``runs`` interleaved wall times of the default demo, pipesim and (if given) tutorial."""
    walls: dict[str, list[float]] = {"pipesim": [], "tutorial": []}
    with contextlib.ExitStack() as stack:
        tut = stack.enter_context(Tutorial(tutorial)) if tutorial else None
        cwd = tut.dir if tut else stack.enter_context(tempfile.TemporaryDirectory())
        for i in range(runs):
            order = ("pipesim", "tutorial") if i % 2 == 0 else ("tutorial", "pipesim")
            for who in order:
                if who == "pipesim":
                    walls[who].append(timed([*pipesim_command(), "run"], env, cwd=cwd)[0])
                elif tut is not None:
                    walls[who].append(timed(tut.command(), env, cwd=cwd)[0])
    row: dict[str, Any] = {"runs": runs, "env": dict(env), "pipesim_s": median(walls["pipesim"]),
                           "pipesim_all_s": walls["pipesim"]}
    if tut is not None:
        row.update(tutorial_s=median(walls["tutorial"]), tutorial_all_s=walls["tutorial"],
                   ratio=median(walls["pipesim"]) / median(walls["tutorial"]))
    return row


def run_forward_messages(microbatches: int, env: Env, tutorial: Path | None
                         ) -> dict[str, Any]:
    """Forward only, 4 ranks, hidden 64: pipesim's wall and step time, the tutorial's wall."""
    args = ["run", "-w", "4", "--hidden-size", "64", "-m", str(microbatches), "--quiet",
            "--json"]
    wall, out = timed([*pipesim_command(), *args], env, capture=True)
    data = json.loads(out)
    row: dict[str, Any] = {"microbatches": microbatches, "env": dict(env), "pipesim_wall_s": wall,
                           "pipesim_step_s": median(data["step_seconds"])}
    row["pipesim_us_per_microbatch"] = row["pipesim_step_s"] / microbatches * 1e6
    if tutorial is not None:
        with Tutorial(tutorial) as tut:
            row["tutorial_wall_s"] = timed(tut.command("-m", str(microbatches)), env,
                                           cwd=tut.dir)[0]
        row["wall_ratio"] = row["pipesim_wall_s"] / row["tutorial_wall_s"]
    return row
