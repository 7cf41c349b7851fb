"""The ``pipesim`` command line. Only this module (and commands/) prints.

Each subcommand lives in ``pipesim.commands.<name>`` with ``register(subparsers)``; a user's
mistake raises UserError (exit 2, one line), an invalid schedule exits 1.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import sys
from collections.abc import Sequence

from pipesim.commands import COMMANDS, UserError

_EXIT_USAGE = 2
_LONG_LIVED = {"run", "profile"}  # commands that train models keep the GC on


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line and exits 2 (its default, kept)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(_EXIT_USAGE, f"pipesim: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="pipesim", description="Run, simulate, see and plan pipeline "
                     "parallelism for PyTorch models.")
    parser.add_argument("--version", action="version", version="pipesim 0.1.0")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        module = importlib.import_module(f"pipesim.commands.{name}")
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return _EXIT_USAGE
    gc_was_on = gc.isenabled()
    if args.command not in _LONG_LIVED:
        # a short-lived command over up to millions of small tuples: the cyclic GC would
        # rescan them again and again (2-3x the run time at cluster scale) and frees nothing
        gc.disable()
    try:
        code: int = args.func(args)
    except UserError as err:
        print(f"pipesim: error: {err}", file=sys.stderr)
        return err.code
    except KeyboardInterrupt:
        print("pipesim: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        if gc_was_on:
            gc.enable()
    return code


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["build_parser", "main"]
