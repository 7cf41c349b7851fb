"""The validator: each kind of broken schedule is rejected with the right message."""

from __future__ import annotations

import re

import pytest

from pipesim.ir import Action, Op, Schedule, deps, parse_action
from pipesim.schedule_io import parse_text
from pipesim.schedules import SCHEDULES, get_schedule
from pipesim.validate import (
    InvalidScheduleError,
    check,
    find_cycle,
    format_listing,
    messages,
    peak_activations,
    validate,
)

HEADER = "# pipesim schedule t: ranks=2 stages=2 microbatches=2 stage_to_rank=0,1\n"
GPIPE_2X2 = HEADER + "0F0 0F1 0B0 0B1\n1F0 1F1 1B0 1B1\n"


def errors_of(text: str) -> tuple[str, ...]:
    report = validate(parse_text(text))
    assert not report.ok
    return report.errors


def test_a_correct_schedule_passes() -> None:
    report = validate(parse_text(GPIPE_2X2))
    assert report.ok and report.errors == () and report.warnings == ()
    assert report.peak_activations == (2, 2)
    assert check(parse_text(GPIPE_2X2)) == report


# Each generator at 3 ranks and 6 microbatches: peak stashed activations per rank (the bounds
# in its docstring) and the channels whose send and use orders differ (a warning, not an error).
EVERY_GENERATOR = {
    "1f1b": ((3, 2, 1), ()),
    "dualpipev": ((7, 7, 7), ("channel rank 0 -> rank 1",)),
    "forward": ((0, 0, 0), ()),
    "gpipe": ((6, 6, 6), ()),
    "interleaved-1f1b": ((8, 6, 4), ()),
    "looped-bfs": ((12, 12, 12), ()),
    "zb-h1": ((3, 3, 3), ()),
    "zbv": ((6, 6, 6), ("channel rank 0 -> rank 1", "channel rank 1 -> rank 2")),
}


def test_every_generator_has_an_expected_report() -> None:
    assert sorted(EVERY_GENERATOR) == sorted(SCHEDULES)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_every_generator_passes(name: str) -> None:
    sched = get_schedule(name, 3, 6)
    report = check(sched)
    peaks, channels = EVERY_GENERATOR[name]
    assert report.ok and report.errors == () and report.schedule is sched
    assert report.peak_activations == peaks
    assert tuple(w.split(":")[0] for w in report.warnings) == channels


# ----------------------------------------------------------------------------- completeness


@pytest.mark.parametrize(("rows", "message"), [
    ("0F0 0B0 0B1\n1F0 1F1 1B0 1B1", "missing 0F1"),
    ("0F0 0F1 0B0 0B1\n1F0 1F1 1B0", "missing the backward of stage 1 microbatch 1 "
                                     "(1B1, or 1I1 and 1W1)"),
    ("0F0 0F1 0B0 0I1\n1F0 1F1 1B0 1B1", "missing 0W1"),
    ("0F0 0F1 0B0 0W1\n1F0 1F1 1B0 1B1", "missing 0I1"),
])
def test_missing_action(rows: str, message: str) -> None:
    assert errors_of(HEADER + rows) == (message,)


def test_duplicate_action() -> None:
    assert errors_of(HEADER + "0F0 0F1 0B0 0B1\n1F0 1F1 1B0 1F0 1B1\n") == (
        "1F0 appears 2 times (rank 1 step 0, rank 1 step 3)",)


def test_action_on_the_wrong_rank() -> None:
    assert errors_of(HEADER + "0F0 0F1 0B0 0B1 1B1\n1F0 1F1 1B0\n") == (
        "1B1 is on rank 0, but stage 1 belongs to rank 1",)


def test_stage_and_microbatch_out_of_range() -> None:
    errors = errors_of(HEADER + "0F0 0F1 0B0 0B1 5F0 0F7\n1F0 1F1 1B0 1B1\n")
    assert errors == ("5F0 on rank 0: stage 5 is out of range (the schedule has stages 0..1)",
                      "0F7 on rank 0: microbatch 7 is out of range (0..1)")


def test_placement_naming_a_rank_that_does_not_exist() -> None:
    sched = Schedule(1, 2, 1, (0, 3), ((Action(0, Op.F, 0), Action(1, Op.F, 0)),))
    assert "stage_to_rank names rank 3, but there are 1 ranks" in validate(sched).errors


def test_both_full_and_split_backward() -> None:
    assert errors_of(HEADER + "0F0 0F1 0B0 0I0 0W0 0B1\n1F0 1F1 1B0 1B1\n") == (
        "stage 0 microbatch 0 has both a full backward (0B0) and a split one (I/W)",)


def test_many_problems_are_capped() -> None:
    sched = get_schedule("gpipe", 2, 20)
    broken = Schedule(2, 2, 20, (0, 1), (sched.actions[0], ()))
    errors = validate(broken).errors
    assert len(errors) == 9
    assert errors[-1] == "... and 32 more"  # 20 F's and 20 B's of stage 1, 8 shown


# ----------------------------------------------------------------------------- order and deadlock


def test_action_before_its_own_dependency_on_the_same_rank() -> None:
    (error,) = errors_of("# pipesim schedule t: ranks=1 stages=2 microbatches=1 "
                         "stage_to_rank=0,0\n1F0 0F0 1B0 0B0\n")
    first, grid = error.split("\n", 1)
    assert first == "1F0 runs before its own dependency 0F0 on rank 0 (step 0 < step 1)"
    assert grid == "  rank 0: [1F0][0F0] 1B0  0B0"


def test_weight_gradient_before_input_gradient() -> None:
    (error,) = errors_of("0F0 0W0 0I0\n")
    assert error.startswith("0W0 runs before its own dependency 0I0 on rank 0")


# Rank 1 runs microbatch 1 first: 1F1 needs 0F1, which rank 0 runs only after 0B0, which
# needs 1B0, which rank 1 runs after 1F0 and so after 1F1. Nobody can move.
CROSS_RANK_CYCLE = "0F0 0B0 0F1 0B1\n1F1 1F0 1B0 1B1\n"


def waits_on(a: Action, b: Action, sched: Schedule) -> bool:
    """a cannot start before b ends: b is a dependency of a, or runs just before a on its rank."""
    row = next(r for r in sched.actions if a in r)
    i = row.index(a)
    return b in deps(a, sched) or (i > 0 and row[i - 1] == b)


def test_cross_rank_cycle_is_a_deadlock_naming_the_cycle() -> None:
    sched = parse_text(CROSS_RANK_CYCLE)
    (error,) = validate(sched).errors
    first, *grid = error.split("\n")
    match = re.fullmatch(r"deadlock: 7 actions can never start; in the cycle (.*) -> (\w+)"
                         r", each action waits on the next .*", first)
    assert match, first
    named = re.findall(r"(\d[FIWB]\d+) \(rank (\d)\)", match.group(1))
    cycle = [parse_action(a) for a, _ in named]
    assert str(cycle[0]) == match.group(2)  # closed: back to the first
    assert set(map(str, cycle)) == {"0B0", "1B0", "1F0", "1F1", "0F1"}
    for (a, rank), b in zip(named, cycle[1:] + cycle[:1], strict=True):
        assert waits_on(parse_action(a), b, sched), (a, b)
        assert parse_action(a) in sched.actions[int(rank)]
    # the grid marks exactly the actions of the cycle
    assert grid == ["  rank 0:  0F0 [0B0][0F1] 0B1",
                    "  rank 1: [1F1][1F0][1B0] 1B1"]
    with pytest.raises(InvalidScheduleError) as err:
        check(sched)
    assert err.value.report.errors == (error,)


def test_find_cycle_returns_a_cycle_each_waiting_on_the_next() -> None:
    a, b, c, d, e = (Action(s, Op.F, 0) for s in range(5))
    # e waits on d, d on c, c on b, b on d (the cycle is b -> d -> c -> b), a on nothing
    preds = {a: [], b: [a, d], c: [b], d: [c], e: [d]}
    cycle = find_cycle({b, c, d, e}, preds)
    assert sorted(cycle) == [b, c, d]
    for x, y in zip(cycle, cycle[1:] + cycle[:1], strict=True):
        assert y in preds[x]


def test_a_long_rank_shows_a_window_of_the_listing_around_the_marks() -> None:
    sched = get_schedule("gpipe", 2, 30)
    marked = {Action(0, Op.B, 20)}
    listing = format_listing(sched, marked)
    row0 = listing.splitlines()[0]
    assert row0.startswith("  rank 0: ... ") and row0.endswith(" ...")
    assert "[0B20]" in row0 and " 0F0 " not in row0


# ----------------------------------------------------------------------------- channels


@pytest.mark.parametrize(("name", "ranks", "mbs"), [("zbv", 4, 8), ("dualpipev", 4, 8)])
def test_v_schedules_channel_order_differences_are_warnings(name: str, ranks: int,
                                                            mbs: int) -> None:
    sched = get_schedule(name, ranks, mbs)
    report = validate(sched)
    assert report.ok and report.warnings
    pos = {a: i for row in sched.actions for i, a in enumerate(row)}
    for warning in report.warnings:
        found = re.match(r"channel rank (\d) -> rank (\d): message (\d+) is sent for (\w+) but "
                         r"the receiver first needs the one for (\w+) ", warning)
        assert found, warning
        src, dst = int(found.group(1)), int(found.group(2))
        sent_for, needed = found.group(4), found.group(5)
        # true: on that channel, the sender produces sent_for's input before needed's, and the
        # receiver consumes needed before sent_for
        channel = {str(m.consumer): m for m in messages(sched) if (m.src, m.dst) == (src, dst)}
        x, y = channel[sent_for], channel[needed]
        assert pos[x.producer] < pos[y.producer] and pos[y.consumer] < pos[x.consumer]


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "zb-h1", "interleaved-1f1b", "looped-bfs"])
def test_schedules_on_a_line_keep_channel_order(name: str) -> None:
    assert validate(get_schedule(name, 4, 8)).warnings == ()


def test_messages_follow_placement() -> None:
    msgs = messages(get_schedule("1f1b", 2, 1))
    assert [(m.src, m.dst, str(m.producer), str(m.consumer), m.kind) for m in msgs] == [
        (1, 0, "1B0", "0B0", "gradient"), (0, 1, "0F0", "1F0", "activation")]
    # the turn of the V (stage 1 -> 2, both on rank 1) sends nothing
    turn = [m for m in messages(get_schedule("zbv", 2, 1)) if {m.producer.stage,
                                                               m.consumer.stage} == {1, 2}]
    assert turn == []


# ----------------------------------------------------------------------------- memory


@pytest.mark.parametrize(("row", "peak"), [
    ("0F0 0F1 0F2 0B0 0B1 0B2", 3),
    ("0F0 0B0 0F1 0B1 0F2 0B2", 1),
    ("0F0 0F1 0I0 0I1 0W0 0W1", 2),  # the I keeps the stash: the W still needs the input
    ("0F0 0I0 0W0 0F1 0I1 0W1", 1),
])
def test_peak_activations(row: str, peak: int) -> None:
    assert peak_activations(parse_text(row)) == (peak,)


def test_forward_only_stashes_nothing() -> None:
    assert peak_activations(get_schedule("forward", 3, 5)) == (0, 0, 0)


# ----------------------------------------------------------------------------- overlapped pairs


def test_a_pair_starts_as_one_unit_so_its_forward_waits_for_the_backwards_input() -> None:
    # run one after the other this is valid; as a pair 0F1's output leaves only after 0B0,
    # which needs 1B0, which rank 1 runs after 1F1, which needs 0F1's output: a deadlock
    plain = parse_text("0F0 0F1 0B0 0B1\n1F0 1F1 1B0 1B1\n")
    assert validate(plain).ok
    paired = parse_text("0F0 (0F1;0B0)OVERLAP_F_B 0B1\n1F0 1F1 1B0 1B1\n")
    report = validate(paired)
    assert not report.ok
    assert "deadlock" in report.errors[0] and "0F1 (rank 0)" in report.errors[0]


@pytest.mark.parametrize(("text", "message"), [
    ("0F0 (0B0;0F1)OVERLAP_F_B 0B1\n", "overlaps a forward with a backward"),
    ("0F0 (0F1;0B1)OVERLAP_F_B 0B0\n", "0B1 needs 0F1's output"),
])
def test_bad_pairs(text: str, message: str) -> None:
    report = validate(parse_text(text))
    assert not report.ok and message in report.errors[0]


def test_pair_parts_must_be_next_to_each_other() -> None:
    sched = parse_text("0F0 0F1 0B0 0B1\n1F0 1B0 1F1 1B1\n")
    apart = Schedule(sched.ranks, sched.stages, sched.microbatches, sched.stage_to_rank,
                     sched.actions, pairs=frozenset({(Action(0, Op.F, 1), Action(0, Op.B, 1))}))
    report = validate(apart)
    assert "next to each other on one rank" in report.errors[0]
    assert "[0F1]" in report.errors[0]


def test_dualpipev_pairs_validate_as_torch_writes_them() -> None:
    sched = get_schedule("dualpipev", 4, 8)
    assert len(sched.pairs) == 25 and validate(sched).ok
