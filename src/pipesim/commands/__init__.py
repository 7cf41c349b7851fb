"""Subcommands of the ``pipesim`` CLI, one module each, plus what they share."""

from __future__ import annotations

import argparse
import json
import os
import pkgutil
import sys
from typing import Any

from pipesim import fileio
from pipesim.commands._vocab import (
    Sizes,
    VocabError,
    add_microbatches,
    add_ranks,
    add_schedule_name,
    int_list,
    positive_int,
    resolve_microbatches,
    resolve_name,
    resolve_sizes,
    warn_oversubscribed,
)
from pipesim.ir import ParseError, Schedule
from pipesim.schedule_io import parse_schedule
from pipesim.schedules import ConfigError, UnknownScheduleError, get_schedule

# Subcommand modules found in this package, in this order first. Each defines register(subparsers).
_ORDER = ["run", "schedule", "validate", "simulate", "compare", "synthesize", "profile", "plan"]
_FOUND = [m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_")]
COMMANDS = sorted(_FOUND, key=lambda n: (_ORDER.index(n) if n in _ORDER else len(_ORDER), n))


__all__ = ["COMMANDS", "UserError", "add_schedule_args", "dump_json", "int_list",
           "load_schedule", "non_negative_float", "positive_float", "positive_int", "read_text",
           "schedule_from_args", "warn_oversubscribed", "write_atomic", "wrote"]


class UserError(Exception):
    """A mistake of the user's: printed as one line, exit ``code`` (2 unless said)."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


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


def wrote(path: str, what: str) -> None:
    """One line on stderr naming a file just written (stdout stays the report or the JSON)."""
    print(f"wrote {path} ({what})", file=sys.stderr)


def write_atomic(path: str, data: str | bytes) -> None:
    """``fileio.write_atomic``, its failures as one clear line (UserError)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise UserError(f"cannot write {path}: directory {directory} does not exist")
    try:
        fileio.write_atomic(path, data)
    except OSError as err:
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


def add_schedule_args(parser: argparse.ArgumentParser, dp: bool = False,
                      default_name: str | None = None) -> None:
    """NAME/--schedule, -p, -w (and --dp), -m, -v, or --file: the ways to name a schedule."""
    add_schedule_name(parser, default_name)
    add_ranks(parser, dp=dp)
    add_microbatches(parser)
    parser.add_argument("-v", "--virtual-stages", type=positive_int, default=None,
                        help="stages per rank for interleaved schedules (default 2)")
    parser.add_argument("--file", help="read a hand-written schedule (text, CSV or the grid "
                                       "'pipesim schedule' prints) instead; its rank count is "
                                       "the pipeline's")
    parser.add_argument("--format", dest="file_format", choices=["auto", "text", "csv"],
                        default="auto", help="format of --file (default: detect)")


def schedule_from_args(args: argparse.Namespace) -> Schedule:
    """The schedule named on the command line, or read from --file; UserError on mistakes.

    Afterwards ``args.ranks``, ``args.dp`` and ``args.world_size`` hold the resolved sizes
    (any two of -p, --dp, -w give the third; a file's rank count is -p).
    """
    try:
        return _schedule_from_args(args)
    except VocabError as err:
        raise UserError(str(err)) from None


def _schedule_from_args(args: argparse.Namespace) -> Schedule:
    explicit = args.name or args.schedule_opt
    name = resolve_name(args)
    dp, world = getattr(args, "dp", None), getattr(args, "world_size", None)
    if args.file:
        if explicit:
            raise UserError(f"give a schedule NAME or --file, not both ({explicit} and "
                            f"--file {args.file})")
        sched = load_schedule(args.file, args.file_format)
        _set_sizes(args, resolve_sizes(args.ranks, dp, world, sched.ranks,
                                       f"--file {args.file}"))
        for flag, given, actual in (("-m", args.microbatches, sched.microbatches),
                                    ("-v", args.virtual_stages, sched.stages // sched.ranks)):
            if given is not None and given != actual:
                raise UserError(f"{flag} {given} and --file {args.file} ({actual}) say "
                                f"different things; give one")
        return sched
    if not name:
        raise UserError("name a schedule (e.g. 1f1b) or give --file")
    sizes = resolve_sizes(args.ranks, dp, world)
    _set_sizes(args, sizes)
    try:
        return get_schedule(name, sizes.ranks, resolve_microbatches(args), args.virtual_stages)
    except (UnknownScheduleError, ConfigError) as err:
        raise UserError(str(err)) from None


def _set_sizes(args: argparse.Namespace, sizes: Sizes) -> None:
    args.ranks, args.world_size = sizes.ranks, sizes.world
    if hasattr(args, "dp"):
        args.dp = sizes.dp


def load_schedule(path: str, fmt: str = "auto") -> Schedule:
    text = read_text(path, "schedule file")
    try:
        return parse_schedule(text, fmt, name=os.path.basename(path))
    except (ParseError, ValueError) as err:
        raise UserError(f"{path}: {err}") from None


__all__ = [
    "COMMANDS", "UserError", "add_schedule_args", "dump_json", "load_schedule",
    "non_negative_float", "positive_float", "positive_int", "read_text", "schedule_from_args",
    "write_atomic"
]
