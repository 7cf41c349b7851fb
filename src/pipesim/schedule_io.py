"""Schedules as text and CSV, read and written: torch.distributed.pipelining's forms.

Text: one rank per line (``rank N:`` optional), actions separated by spaces, ``.`` an idle step,
``#`` a comment; a ``# pipesim schedule`` header (``format_text`` writes one) fixes the sizes and
the placement; the step grid ``pipesim schedule`` prints reads back too. CSV: one row per rank,
torch's ``_dump_csv``/``_load_csv`` form. An overlapped pair is one token,
``(2F3;5B1)OVERLAP_F_B`` (see ``pipesim.ir``). Every failure is a ParseError with its line and
column.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence

from pipesim.ir import Action, Op, ParseError, Schedule, _shown, parse_action

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
    "detect_format",
    "format_csv",
    "format_text",
    "infer_stage_to_rank",
    "parse_csv",
    "parse_schedule",
    "parse_text",
    "row_tokens",
    "schedule_from_rows",
]
