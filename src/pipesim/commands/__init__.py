"""Subcommands of the ``pipesim`` CLI, one module each, plus what they share."""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
import tempfile
from typing import Any

from pipesim.ir import ParseError, Schedule, parse_schedule
from pipesim.schedules import ConfigError, UnknownScheduleError, get_schedule

# Subcommand modules found in this package, in this order first. Each defines register(subparsers).
_ORDER = ["run", "schedule", "validate", "simulate", "compare", "profile", "plan"]
_FOUND = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
COMMANDS = sorted(_FOUND, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


class UserError(Exception):
    """A mistake of the user's: printed as one line, exit ``code`` (2 unless said)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def positive_float(text: str) -> float:
    """argparse type: a number > 0 (``inf`` allowed: no limit)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return value


def non_negative_float(text: str) -> float:
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


def write_atomic(path: str, data: str | bytes) -> None:
    """Write to a temporary file beside ``path``, then rename: never a half-written file."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UserError(f"cannot write {path}: directory {directory} does not exist")
    mode = "wb" if isinstance(data, bytes) else "w"
    fd, tmp = tempfile.mkstemp(prefix=".pipesim-", dir=directory)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # mkstemp makes 0600; a normal file is wanted
        with os.fdopen(fd, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as err:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise UserError(f"cannot write {path}: {err.strerror}") from None


_MAX_INPUT = 64 * 1024 * 1024  # characters read from a user's file


def read_text(path: str, what: str = "file") -> str:
    """Read a user's text file, turning every failure into one clear line."""
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read(_MAX_INPUT + 1)
        if len(text) > _MAX_INPUT:
            raise UserError(f"{what} {path} is larger than {_MAX_INPUT // 2**20} MiB")
        return text
    except FileNotFoundError:
        raise UserError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise UserError(f"{what} {path} is a directory") from None
    except UnicodeDecodeError:
        raise UserError(f"{what} {path} is not UTF-8 text") from None
    except OSError as err:
        raise UserError(f"cannot read {what} {path}: {err.strerror}") from None


def dump_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False)


def add_schedule_args(parser: argparse.ArgumentParser, name_required: bool = False) -> None:
    """NAME -p -m -v, or --file: the ways to name a schedule."""
    parser.add_argument("name", nargs=None if name_required else "?", metavar="NAME",
                        help="a registered schedule (see 'pipesim schedule --list')")
    parser.add_argument("-p", "--ranks", type=positive_int, default=4,
                        help="pipeline ranks (default 4)")
    parser.add_argument("-m", "--microbatches", type=positive_int, default=4,
                        help="microbatches per step (default 4)")
    parser.add_argument("-v", "--virtual-stages", type=positive_int, default=None,
                        help="stages per rank for interleaved schedules (default 2)")
    parser.add_argument("--file", help="read a hand-written schedule (text or CSV) instead")
    parser.add_argument("--format", dest="file_format", choices=["auto", "text", "csv"],
                        default="auto", help="format of --file (default: detect)")


def schedule_from_args(args: argparse.Namespace) -> Schedule:
    """The schedule named on the command line, or read from --file; UserError on mistakes."""
    if args.file:
        if args.name:
            raise UserError("give a schedule NAME or --file, not both")
        return load_schedule(args.file, args.file_format)
    if not args.name:
        raise UserError("name a schedule (e.g. 1f1b) or give --file")
    try:
        return get_schedule(args.name, args.ranks, args.microbatches, args.virtual_stages)
    except (UnknownScheduleError, ConfigError) as err:
        raise UserError(str(err)) from None


def load_schedule(path: str, fmt: str = "auto") -> Schedule:
    text = read_text(path, "schedule file")
    try:
        return parse_schedule(text, fmt, name=os.path.basename(path))
    except (ParseError, ValueError) as err:
        raise UserError(f"{path}: {err}") from None
