"""One vocabulary for every subcommand: each size and schedule flag is defined here, once.

    NAME / --schedule NAME      the schedule (either; both must agree; case-insensitive)
    -p/--ranks P                ranks of one pipeline
    --dp D                      pipeline replicas (data parallel)
    -w/--world-size N           all processes, N = P x D: give any two, the third follows
    -m/--microbatches M         microbatches per step (--num-microbatches: the tutorial's name)
    -b/--batch-size B           samples per microbatch; --batch is the global batch
    -v/--virtual-stages V       stages per rank (interleaved schedules)

A flag given twice with different values (``-m 2 --num-microbatches 4``, ``gpipe --schedule
1f1b``) is an error naming both; ``resolve_sizes`` says which of P, D and N were given and
checks that they agree.
"""

from __future__ import annotations

import argparse
from typing import Any, NamedTuple

from pipesim.ranks import available_cores

__all__ = [
    "DEFAULT_MICROBATCHES",
    "DEFAULT_RANKS",
    "Sizes",
    "VocabError",
    "add_batch_size",
    "add_microbatches",
    "add_ranks",
    "add_schedule_name",
    "bytes_arg",
    "int_list",
    "positive_int",
    "resolve_microbatches",
    "resolve_name",
    "resolve_sizes",
    "schedule_names",
    "warn_oversubscribed",
]

DEFAULT_RANKS = 4  # pipeline ranks when neither -p nor -w (with --dp) says otherwise
DEFAULT_MICROBATCHES = 4  # the tutorial's; one default for every command


class VocabError(ValueError):
    """Flags that contradict each other; the commands turn it into a UserError."""


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (the one owner of this check in commands/)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def bytes_arg(text: str) -> int:
    """argparse type: a size in bytes, ``2GB``, ``512MiB`` or ``1000000`` (``units``)."""
    from pipesim.units import parse_bytes
    try:
        return parse_bytes(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers >= 1, e.g. ``2,3,3,2``."""
    try:
        return [positive_int(x.strip()) for x in text.split(",")]
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers "
                                         f">= 1 ({err})") from None


def schedule_names(text: str) -> list[str]:
    """argparse type: comma-separated schedule names, lower-cased (torch spells ``1F1B``)."""
    return [x.strip().lower() for x in text.split(",") if x.strip()]


class _Once(argparse.Action):
    """Store a value; the same flag (or an alias) given again with another value is an error."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                 values: Any, option_string: str | None = None) -> None:
        seen: dict[str, tuple[str, Any]] = namespace.__dict__.setdefault("_given", {})
        if self.dest in seen and seen[self.dest][1] != values:
            flag, value = seen[self.dest]
            parser.error(f"{flag} {value} and {option_string} {values} say different things; "
                         f"give one")
        seen[self.dest] = (option_string or self.dest, values)
        setattr(namespace, self.dest, values)


def add_schedule_name(parser: argparse.ArgumentParser, default: str | None = None,
                      what: str = "the schedule") -> None:
    """The positional NAME and ``--schedule NAME``: the same thing, either way."""
    parser.add_argument("name", nargs="?", metavar="NAME", type=str.lower, default=None,
                        help=f"{what}: a registered schedule (see 'pipesim schedule --list'), "
                             f"any case" + (f"; default {default}" if default else ""))
    parser.add_argument("--schedule", dest="schedule_opt", metavar="NAME", type=str.lower,
                        action=_Once, default=None, help="the same as NAME")
    parser.set_defaults(schedule_default=default)


def resolve_name(args: argparse.Namespace) -> str | None:
    """NAME or --schedule (equal if both given), else the command's default."""
    name, opt = getattr(args, "name", None), getattr(args, "schedule_opt", None)
    if name and opt and name != opt:
        raise VocabError(f"NAME {name} and --schedule {opt} say different things; give one")
    return name or opt or getattr(args, "schedule_default", None)


def add_ranks(parser: Any, dp: bool = True, world: bool = True) -> None:
    """-p/--ranks, and (where the command has replicas) --dp and -w/--world-size."""
    parser.add_argument("-p", "--ranks", type=positive_int, action=_Once, default=None,
                        help=f"ranks of one pipeline (default {DEFAULT_RANKS}, or -w / --dp)")
    if world:
        parser.add_argument("-w", "--world-size", type=positive_int, action=_Once,
                            default=None, metavar="N",
                            help="all processes: ranks x replicas (give any two of -p, --dp, -w)"
                            if dp else "all processes; without --dp the same as -p")
    if dp:
        parser.add_argument("--dp", type=positive_int, action=_Once, default=None, metavar="D",
                            help="data-parallel pipeline replicas (default 1)")


def add_microbatches(parser: Any, default: int | None = DEFAULT_MICROBATCHES) -> None:
    """-m/--microbatches (alias --num-microbatches, the tutorial's spelling)."""
    parser.add_argument("-m", "--microbatches", "--num-microbatches", dest="microbatches",
                        type=positive_int, action=_Once, default=None, metavar="M",
                        help="microbatches per step"
                             + (f" (default {default})" if default else ""))
    parser.set_defaults(microbatches_default=default)


def add_batch_size(parser: Any, default: int | None, text: str = "samples per microbatch",
                   dest: str = "batch_size", aliases: tuple[str, ...] = ()) -> None:
    """-b/--batch-size: samples per microbatch, everywhere (``--batch`` is the global batch)."""
    parser.add_argument("-b", "--batch-size", *aliases, dest=dest, type=positive_int,
                        action=_Once, default=default, metavar="B",
                        help=text + (f" (default {default})" if default else ""))


def resolve_microbatches(args: argparse.Namespace) -> int:
    value = args.microbatches if args.microbatches is not None else args.microbatches_default
    return int(value)


class Sizes(NamedTuple):
    """Ranks of one pipeline, replicas, and all processes (= ranks x replicas)."""

    ranks: int
    dp: int
    world: int


def resolve_sizes(ranks: int | None, dp: int | None, world: int | None,
                  fixed_ranks: int | None = None, fixed_from: str = "") -> Sizes:
    """Any two of P, D, N give the third; all three must agree; P defaults to DEFAULT_RANKS.

    ``fixed_ranks``: P is already known (a schedule file's rank count, ``fixed_from``), and any
    flag must agree with it.
    """
    if fixed_ranks is not None:
        if ranks is not None and ranks != fixed_ranks:
            raise VocabError(f"-p {ranks} and {fixed_from} ({fixed_ranks} ranks) say different "
                             f"things; give one")
        ranks = fixed_ranks
    if ranks is not None and dp is not None and world is not None and ranks * dp != world:
        raise VocabError(f"-w {world} and -p {ranks} x --dp {dp} = {ranks * dp} say different "
                         f"things (-w counts all processes: ranks x replicas)")
    if world is not None and ranks is None:
        d = dp or 1
        if world % d:
            raise VocabError(f"--dp {d} does not divide -w {world} processes into equal "
                             f"pipelines")
        return Sizes(world // d, d, world)
    if world is not None and ranks is not None:
        if world % ranks:
            raise VocabError(f"-p {ranks} does not divide -w {world} processes into equal "
                             f"pipelines (-w counts ranks x replicas)")
        return Sizes(ranks, world // ranks, world)
    p, d = ranks or DEFAULT_RANKS, dp or 1
    return Sizes(p, d, p * d)


def warn_oversubscribed(processes: int, cpus: int | None = None) -> str | None:
    """One line when more processes than CPUs will share them, else None."""
    cpus = cpus if cpus is not None else available_cores()
    if processes <= cpus:
        return None
    return (f"pipesim: warning: {processes} processes on {cpus} CPU cores: ranks take turns on "
            f"the cores, and much of the measured bubble is waiting for a core")
