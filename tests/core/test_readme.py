"""README.md is tested: every shell command in its ```sh / ```bash / ```console blocks runs.

How a block is read (so new README sections are picked up with no change here):

- ```sh / ```bash / ```shell: every line is a command; ```console: lines starting with ``$ `` are
  commands, the others their output. A line ending in ``\\`` continues on the next.
- A command runs if it starts with ``pipesim``, ``python``, ``torchrun``, ``make`` or
  ``NAME=value`` assignments before one of those; ``make test``, ``make run`` and ``make
  install`` are not run here (``make run`` is the demo, which tests/runtime runs; the others
  would run this suite or pip). ``$ cat FILE`` followed by output lines writes FILE with them,
  so a block can show the file it then validates.
- Exit status: 0, unless the block shows the command's output starting with ``pipesim: error``
  or ``invalid:``; then it must fail (1 or 2) and print such a line.
- Output: for a pure command (no torch, nothing timed: not ``synthesize``, whose search stops on
  a clock), every line the block shows (but ``...``) must be among the lines it prints, so the
  README's outputs cannot drift from the tool's.
- Blocks run in README order in one scratch directory holding ``examples`` and ``benchmarks``
  (links to the repository's) and an empty ``docs/``, so files one block writes (``costs.json``)
  are there for the next, and the repository's own pictures are never overwritten.
- ``SHORTER`` (below) shortens long runs, as a documented list of text substitutions; the
  command is otherwise run as written.
- A block that imports torch (``pipesim run``/``profile``, ``plan --model``, ``torchrun``,
  ``python examples/``) is in the runtime tier (``-m runtime``); the rest are pure.
- ```python blocks run as scripts in the same directory (runtime tier when they import torch),
  except one that is a file of examples/ verbatim (its own command runs it): that one must stay
  equal to the file.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SHELLS = {"sh", "bash", "shell", "console"}
RUNNABLE = ("pipesim", "python", "torchrun", "make")
NOT_HERE = {"make test", "make run", "make install"}
NEEDS_TORCH = re.compile(r"pipesim (run|profile)\b|plan .*--model|torchrun|python examples/")
# (pattern, replacement): long runs made short; every other flag runs as written
SHORTER: list[tuple[str, str]] = [
    (r"--steps (\d{2,})", "--steps 3"),  # training curves: three steps show the command works
    (r"(pipesim profile .*)", r"\1 --repeats 2 --warmup 1"),
    (r"--predict --plot", "--predict costs.json --plot"),  # the profile block's costs.json
    (r"--stall-timeout 5", "--stall-timeout 2"),
]


class Command(NamedTuple):
    line: int  # README line of the command
    text: str
    output: tuple[str, ...]  # what the README shows it printing


def blocks(text: str) -> list[tuple[int, str, list[str]]]:
    """(first line number, language, lines) of each fenced block."""
    out, lang, start, body = [], None, 0, []
    for number, line in enumerate(text.splitlines(), start=1):
        fence = re.match(r"^```\s*(\S*)", line)
        if fence and lang is None:
            lang, start, body = fence.group(1).lower(), number + 1, []
        elif line.startswith("```") and lang is not None:
            out.append((start, lang, body))
            lang = None
        elif lang is not None:
            body.append(line)
    return out


def commands(start: int, lang: str, lines: list[str]) -> list[Command]:
    """The block's commands with their continuation lines joined and their shown output."""
    found: list[Command] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if lang == "console" and not line.startswith("$ "):
            if found:
                last = found[-1]
                found[-1] = last._replace(output=(*last.output, line))
            i += 1
            continue
        text, first = (line[2:] if lang == "console" else line), i
        while text.rstrip().endswith("\\") and i + 1 < len(lines):
            i += 1
            text = text.rstrip()[:-1] + " " + lines[i].strip()
        text = text.split(" #", 1)[0].strip() if lang != "console" else text.strip()
        if text and not text.startswith("#"):
            found.append(Command(start + first, text, ()))
        i += 1
    return found


def _program(text: str) -> str:
    words = shlex.split(text)
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        words = words[1:]
    return " ".join(words[:2]) if words else ""


def runnable(cmd: Command) -> bool:
    program = _program(cmd.text)
    return (program.split(" ")[0] in RUNNABLE and program not in NOT_HERE) \
        or cmd.text.startswith("cat ")


def readme_commands() -> list[Command]:
    found = []
    for start, lang, lines in blocks(README.read_text(encoding="utf-8")):
        if lang == "" and any(line.startswith("$ ") for line in lines):
            lang = "console"  # an untagged block of commands is run all the same
        if lang in SHELLS:
            found += [c for c in commands(start, lang, lines) if runnable(c)]
    return found


def shortened(text: str) -> str:
    for pattern, replacement in SHORTER:
        text = re.sub(pattern, replacement, text)
    return text


@pytest.fixture(scope="module")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("readme")
    for name in ("examples", "benchmarks"):
        (where / name).symlink_to(ROOT / name)
    (where / "docs").mkdir()
    return where


def _argv(text: str) -> tuple[dict[str, str], list[str]]:
    words = shlex.split(text)
    env = {}
    while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
        key, _, value = words.pop(0).partition("=")
        env[key] = value
    if words[0] == "pipesim":
        words = [sys.executable, "-m", "pipesim", *words[1:]]
    elif words[0] == "python":
        words = [sys.executable, *words[1:]]
    elif words[0] == "torchrun":
        words = [sys.executable, "-m", "torch.distributed.run", *words[1:]]
    return env, words


def _expected_failure(cmd: Command) -> str | None:
    shown = [line for line in cmd.output if line.strip() and line.strip() != "..."]
    for prefix in ("pipesim: error:", "invalid:"):
        if shown and shown[0].startswith(prefix):
            return prefix
    return None


CASES = readme_commands()


def _deterministic(cmd: Command) -> bool:
    """Pure and untimed: its output is a function of its input."""
    return bool(cmd.output) and not NEEDS_TORCH.search(cmd.text) \
        and not re.search(r"pipesim (synthesize|bench)|--time-limit", cmd.text) \
        and cmd.text.startswith("pipesim")


def _param(cmd: Command) -> object:
    marks = [pytest.mark.runtime] if NEEDS_TORCH.search(cmd.text) else []
    return pytest.param(cmd, id=f"L{cmd.line}:{cmd.text[:60]}", marks=marks)


def test_readme_has_command_blocks() -> None:
    assert len(CASES) >= 10, [c.text for c in CASES]


@pytest.mark.parametrize("cmd", [_param(c) for c in CASES])
def test_readme_command_runs(cmd: Command, scratch: Path) -> None:
    if cmd.text.startswith("cat "):  # the block shows a file: write it for what follows
        (scratch / cmd.text.split()[1]).write_text("\n".join(cmd.output) + "\n")
        return
    env, argv = _argv(shortened(cmd.text))
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")} | env
    done = subprocess.run(argv, cwd=scratch, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    shown = f"README.md:{cmd.line}: {cmd.text}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
    failure = _expected_failure(cmd)
    if failure is None:
        assert done.returncode == 0, shown
        if _deterministic(cmd):
            printed = {line.rstrip() for line in (done.stdout + done.stderr).splitlines()}
            missing = [line for line in cmd.output
                       if line.strip() not in ("", "...") and line.rstrip() not in printed]
            assert missing == [], f"{shown}\nshown in README but not printed: {missing}"
    else:
        assert done.returncode in (1, 2), shown
        said = done.stdout if failure == "invalid:" else done.stderr
        assert any(line.startswith(failure) for line in said.splitlines()), shown


def python_blocks() -> list[tuple[int, str]]:
    return [(start, "\n".join(lines) + "\n")
            for start, lang, lines in blocks(README.read_text(encoding="utf-8"))
            if lang == "python"]


EXAMPLES = {p.read_text(encoding="utf-8"): p for p in sorted((ROOT / "examples").glob("*.py"))}


@pytest.mark.parametrize("start, code", [
    pytest.param(start, code, id=f"L{start}",
                 marks=[pytest.mark.runtime] if "import torch" in code else [])
    for start, code in python_blocks()])
def test_readme_python_block_runs(start: int, code: str, scratch: Path) -> None:
    if code in EXAMPLES:
        return  # examples/<file> verbatim: its `python examples/...` command runs it
    path = scratch / f"readme_block_{start}.py"
    path.write_text(code, encoding="utf-8")
    env = os.environ | {"PYTHONPATH": str(ROOT / "src")}
    done = subprocess.run([sys.executable, str(path)], cwd=scratch, env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0, f"README.md:{start}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def test_the_library_example_in_readme_is_the_file() -> None:
    assert (ROOT / "examples" / "own_model.py").read_text(encoding="utf-8") in \
        [code for _, code in python_blocks()]
