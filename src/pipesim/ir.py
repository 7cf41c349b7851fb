"""The schedule as data: ops, actions, schedules and the one dependency rule (text/CSV forms:
``pipesim.schedule_io``).

Legend used throughout pipesim:
    p / ranks         processes in the pipeline
    v                 stages per rank ("virtual stages"); stages = p * v
    m / microbatches  units of work per step
    s                 stage index, 0 is the model's first chunk
    F I W B           forward, backward-to-input, backward-to-weights, full backward (I+W)

Text form of an action is the one torch.distributed.pipelining prints: ``2F0`` is stage 2, forward,
microbatch 0. A schedule as text has one rank per line, its actions separated by spaces.

Overlapped pairs (DualPipe's F&B). ``Schedule.pairs`` names pairs ``(first, second)`` of actions
that sit next to each other in one rank's row and end together: a forward, then a backward
(B or I) of another stage or microbatch. Rows stay flat lists of plain Actions, so whatever walks
a row (stash accounting, channel order, views) keeps working and sees the pair as its two parts,
F before B. What changes is when the parts may run and when their outputs leave: both outputs
leave when the pair ends (torch 2.13's ``OVERLAP_F_B`` sends after both parts). On a CPU the
parts run one after the other, each once its own input is in (torch's runtime waits for each
part's receive at that part; so does pipesim's engine); overlapped (the simulator's ``overlap``
< 1, DeepSeek's DualPipe on a GPU) the pair is one unit that starts once the inputs of *both*
parts are in (``start_deps``, the union of the two parts' ``deps``). Whether a schedule can
deadlock is the same either way: the pair ends once both parts' inputs are in. A part may not
need the other's output. In text and CSV a pair is one token, torch's ``(2F3;5B1)OVERLAP_F_B``.
"""

from __future__ import annotations

import re
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
    # overlapped pairs (first, second): adjacent on one rank, ending together (module docstring)
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
    overlapped pair the union of both parts' deps (the pair as one unit, which is also what
    it needs to end). The pair's own
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
    "format_action",
    "parse_action",
    "start_deps",
]
