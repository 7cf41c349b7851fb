"""pipesim's schedules against torch.distributed.pipelining's, through the CSV both tools write.

No GPU and no process group: torch builds a schedule's action lists from stage objects, which
are mocks here (as torch's own ``_schedule_visualizer.get_schedule_ops`` does).

What this found on torch 2.13 (see each test):
- DualPipeV, ZBVZeroBubble: identical to ours, action for action.
- Interleaved1F1B (2+ stages per rank): identical; both reject the same microbatch counts.
  With 1 stage per rank torch keeps its interleaved warm-up, 2*(p-1-r) forwards; ours is 1F1B
  (p-1-r). Both valid; torch's stashes up to 2*(p-r)-1 activations instead of p-r.
- InterleavedZeroBubble with 1 stage per rank: identical to our zb-h1 where torch accepts the
  size; torch also refuses m not divisible by max(1, m // p), ours does not need to.
- GPipe: identical once its REDUCE_GRAD bookkeeping is dropped.
- LoopedBFS: valid; runs each chunk's backwards in descending microbatch order, ours ascending.
- Schedule1F1B: its listing is wrong for the last rank (3F1..3F4 for p=4, m=4, no 3F0);
  pipesim's validator rejects it for exactly that.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path
from typing import Any
from unittest import mock

import pytest

pytest.importorskip("torch")

from torch.distributed.pipelining import schedules as torch_schedules
from torch.distributed.pipelining._schedule_visualizer import get_schedule_ops

from pipesim.cli import main
from pipesim.costs import CostModel
from pipesim.schedule_io import format_csv, parse_csv, row_tokens, schedule_from_rows
from pipesim.schedules import ConfigError, get_schedule
from pipesim.simulate import simulate
from pipesim.validate import validate


@pytest.fixture(autouse=True)
def _quiet_torch() -> Any:
    """torch logs a warning per schedule built from mocks; keep the test output readable."""
    logger = logging.getLogger("torch.distributed.pipelining")
    level = logger.level
    logger.setLevel(logging.ERROR)
    yield
    logger.setLevel(level)


def mock_stages(ranks: int, stages_per_rank: int) -> list[Any]:
    """Stand-ins for the stages of one rank: what a schedule's constructor reads of them.

    A plain mock (not ``create_autospec``, which costs ~40 ms a call); a test below checks that
    schedules built on it equal those of ``get_schedule_ops``.
    """
    stage = mock.NonCallableMagicMock()
    stage.group_rank, stage.group_size, stage.submod = 0, ranks, None
    stage.num_stages = ranks * stages_per_rank
    return [stage] * stages_per_rank


def torch_rows(name: str, ranks: int, mbs: int, stages_per_rank: int = 2,
               **kwargs: Any) -> list[list[Any]]:
    """torch's per-rank action lists, for any stages per rank (get_schedule_ops refuses one
    for torch's multi-stage classes). Keyword arguments go to get_schedule_ops."""
    if kwargs:
        return get_schedule_ops(name, ranks, mbs, stages_per_rank, **kwargs)
    cls = torch_schedules.get_schedule_class(name)
    stages = mock_stages(ranks, stages_per_rank)
    single = issubclass(cls, torch_schedules.PipelineScheduleSingle)
    order = cls(stages[0] if single else stages, mbs).pipeline_order
    return [list(order[r]) for r in range(ranks)]


def torch_csv(rows: list[list[Any]]) -> str:
    """The layout of torch's ``_dump_csv``: csv.writer rows of str(action), None -> empty."""
    out = io.StringIO()
    writer = csv.writer(out)
    for row in rows:
        writer.writerow(["" if a is None else str(a) for a in row])
    return out.getvalue()


def torch_schedule(name: str, ranks: int, mbs: int, stages_per_rank: int = 2) -> Any:
    return parse_csv(torch_csv(torch_rows(name, ranks, mbs, stages_per_rank)), name=name)


@pytest.mark.parametrize(("name", "v"), [("1F1B", 1), ("GPipe", 1), ("Interleaved1F1B", 3),
                                         ("ZBVZeroBubble", 2), ("DualPipeV", 2)])
def test_our_mock_stages_give_what_get_schedule_ops_gives(name: str, v: int) -> None:
    assert torch_rows(name, 4, 8, v) == get_schedule_ops(name, 4, 8, v)


@pytest.mark.parametrize(("name", "ours"), [("DualPipeV", "dualpipev"), ("ZBVZeroBubble", "zbv"),
                                          ("Interleaved1F1B", "interleaved-1f1b")])
def test_torch_dump_csv_is_read_as_our_schedule(name: str, ours: str, tmp_path: Path) -> None:
    cls = torch_schedules.get_schedule_class(name)
    theirs = cls(mock_stages(4, 2), 8)
    path = tmp_path / "torch.csv"
    theirs._dump_csv(str(path), format="compute_only")
    text = path.read_text()
    assert text.replace("\r\n", "\n") == torch_csv(torch_rows(name, 4, 8)).replace("\r\n", "\n")
    assert parse_csv(text) == get_schedule(ours, 4, 8)


# ----------------------------------------------------------------------------- equal to ours


@pytest.mark.parametrize(("p", "m"), [(1, 2), (2, 4), (2, 7), (3, 6), (4, 8), (4, 11), (5, 10)])
def test_dualpipev_equals_torch(p: int, m: int) -> None:
    text = torch_csv(torch_rows("DualPipeV", p, m))
    if p > 1:
        assert "OVERLAP_F_B" in text  # overlapped pairs, read as their two actions in order
    theirs, ours = parse_csv(text), get_schedule("dualpipev", p, m)
    assert theirs.actions == ours.actions
    assert theirs.stage_to_rank == ours.stage_to_rank
    assert theirs.pairs == ours.pairs  # the same actions overlapped
    assert format_csv(ours) == text.replace("\r\n", "\n")  # written as torch writes it


@pytest.mark.parametrize(("p", "m"), [(2, 4), (3, 7), (4, 8)])
def test_simulate_file_on_torch_dualpipev_listing_keeps_its_pairs(
        p: int, m: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # torch runs a pair as one unit: F then B, both outputs sent after it. Read from torch's own
    # listing, the simulation is ours, and at F=I=W=1 (one rank's share) the DualPipe formula:
    # 2m(F+B) of work per rank plus (p-1)(F&B+B-3W) at one stage's times (F=I=W=0.5)
    path = tmp_path / "dualpipev.csv"
    path.write_text(torch_csv(torch_rows("DualPipeV", p, m)))
    costs = CostModel.uniform(2 * p, F=0.5, I=0.5, W=0.5)
    theirs = simulate(parse_csv(path.read_text()), costs)
    ours = simulate(get_schedule("dualpipev", p, m), costs)
    assert (theirs.events, tuple(theirs.messages)) == (ours.events, tuple(ours.messages))
    assert main(["simulate", "--file", str(path), "--cost", "F=1,I=1,W=1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["makespan"] == 2 * m * 1.5 + (p - 1) * 1.0


def test_dualpipev_rejects_what_torch_rejects() -> None:
    with pytest.raises(ValueError, match="at least as many microbatches as stages"):
        torch_rows("DualPipeV", 4, 7)
    with pytest.raises(ConfigError, match="at least as many microbatches as stages"):
        get_schedule("dualpipev", 4, 7)


@pytest.mark.parametrize(("p", "m"), [(1, 1), (2, 2), (3, 5), (4, 4), (4, 8), (5, 3), (5, 12)])
def test_zbv_equals_torch(p: int, m: int) -> None:
    theirs, ours = torch_schedule("ZBVZeroBubble", p, m), get_schedule("zbv", p, m)
    assert theirs.actions == ours.actions
    assert theirs.stage_to_rank == ours.stage_to_rank


@pytest.mark.parametrize(("p", "m", "v"), [(2, 2, 2), (2, 4, 3), (3, 3, 2), (3, 8, 2),
                                           (4, 4, 2), (4, 6, 2), (4, 8, 3), (5, 10, 2)])
def test_interleaved_1f1b_equals_torch(p: int, m: int, v: int) -> None:
    theirs = torch_schedule("Interleaved1F1B", p, m, v)
    ours = get_schedule("interleaved-1f1b", p, m, v)
    assert theirs.actions == ours.actions
    assert theirs.stage_to_rank == ours.stage_to_rank


def test_interleaved_1f1b_rejects_the_sizes_torch_rejects() -> None:
    for p, m in [(2, 5), (3, 7), (4, 9), (4, 10), (3, 10)]:
        torch_refuses = ours_refuses = False
        try:
            torch_rows("Interleaved1F1B", p, m, 2)
        except ValueError:
            torch_refuses = True
        try:
            get_schedule("interleaved-1f1b", p, m, 2)
        except ConfigError:
            ours_refuses = True
        assert torch_refuses == ours_refuses == (m % max(1, m // p) != 0), (p, m)


def test_interleaved_with_one_stage_per_rank_differs_from_torch_on_purpose() -> None:
    theirs = torch_schedule("Interleaved1F1B", 4, 8, 1)
    ours = get_schedule("interleaved-1f1b", 4, 8, 1)
    assert theirs.actions != ours.actions
    warmups = [next(i for i, a in enumerate(row) if a.op.value == "B") for row in theirs.actions]
    assert warmups == [7, 5, 3, 1]  # 2*(p-1-r) forwards, then the F of the first F/B pair
    assert validate(theirs).ok and validate(ours).ok
    assert validate(theirs).peak_activations == (7, 5, 3, 1)
    assert validate(ours).peak_activations == (4, 3, 2, 1)  # 1F1B's p - r


@pytest.mark.parametrize(("p", "m"), [(1, 3), (2, 2), (2, 6), (3, 3), (3, 9), (4, 4), (4, 8),
                                      (4, 3), (5, 10)])
def test_interleaved_zero_bubble_with_one_stage_per_rank_is_zb_h1(p: int, m: int) -> None:
    assert torch_schedule("InterleavedZeroBubble", p, m, 1).actions == \
        get_schedule("zb-h1", p, m).actions


def test_zb_h1_takes_sizes_torch_refuses() -> None:
    with pytest.raises(ValueError, match="multiple of the number of rounds"):
        torch_rows("InterleavedZeroBubble", 2, 5, 1)
    assert validate(get_schedule("zb-h1", 2, 5)).ok


@pytest.mark.parametrize(("p", "m"), [(2, 3), (4, 6)])
def test_gpipe_equals_torch_without_its_bookkeeping(p: int, m: int) -> None:
    text = torch_csv(torch_rows("GPipe", p, m, 1))
    assert "REDUCE_GRAD" in text
    assert parse_csv(text).actions == get_schedule("gpipe", p, m).actions


def test_looped_bfs_differs_from_torch_in_backward_microbatch_order_only() -> None:
    theirs = torch_schedule("LoopedBFS", 3, 4, 2)
    ours = get_schedule("looped-bfs", 3, 4, 2)
    assert theirs.actions != ours.actions
    for their_row, our_row in zip(theirs.actions, ours.actions, strict=True):
        assert sorted(their_row) == sorted(our_row)
        assert [a.stage for a in their_row] == [a.stage for a in our_row]
        backward = [a.microbatch for a in their_row if a.op.value == "B"]
        assert backward == [3, 2, 1, 0] * 2
    assert validate(theirs).ok
    assert validate(theirs).peak_activations == validate(ours).peak_activations


# ----------------------------------------------------------------------------- torch's own listings


TORCH_SCHEDULES = [("GPipe", 1), ("LoopedBFS", 2), ("LoopedBFS", 3), ("Interleaved1F1B", 2),
                   ("Interleaved1F1B", 3), ("Interleaved1F1B", 1), ("InterleavedZeroBubble", 1),
                   ("InterleavedZeroBubble", 2), ("InterleavedZeroBubble", 3),
                   ("ZBVZeroBubble", 2), ("DualPipeV", 2)]


@pytest.mark.parametrize(("name", "v"), TORCH_SCHEDULES)
def test_every_torch_schedule_that_builds_is_valid(name: str, v: int) -> None:
    built = 0
    for p in (1, 2, 3, 4):
        for m in (1, 2, 3, 4, 6, 8, 9):
            try:
                rows = torch_rows(name, p, m, v)
            except ValueError:  # torch refuses the size (its message says why)
                continue
            sched = parse_csv(torch_csv(rows))
            report = validate(sched)
            assert report.ok, (name, p, m, v, report.errors)
            assert (sched.ranks, sched.stages, sched.microbatches) == (p, p * v, m)
            built += 1
    assert built >= 10


def test_torch_schedule1f1b_listing_is_rejected_for_its_last_rank() -> None:
    rows = torch_rows("1F1B", 4, 4, 1)
    parsed = parse_csv(torch_csv(rows))
    sched = schedule_from_rows(parsed.actions, microbatches=4)  # the size torch was asked for
    assert [str(a) for a in sched.actions[3]] == ["3F1", "3B0", "3F2", "3B1", "3F3", "3B2",
                                                  "3F4", "3B3"]
    assert validate(sched).errors == ("3F4 on rank 3: microbatch 4 is out of range (0..3)",
                                      "missing 3F0")
    assert sched.actions[:3] == get_schedule("1f1b", 4, 4).actions[:3]


def test_torch_listings_with_communication_read_as_their_compute() -> None:
    for name in ("ZBVZeroBubble", "DualPipeV", "Interleaved1F1B"):
        with_comms = torch_csv(torch_rows(name, 4, 8, with_comms=True))
        assert "SEND_F" in with_comms and "RECV_B" in with_comms
        assert parse_csv(with_comms) == torch_schedule(name, 4, 8)


# ----------------------------------------------------------------------------- ours, read by torch


@pytest.mark.parametrize(("name", "v"), [("gpipe", None), ("1f1b", None), ("zb-h1", None),
                                         ("interleaved-1f1b", 3), ("looped-bfs", 2),
                                         ("zbv", None), ("dualpipev", None)])
@pytest.mark.parametrize("cls_name", ["PipelineScheduleMulti", "_PipelineScheduleRuntime"])
def test_torch_load_csv_reads_our_csv(name: str, v: int | None, cls_name: str,
                                      tmp_path: Path) -> None:
    ours = get_schedule(name, 4, 8, v)
    path = tmp_path / "schedule.csv"
    path.write_text(format_csv(ours))
    cls = getattr(torch_schedules, cls_name)
    theirs = cls(mock_stages(4, ours.stages // 4), 8)
    theirs._load_csv(str(path))  # runs torch's validator; the runtime also adds send/recv
    assert [[str(a) for a in theirs.pipeline_order[r]] for r in range(4)] == \
        [row_tokens(ours, row) for row in ours.actions]  # pairs as torch's OVERLAP_F_B
    assert theirs.stage_index_to_group_rank == dict(enumerate(ours.stage_to_rank))
    if cls_name == "_PipelineScheduleRuntime":
        lowered = [theirs.pipeline_order_with_comms[r] for r in range(4)]
        assert parse_csv(torch_csv(lowered)) == ours


def test_torch_load_csv_refuses_forward_only(tmp_path: Path) -> None:
    path = tmp_path / "forward.csv"
    path.write_text(format_csv(get_schedule("forward", 2, 2)))
    theirs = torch_schedules.PipelineScheduleMulti(mock_stages(2, 1), 2)
    with pytest.raises(AssertionError, match="expected 2 total backwards"):
        theirs._load_csv(str(path))
