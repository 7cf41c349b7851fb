"""Feeding a Pipeline: which schedule, the per-step batch checks, and cutting microbatches.

Each step every rank contributes ``[code, a, b, signature]`` to one all-gather: ``code`` is 0 or
the mistake it saw in what it reads (the first stage's rank: inputs; the last stage's: targets),
``a, b`` its numbers, ``signature`` a checksum of the batch's shapes and dtypes (first stage's
rank only). Every rank turns the same gathered headers into the same error, or re-infers shapes
when a signature changed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, ClassVar

import torch

from pipesim.ir import Op, ParseError, Schedule
from pipesim.runtime.agree import PipelineError, crc
from pipesim.runtime.stage import Payload
from pipesim.schedule_io import parse_schedule
from pipesim.schedules import ConfigError, UnknownScheduleError, get_schedule
from pipesim.validate import validate

(_NO_INPUTS, _NOT_DIVISIBLE, _NO_TARGETS, _TARGETS_NOT_DIVISIBLE, _RAGGED, _NOT_TENSORS,
 _TARGETS_NOT_TENSORS) = range(1, 8)


def resolve_schedule(schedule: str | Schedule, ranks: int, microbatches: int | None,
                     virtual_stages: int | None) -> Schedule:
    """A registered name, a schedule file, or a Schedule, checked for ``ranks`` ranks."""
    if isinstance(schedule, Schedule):
        sched = schedule
        if microbatches is not None and microbatches != sched.microbatches:
            raise PipelineError(f"microbatches={microbatches} but the schedule has "
                                f"{sched.microbatches}")
    elif isinstance(schedule, str) and os.path.isfile(schedule):
        try:
            with open(schedule, encoding="utf-8") as fh:
                sched = parse_schedule(fh.read(), name=os.path.basename(schedule))
        except (OSError, UnicodeDecodeError, ParseError) as err:
            raise PipelineError(f"schedule file {schedule}: {err}") from None
        if microbatches is not None and microbatches != sched.microbatches:
            raise PipelineError(f"microbatches={microbatches} but {schedule} has "
                                f"{sched.microbatches}")
    elif isinstance(schedule, str):
        if microbatches is None:
            raise PipelineError(f"schedule {schedule!r} needs microbatches=M")
        try:
            sched = get_schedule(schedule.lower(), ranks, microbatches, virtual_stages)
        except (UnknownScheduleError, ConfigError, ValueError) as err:
            raise PipelineError(str(err)) from None
    else:
        raise PipelineError(f"schedule must be a name, a file or a pipesim.Schedule; got "
                            f"{type(schedule).__name__}")
    if sched.ranks != ranks:
        raise PipelineError(f"the schedule has {sched.ranks} ranks but the job has {ranks} "
                            f"per pipeline (world size / dp)")
    report = validate(sched)
    if not report.ok:
        raise PipelineError(f"the schedule cannot run: {report.errors[0]}")
    return sched


def forward_schedule(schedule: Schedule) -> Schedule:
    """Inference with a training schedule's placement: each rank's forwards, in its order."""
    rows = tuple(tuple(a for a in row if a.op is Op.F) for row in schedule.actions)
    return replace(schedule, actions=rows, name=f"{schedule.name} (forward)", pairs=frozenset())


def _payload(value: Any) -> Payload | None:
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, tuple | list) and value and all(isinstance(v, torch.Tensor)
                                                          for v in value):
        return tuple(value)
    return None


def _batch_size(payload: Payload) -> tuple[int, int] | None:
    """(size, 0) when every member has the same dim 0; (a, b) two sizes that differ; else None."""
    if any(t.dim() == 0 for t in payload):
        return None
    sizes = {int(t.shape[0]) for t in payload}
    if len(sizes) > 1:
        a, b = sorted(sizes)[:2]
        return a, b
    return sizes.pop(), 0


@dataclass(frozen=True)
class BatchCheck:
    WIDTH: ClassVar[int] = 4  # ints in every rank's header (``local``)
    total: int  # microbatches over every replica
    replica: int
    microbatches: int  # per replica

    def local(self, inputs: Any, reads_inputs: bool, targets: Any, reads_targets: bool
              ) -> list[int]:
        """This rank's header: [code, a, b, signature]."""
        signature = 0
        if reads_inputs:
            payload = _payload(inputs)
            if inputs is None:
                return [_NO_INPUTS, 0, 0, 0]
            size = None if payload is None else _batch_size(payload)
            if payload is None or size is None:
                return [_NOT_TENSORS, 0, 0, 0]
            if size[1]:
                return [_RAGGED, size[0], size[1], 0]
            if size[0] % self.total:
                return [_NOT_DIVISIBLE, size[0], self.total, 0]
            signature = crc([(tuple(t.shape), t.dtype) for t in payload])
        if reads_targets:
            if targets is None:
                return [_NO_TARGETS, 0, 0, signature]
            tp = _payload(targets)
            size = None if tp is None else _batch_size(tp)
            if size is None or size[1]:
                return [_TARGETS_NOT_TENSORS, 0, 0, signature]
            if size[0] % self.total:
                return [_TARGETS_NOT_DIVISIBLE, size[0], self.total, signature]
        return [0, 0, 0, signature]

    def error(self, headers: list[list[int]]) -> str | None:
        """The first rank's mistake, worded the same on every rank."""
        for rank, (code, a, b, _) in enumerate(headers):
            if code:
                return f"rank {rank}: " + self._words(code, a, b)
        return None

    def _words(self, code: int, a: int, b: int) -> str:
        split = f"{b} microbatches" + (f" ({b // self.microbatches} replicas x "
                                         f"{self.microbatches})" if b != self.microbatches else "")
        return {
            _NO_INPUTS: "step() got inputs=None on the rank holding the first stage, which "
                        "reads the batch",
            _NOT_DIVISIBLE: f"a batch of {a} samples does not split into {split}; give a batch "
                            f"that is a multiple of {b}",
            _NO_TARGETS: "step() got targets=None on the rank holding the last stage, which "
                         "computes the loss",
            _TARGETS_NOT_DIVISIBLE: f"targets of {a} samples do not split into {split}",
            _RAGGED: f"the inputs' tensors disagree on the batch size (dim 0): {a} and {b}",
            _NOT_TENSORS: "inputs must be a tensor or a tuple of tensors with a batch "
                          "dimension (dim 0)",
            _TARGETS_NOT_TENSORS: "targets must be a tensor or a tuple of tensors with one "
                                  "batch size (dim 0)",
        }[code]


def split_microbatches(value: Any, total: int, replica: int, microbatches: int,
                       keep_single: bool = False) -> list[Any]:
    """This replica's microbatches of ``value`` (a tensor or tuple of tensors, dim 0 = batch):
    payload tuples, or (``keep_single``) the value's own structure per microbatch."""
    payload = _payload(value)
    assert payload is not None
    size = int(payload[0].shape[0]) // total
    out: list[Any] = []
    for i in range(microbatches):
        start = (replica * microbatches + i) * size
        part = tuple(t.narrow(0, start, size) for t in payload)
        out.append(part[0] if keep_single and isinstance(value, torch.Tensor) else part)
    return out


__all__ = ["BatchCheck", "forward_schedule", "resolve_schedule", "split_microbatches"]
