"""The schedule as data: ops, actions, schedules, their text/CSV forms and the one dependency rule.

Legend used throughout pipesim:
    p / ranks         processes in the pipeline
    v                 stages per rank ("virtual stages"); stages = p * v
    m / microbatches  units of work per step
    s                 stage index, 0 is the model's first chunk
    F I W B           forward, backward-to-input, backward-to-weights, full backward (I+W)

Text form of an action is the one torch.distributed.pipelining prints: ``2F0`` is stage 2, forward,
microbatch 0. A schedule as text has one rank per line, its actions separated by spaces.

Overlapped pairs (DualPipe's F&B). ``Schedule.pairs`` names pairs ``(first, second)`` of actions
that sit next to each other in one rank's row and run as one unit: a forward, then a backward
(B or I) of another stage or microbatch. Rows stay flat lists of plain Actions, so whatever walks
a row (stash accounting, channel order, views) keeps working and sees the pair as its two parts,
F before B. What changes is when the parts may start and when their outputs leave, torch 2.13's
``OVERLAP_F_B`` semantics: the pair starts once the inputs of *both* parts are in hand
(``start_deps``: the union of the two parts' ``deps``), runs F then B (or both overlapped in
``overlap x (F + B)`` in the simulator), and both outputs leave when the pair ends. A part may not
need the other's output. In text and CSV a pair is one token, torch's ``(2F3;5B1)OVERLAP_F_B``.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import Enum
from functools import cached_property
from typing import NamedTuple


class Op(str, Enum):
    """What an action computes."""

    F = "F"  # forward
    I = "I"  # backward producing the stage input's gradient only  # noqa: E741
    W = "W"  # backward producing the stage weights' gradient only
    B = "B"  # full backward: I and W fused

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__  # Enum's own hash is Python code; actions are hashed in hot loops


# Enum attribute lookup is slow (hundreds of ns); hot paths use these module constants.
_F, _I, _W, _B = Op.F, Op.I, Op.W, Op.B


class Action(NamedTuple):
    """One unit of work: ``op`` on ``stage`` for ``microbatch``. A tuple: cheap to hash."""

    stage: int
    op: Op
    microbatch: int

    def __str__(self) -> str:
        return f"{self.stage}{self.op.value}{self.microbatch}"


class ParseError(ValueError):
    """Text that is not a schedule; carries the 1-based line and column at fault."""

    def __init__(self, message: str, line: int = 0, column: int = 0) -> None:
        where = f"line {line}, column {column}: " if line else ""
        super().__init__(where + message)
        self.line = line
        self.column = column


# ASCII digits only: "\d" would also take other scripts' digits, which torch does not write.
_ACTION_RE = re.compile(r"^([0-9]+)([FIWB])([0-9]+)$")
# torch.distributed.pipelining bookkeeping and communication actions: read and dropped.
_TORCH_ONLY_RE = re.compile(
    r"^[0-9]+(?:REDUCE_GRAD|UNSHARD|RESHARD|SEND_F|RECV_F|SEND_B|RECV_B|BW|R)[0-9]*(?:-[0-9]+)?$"
)
# torch's overlapped F&B pair, e.g. "(0F1;3B0)OVERLAP_F_B": read as its actions in order.
_OVERLAP_RE = re.compile(r"^\((.*)\)OVERLAP_F_B$")
_HEADER_RE = re.compile(
    r"#[ \t]*pipesim schedule (?P<name>[^\n]*?): ranks=(?P<ranks>[0-9]+) "
    r"stages=(?P<stages>[0-9]+) microbatches=(?P<mb>[0-9]+) stage_to_rank=(?P<placement>[0-9,]+)"
)
_UNNAMED = "(unnamed)"  # the header's name for a schedule without one
# the title line of the step grid 'pipesim schedule' prints, so that its output reads back
_GRID_TITLE_RE = re.compile(r"(?P<name>\S+): (?P<ranks>[0-9]+) ranks?, (?P<stages>[0-9]+) "
                            r"stages?, (?P<mb>[0-9]+) microbatch(es)?\b.*$")
_RANK_PREFIX_RE = re.compile(r"\s*(?:rank\s*)?([0-9]+)\s*:")
_MAX_INDEX = 10**6  # a stage or microbatch index beyond this is a typo, not a schedule
_MAX_DIGITS = len(str(_MAX_INDEX))


def _shown(text: str, limit: int = 40) -> str:
    """A token quoted for an error message, cut short if long."""
    token = text.strip()
    return repr(token if len(token) <= limit else token[:limit] + "...")


def parse_action(text: str) -> Action:
    """``"2F0"`` -> ``Action(2, Op.F, 0)``; raises ParseError for anything else."""
    match = _ACTION_RE.match(text.strip())
    if not match:
        raise ParseError(f"{_shown(text)} is not an action (expected e.g. 2F0, 1I3, 1W3, 0B5)")
    digits = (match.group(1), match.group(3))
    # check the length before int(): int() of thousands of digits is slow, then refused
    if any(len(d.lstrip("0")) > _MAX_DIGITS for d in digits):
        raise ParseError(f"{_shown(text)}: index larger than {_MAX_INDEX}")
    stage, mb = int(digits[0]), int(digits[1])
    if stage > _MAX_INDEX or mb > _MAX_INDEX:
        raise ParseError(f"{_shown(text)}: index larger than {_MAX_INDEX}")
    return Action(stage, Op(match.group(2)), mb)


def format_action(action: Action) -> str:
    """``Action(2, Op.F, 0)`` -> ``"2F0"``."""
    return str(action)


@dataclass(frozen=True)
class Schedule:
    """Per rank, the ordered actions it runs; ``stage_to_rank[s]`` is the rank holding stage s."""

    ranks: int
    stages: int
    microbatches: int
    stage_to_rank: tuple[int, ...]
    actions: tuple[tuple[Action, ...], ...]
    name: str = field(default="", compare=False)
    # overlapped pairs (first, second): adjacent on one rank, run as one unit (module docstring)
    pairs: frozenset[tuple[Action, Action]] = frozenset()

    def __post_init__(self) -> None:
        if self.ranks < 1 or self.stages < 1 or self.microbatches < 1:
            raise ValueError("ranks, stages and microbatches must all be >= 1")
        if len(self.stage_to_rank) != self.stages:
            raise ValueError(
                f"stage_to_rank has {len(self.stage_to_rank)} entries for {self.stages} stages"
            )
        if len(self.actions) != self.ranks:
            raise ValueError(f"actions has {len(self.actions)} rows for {self.ranks} ranks")
        if not isinstance(self.pairs, frozenset):  # any iterable of pairs; stored hashable
            object.__setattr__(self, "pairs", frozenset(self.pairs))

    def stages_of(self, rank: int) -> tuple[int, ...]:
        """The stages held by ``rank``, in stage order."""
        return tuple(s for s, r in enumerate(self.stage_to_rank) if r == rank)

    @property
    def num_actions(self) -> int:
        return sum(len(row) for row in self.actions)

    @cached_property
    def split_backward(self) -> frozenset[tuple[int, int]]:
        """(stage, microbatch) pairs whose backward is split into I and W."""
        return frozenset(
            (a.stage, a.microbatch) for row in self.actions for a in row if a.op is Op.I
        )

    @cached_property
    def forward_only(self) -> bool:
        """True for inference schedules: no backward action at all."""
        return all(a.op is Op.F for row in self.actions for a in row)

    @cached_property
    def partner(self) -> dict[Action, Action]:
        """Each part of an overlapped pair -> the other part (empty without pairs)."""
        out: dict[Action, Action] = {}
        for first, second in self.pairs:
            out[first], out[second] = second, first
        return out

    def input_grad_action(self, stage: int, microbatch: int) -> Action:
        """The action that produces stage's input gradient: its I if split, else its B."""
        op = Op.I if (stage, microbatch) in self.split_backward else Op.B
        return Action(stage, op, microbatch)


# The one memory rule: what each op does to the activations a stage keeps for backward.
# F stashes them; B frees them; when the backward is split, I keeps them (the weight gradient
# still needs the stage's inputs) and W frees them. Walked by timeline.peak_stash alone.
STASH_DELTA: dict[Op, int] = {Op.F: 1, Op.I: 0, Op.W: -1, Op.B: -1}

ActionKey = tuple[int, Op, int]  # a plain (stage, op, microbatch) tuple; equal to its Action


def dep_keys(stage: int, op: Op, microbatch: int, schedule: Schedule) -> tuple[ActionKey, ...]:
    """The single dependency rule: what must finish before (stage, op, microbatch) may start.

    F(s)   after F(s-1)
    I/B(s) after F(s) and after the input-gradient action (I or B) of s+1
    W(s)   after I(s)

    Plain tuples (equal to and hashing like Actions) so hot loops need not build objects;
    ``deps`` gives the same as Actions.
    """
    if op is _F:
        return ((stage - 1, _F, microbatch),) if stage > 0 else ()
    if op is _W:
        return ((stage, _I, microbatch),)
    if stage + 1 < schedule.stages:
        nxt = _I if (stage + 1, microbatch) in schedule.split_backward else _B
        return ((stage, _F, microbatch), (stage + 1, nxt, microbatch))
    return ((stage, _F, microbatch),)


def deps(action: Action, schedule: Schedule) -> tuple[Action, ...]:
    """``dep_keys`` for an Action, as Actions."""
    return tuple(Action(*k) for k in dep_keys(*action, schedule))


def start_deps(action: Action, schedule: Schedule) -> tuple[Action, ...]:
    """What must finish before ``action`` may start: its ``deps``, and for a part of an
    overlapped pair the union of both parts' deps (the pair starts as one unit). The pair's own
    parts are left out (a part that needs the other is an invalid pair; ``validate`` says so)."""
    other = schedule.partner.get(action) if schedule.pairs else None
    if other is None:
        return deps(action, schedule)
    both = (*deps(action, schedule), *(d for d in deps(other, schedule)
                                      if d not in deps(action, schedule)))
    return tuple(d for d in both if d != action and d != other)


def crosses_ranks(producer: Action, consumer: Action, schedule: Schedule) -> bool:
    """True when a dependency edge is a message between two ranks (not the turn of a V)."""
    return schedule.stage_to_rank[producer.stage] != schedule.stage_to_rank[consumer.stage]


# ----------------------------------------------------------------------------- reading


def infer_stage_to_rank(rows: Sequence[Sequence[Action]], stages: int) -> tuple[int, ...]:
    """Each stage goes to the rank that runs most of its actions (ties: most of its forwards,
    then the lower rank), so one misplaced action is blamed, not the many placed right."""
    votes: dict[int, dict[int, tuple[int, int]]] = {}
    for rank, row in enumerate(rows):
        for a in row:
            count, forwards = votes.setdefault(a.stage, {}).get(rank, (0, 0))
            votes[a.stage][rank] = (count + 1, forwards + (a.op is Op.F))
    missing = [s for s in range(stages) if s not in votes]
    if missing:
        raise ParseError(f"stage {missing[0]} has no action on any rank")
    return tuple(max(votes[s], key=lambda r: (*votes[s][r], -r)) for s in range(stages))


def schedule_from_rows(
    rows: Sequence[Sequence[Action]],
    name: str = "",
    stages: int | None = None,
    microbatches: int | None = None,
    stage_to_rank: Sequence[int] | None = None,
    pairs: Iterable[tuple[Action, Action]] = (),
) -> Schedule:
    """Build a Schedule from per-rank action lists, inferring what is not given."""
    if not rows:
        raise ParseError("the schedule has no ranks")
    everything = [a for row in rows for a in row]
    if not everything and (stages is None or microbatches is None):
        raise ParseError("the schedule has no actions")
    n_stages = stages if stages is not None else max(a.stage for a in everything) + 1
    n_mb = microbatches if microbatches is not None else max(a.microbatch for a in everything) + 1
    placement = (
        tuple(stage_to_rank) if stage_to_rank is not None
        else infer_stage_to_rank(rows, n_stages)
    )
    try:
        return Schedule(len(rows), n_stages, n_mb, placement, tuple(tuple(r) for r in rows), name,
                        frozenset(pairs))
    except ValueError as err:
        raise ParseError(str(err)) from None


def _parse_cells(cells: Iterable[tuple[str, int]], line: int,
                 pairs: list[tuple[Action, Action]]) -> list[Action]:
    """One rank's actions; each overlapped pair ``(F;B)OVERLAP_F_B`` also goes to ``pairs``."""
    row: list[Action] = []
    for cell, column in cells:
        token = cell.strip()
        if token in ("", ".", "-", "None") or _TORCH_ONLY_RE.match(token):
            continue
        overlap = _OVERLAP_RE.match(token)
        parts = overlap.group(1).split(";") if overlap else [token]
        try:
            if overlap and len(parts) != 2:
                raise ParseError(f"{_shown(token)}: an overlapped pair holds two actions, "
                                 "e.g. (2F3;5B1)OVERLAP_F_B")
            actions = [parse_action(part) for part in parts]
        except ParseError as err:
            raise ParseError(str(err), line, column) from None
        if overlap:
            pairs.append((actions[0], actions[1]))
        row.extend(actions)
    return row


def parse_text(text: str, name: str = "") -> Schedule:
    """One rank per line, actions separated by whitespace; ``#`` starts a comment.

    A line may start with ``rank N:`` (N must be the line's rank); ``.`` marks an idle step and
    is skipped, so a rank with no actions is a line holding only ``.``. A ``# pipesim schedule``
    header (``format_text`` writes one) fixes the sizes and the placement.
    """
    rows: list[list[Action]] = []
    pairs: list[tuple[Action, Action]] = []
    title = None
    for line_no, raw in enumerate(text.splitlines(), start=1):
        content = raw.split("#", 1)[0]
        if not content.strip():
            continue
        if not rows and title is None and (title := _GRID_TITLE_RE.fullmatch(content.strip())):
            continue  # the grid's title: "zb-h1: 4 ranks, 4 stages, 4 microbatches (...)"
        prefix = _RANK_PREFIX_RE.match(content)
        offset = prefix.end() if prefix else 0
        if prefix and int(prefix.group(1)) != len(rows):
            raise ParseError(f"this line is labelled rank {prefix.group(1)}, but it is the line "
                             f"of rank {len(rows)} (list the ranks in order, from 0)",
                             line_no, prefix.start(1) + 1)
        cells = [(m.group(0), m.start() + 1) for m in re.finditer(r"[^\s,]+", content)
                 if m.start() >= offset]
        rows.append(_parse_cells(cells, line_no, pairs))
    header = _HEADER_RE.search(text)
    if header is None and title is not None:
        return schedule_from_rows(rows, name or title.group("name"), int(title.group("stages")),
                                  int(title.group("mb")), pairs=pairs)
    if header is None:
        return schedule_from_rows(rows, name, pairs=pairs)
    header_line = text.count("\n", 0, header.start()) + 1
    placement = tuple(int(r) for r in header.group("placement").split(",") if r)
    if len(rows) != int(header.group("ranks")) or len(placement) != int(header.group("stages")):
        raise ParseError(
            f"the header says ranks={header.group('ranks')} stages={header.group('stages')} "
            f"but there are {len(rows)} rank lines and {len(placement)} stage_to_rank entries",
            header_line, 1)
    header_name = header.group("name").strip()
    return schedule_from_rows(
        rows, name or ("" if header_name == _UNNAMED else header_name),
        int(header.group("stages")), int(header.group("mb")), placement, pairs,
    )


def parse_csv(text: str, name: str = "") -> Schedule:
    """torch.distributed.pipelining's ``_dump_csv`` layout: one row per rank, one cell per step.

    As torch reads it, every row is a rank, an empty row too (a rank with no actions); empty
    rows after the last rank are dropped, and rows whose first cell starts with ``#`` skipped.
    """
    rows: list[list[Action]] = []
    pairs: list[tuple[Action, Action]] = []
    reader = csv.reader(io.StringIO(text))
    try:
        for line_no, record in enumerate(reader, start=1):
            if record and record[0].lstrip().startswith("#"):
                continue
            columns = [sum(len(c) + 1 for c in record[:i]) + 1 for i in range(len(record))]
            rows.append(_parse_cells(zip(record, columns, strict=True), line_no, pairs))
    except csv.Error as err:
        raise ParseError(f"not CSV: {err}", reader.line_num, 1) from None
    while rows and not rows[-1]:
        rows.pop()
    return schedule_from_rows(rows, name, pairs=pairs)


def detect_format(text: str) -> str:
    """'csv' when the first non-comment line has commas (but is no grid title), else 'text'."""
    for raw in text.splitlines():
        content = raw.split("#", 1)[0].strip()
        if content:
            return "csv" if "," in content and not _GRID_TITLE_RE.fullmatch(content) else "text"
    return "text"


def parse_schedule(text: str, fmt: str = "auto", name: str = "") -> Schedule:
    """Parse text or CSV (``fmt`` 'text', 'csv' or 'auto')."""
    if fmt == "auto":
        fmt = detect_format(text)
    if fmt == "csv":
        return parse_csv(text, name)
    if fmt == "text":
        return parse_text(text, name)
    raise ValueError(f"unknown schedule format {fmt!r}; valid: auto, text, csv")


# ----------------------------------------------------------------------------- writing


def format_text(schedule: Schedule) -> str:
    """One rank per line; a comment header records the sizes and placement."""
    name = " ".join(schedule.name.split()) or _UNNAMED  # one line, whatever the name holds
    header = (
        f"# pipesim schedule {name}: ranks={schedule.ranks} "
        f"stages={schedule.stages} microbatches={schedule.microbatches} "
        f"stage_to_rank={','.join(map(str, schedule.stage_to_rank))}"
    )
    lines = [" ".join(row_tokens(schedule, row)) or "." for row in schedule.actions]
    return "\n".join([header, *lines]) + "\n"


def format_csv(schedule: Schedule) -> str:
    """One row per rank, one action per cell, as torch's ``_load_csv`` reads it."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for row in schedule.actions:
        writer.writerow(row_tokens(schedule, row))
    return out.getvalue()


def row_tokens(schedule: Schedule, row: Sequence[Action]) -> list[str]:
    """A row's text cells: one per action, one per overlapped pair (torch's form)."""
    if not schedule.pairs:
        return [str(a) for a in row]
    out: list[str] = []
    i = 0
    while i < len(row):
        a = row[i]
        if i + 1 < len(row) and (a, row[i + 1]) in schedule.pairs:
            out.append(f"({a};{row[i + 1]})OVERLAP_F_B")
            i += 2
        else:
            out.append(str(a))
            i += 1
    return out


__all__ = [
    "STASH_DELTA",
    "Action",
    "ActionKey",
    "Op",
    "ParseError",
    "Schedule",
    "crosses_ranks",
    "dep_keys",
    "deps",
    "detect_format",
    "format_action",
    "format_csv",
    "format_text",
    "infer_stage_to_rank",
    "parse_action",
    "parse_csv",
    "parse_schedule",
    "parse_text",
    "row_tokens",
    "schedule_from_rows",
    "start_deps",
]
