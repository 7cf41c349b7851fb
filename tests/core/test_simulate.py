"""The simulator: equal to a plain reference, the one dependency rule, closed forms, metrics.

Legend: p ranks, m microbatches, v stages per rank; F, I, W, B the per-stage op times.
"""

from __future__ import annotations

import gc
import random
from collections.abc import Iterator
from dataclasses import replace

import pytest

from pipesim.costs import CostModel
from pipesim.ir import Action, Op, Schedule, deps
from pipesim.schedule_io import parse_text
from pipesim.schedules import SCHEDULES, ConfigError, get_schedule
from pipesim.simulate import DeadlockError, simulate
from pipesim.steady import steady_step
from pipesim.timeline import (
    Event,
    MessageEvent,
    Timeline,
    metrics,
    stage_shares,
    stash_over_time,
)

# ----------------------------------------------------------------------------- the reference


def reference_simulate(schedule: Schedule, costs: CostModel) -> Timeline:
    """The simulator's semantics written plainly: sweep the ranks until none can move.

    An overlapped pair is one unit: it starts when both parts' dependencies are met, lasts
    overlap x (F + B), and both outputs leave at its end. Returns events and messages in the
    fast simulator's order (rank by rank, each rank's in its order); raises DeadlockError with
    the same ``stuck`` when some rank can never finish.
    """
    ranks = schedule.ranks
    finish: dict[Action, float] = {}
    nxt, free = [0] * ranks, [0.0] * ranks
    events: list[list[Event]] = [[] for _ in range(ranks)]
    messages: list[list[MessageEvent]] = [[] for _ in range(ranks)]

    def unit(row: tuple[Action, ...], i: int) -> tuple[Action, ...]:
        return row[i:i + 2] if tuple(row[i:i + 2]) in schedule.pairs else row[i:i + 1]

    def needs(parts: tuple[Action, ...]) -> list[Action]:
        return [d for part in parts for d in deps(part, schedule)]

    moved = True
    while moved:
        moved = False
        for r, row in enumerate(schedule.actions):
            while nxt[r] < len(row) and all(d in finish for d in needs(unit(row, nxt[r]))):
                parts = unit(row, nxt[r])
                start = free[r] + costs.action_overhead
                for a in parts:
                    for d in deps(a, schedule):
                        ready = finish[d]
                        src = schedule.stage_to_rank[d.stage]
                        if src != r:
                            arrive = ready + costs.message_time(d, a)
                            messages[r].append(MessageEvent(src, r, d, a, ready, arrive))
                            ready = arrive
                        start = max(start, ready)
                if len(parts) == 2:  # overlapped: F for overlap x F, then B to the pair's end
                    first, second = parts
                    mid = start + costs.overlap * costs.duration(first)
                    end = start + costs.overlap * (costs.duration(first) + costs.duration(second))
                    events[r] += [Event(r, first, start, mid), Event(r, second, mid, end)]
                else:
                    end = start + costs.duration(parts[0])
                    events[r].append(Event(r, parts[0], start, end))
                for a in parts:
                    finish[a] = end
                free[r] = end
                nxt[r] += len(parts)
                moved = True
    stuck = {r: (row[nxt[r]], next(d for d in needs(unit(row, nxt[r])) if d not in finish))
             for r, row in enumerate(schedule.actions) if nxt[r] < len(row)}
    if stuck:
        raise DeadlockError("deadlock", stuck)
    return Timeline(ranks, tuple(e for row in events for e in row),
                    tuple(m for row in messages for m in row), costs.unit, schedule.name,
                    schedule.stage_to_rank, schedule.microbatches, pairs=schedule.pairs)


def random_costs(schedule: Schedule, seed: int) -> CostModel:
    """Distinct per-stage times and message costs, so any wrong dependency shows in the times."""
    rnd = random.Random(seed)
    n = schedule.stages

    def draw(lo: float, hi: float) -> list[float]:
        return [round(rnd.uniform(lo, hi), 3) for _ in range(n)]

    return CostModel.from_lists(n, draw(0.5, 2), draw(0.5, 2), draw(0.2, 1), draw(1, 3),
                                activation_bytes=draw(100, 1000), comm_latency=0.05,
                                comm_bandwidth=2000.0, overlap=round(rnd.uniform(0.5, 1), 3))


def configurations() -> Iterator[Schedule]:
    """Every registered schedule over a grid of sizes (those it accepts)."""
    for name, spec in SCHEDULES.items():
        for p in (1, 2, 3, 4):
            for m in (1, 2, 3, 4, 5, 8):
                for v in ((None,) if spec.virtual != "any" else (1, 2, 3)):
                    try:
                        yield get_schedule(name, p, m, v)
                    except ConfigError:
                        continue


CONFIGS = list(configurations())


def config_id(s: Schedule) -> str:
    return f"{s.name}-p{s.ranks}-s{s.stages}-m{s.microbatches}"


# ----------------------------------------------------------------------------- equal to reference


@pytest.mark.parametrize("schedule", CONFIGS, ids=config_id)
def test_equals_reference_with_random_costs(schedule: Schedule) -> None:
    costs = random_costs(schedule, seed=schedule.num_actions)
    assert simulate(schedule, costs) == reference_simulate(schedule, costs)


@pytest.mark.parametrize("schedule", CONFIGS[::7], ids=config_id)
def test_equals_reference_with_the_engines_time_per_action(schedule: Schedule) -> None:
    costs = replace(random_costs(schedule, seed=schedule.num_actions), action_overhead=0.125)
    assert simulate(schedule, costs) == reference_simulate(schedule, costs)


def test_equals_reference_on_shuffled_rows() -> None:
    # rows with a few neighbours swapped exercise every same-rank dependency: a dependency the
    # fast loop skipped would let an action run early (different times) or hide a deadlock
    rnd = random.Random(7)
    deadlocks = runs = 0
    for name in ("1f1b", "zb-h1", "interleaved-1f1b", "zbv", "dualpipev"):
        base = get_schedule(name, 2, 4)
        for _ in range(60):
            rows = [list(row) for row in base.actions]
            for _ in range(rnd.randint(1, 3)):
                row = rnd.choice(rows)
                k = rnd.randrange(len(row) - 1)
                row[k], row[k + 1] = row[k + 1], row[k]
            sched = Schedule(base.ranks, base.stages, base.microbatches, base.stage_to_rank,
                             tuple(tuple(r) for r in rows), name)
            costs = random_costs(sched, seed=1)
            try:
                expected = reference_simulate(sched, costs)
            except DeadlockError as want:
                with pytest.raises(DeadlockError) as got:
                    simulate(sched, costs)
                assert got.value.stuck == want.stuck
                deadlocks += 1
            else:
                assert simulate(sched, costs) == expected
                runs += 1
    assert deadlocks > 20 and runs > 20  # both outcomes were exercised


# ----------------------------------------------------------------------------- the one rule


@pytest.mark.parametrize("schedule", CONFIGS, ids=config_id)
def test_dependencies_are_ir_deps(schedule: Schedule) -> None:
    # cross-rank dependencies are exactly the messages; same-rank ones end before their consumer
    tl = simulate(schedule, random_costs(schedule, seed=3))
    end = {e.action: e.end for e in tl.events}
    start = {e.action: e.start for e in tl.events}
    received: dict[Action, list[Action]] = {}
    for msg in tl.messages:
        received.setdefault(msg.consumer, []).append(msg.producer)
    for row in schedule.actions:
        for a in row:
            rule = deps(a, schedule)
            owner = schedule.stage_to_rank[a.stage]
            crossing = [d for d in rule if schedule.stage_to_rank[d.stage] != owner]
            assert received.get(a, []) == crossing, a
            assert all(end[d] <= start[a] for d in rule), a


def test_a_same_rank_dependency_out_of_order_deadlocks() -> None:
    # rank 0 runs 0W0 before 0I0: the rule says W waits for I, so nothing can move
    base = get_schedule("zb-h1", 2, 1)
    row0 = list(base.actions[0])
    i, w = row0.index(Action(0, Op.I, 0)), row0.index(Action(0, Op.W, 0))
    row0[i], row0[w] = row0[w], row0[i]
    sched = Schedule(2, 2, 1, base.stage_to_rank, (tuple(row0), base.actions[1]))
    with pytest.raises(DeadlockError) as err:
        simulate(sched)
    assert err.value.stuck == {0: (Action(0, Op.W, 0), Action(0, Op.I, 0))}


def test_deadlock_names_each_stuck_rank() -> None:
    # each rank first wants the backward that the other can only run after it
    rows = ((Action(0, Op.F, 0), Action(0, Op.B, 0)), (Action(1, Op.B, 0), Action(1, Op.F, 0)))
    sched = Schedule(2, 2, 1, (0, 1), rows, "crossed")
    with pytest.raises(DeadlockError) as err:
        simulate(sched)
    assert err.value.stuck == {0: (Action(0, Op.B, 0), Action(1, Op.B, 0)),
                               1: (Action(1, Op.B, 0), Action(1, Op.F, 0))}
    text = str(err.value)
    assert "rank 0 waits at 0B0 for 1B0 (rank 1)" in text
    assert "rank 1 waits at 1B0 for 1F0 (rank 1)" in text
    assert "[1B0]" in text  # the grid marks where each rank is stuck


def test_gc_state_is_restored_even_after_a_deadlock() -> None:
    rows = ((Action(0, Op.B, 0), Action(0, Op.F, 0)),)
    sched = Schedule(1, 1, 1, (0,), rows)
    assert gc.isenabled()
    with pytest.raises(DeadlockError):
        simulate(sched)
    assert gc.isenabled()
    gc.disable()
    try:
        simulate(get_schedule("1f1b", 2, 2))
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_repeated_or_out_of_range_actions_are_value_errors() -> None:
    f0 = Action(0, Op.F, 0)
    with pytest.raises(ValueError, match="more than once"):
        simulate(Schedule(1, 1, 1, (0,), ((f0, f0, Action(0, Op.B, 0)),)))
    with pytest.raises(ValueError, match="0F5 on rank 0 is out of range"):
        simulate(Schedule(1, 1, 1, (0,), ((f0, Action(0, Op.F, 5)),)))
    with pytest.raises(ValueError, match="cost model has 3 stages"):
        simulate(get_schedule("1f1b", 2, 2), CostModel.uniform(3))


def test_events_and_messages_come_rank_by_rank_in_row_order() -> None:
    sched = get_schedule("interleaved-1f1b", 4, 8, 2)
    tl = simulate(sched)
    assert [e.action for e in tl.events] == [a for row in sched.actions for a in row]
    assert [e.rank for e in tl.events] == [r for r, row in enumerate(sched.actions) for _ in row]
    consumers = [m.consumer for m in tl.messages]
    order = {a: i for i, a in enumerate(a for row in sched.actions for a in row)}
    assert consumers == sorted(consumers, key=order.__getitem__)


def test_message_time_is_latency_plus_bytes_over_bandwidth() -> None:
    # 2 ranks, one microbatch: 0F0 -> 1F0 -> 1B0 -> 0B0 with 4 bytes at 2 bytes/unit + 0.5
    costs = CostModel.uniform(2, F=1, B=2, activation_bytes=4.0, comm_latency=0.5,
                              comm_bandwidth=2.0)
    tl = simulate(get_schedule("1f1b", 2, 1), costs)
    times = {str(e.action): (e.start, e.end) for e in tl.events}
    assert times == {"0F0": (0.0, 1.0), "1F0": (3.5, 4.5), "1B0": (4.5, 6.5),
                     "0B0": (9.0, 11.0)}
    assert sorted((str(m.producer), m.send, m.arrive) for m in tl.messages) == [
        ("0F0", 1.0, 3.5), ("1B0", 6.5, 9.0)]


# ----------------------------------------------------------------------------- closed forms

GRID_P = (1, 2, 3, 4, 8)
GRID_M = (1, 2, 4, 5, 8, 16)
TIMES = ((1.0, 2.0), (2.0, 5.0))  # (F, B) per stage; B = I + W


@pytest.mark.parametrize("name", ["gpipe", "1f1b"])
@pytest.mark.parametrize(("f", "b"), TIMES)
def test_gpipe_and_1f1b_makespan(name: str, f: float, b: float) -> None:
    # GPipe (Huang et al. 2019, "GPipe", sec. 2.3) and 1F1B (Narayanan et al. 2021, sec. 2.2):
    # with no communication the step takes (m + p - 1)(F + B), bubble fraction (p-1)/(m+p-1)
    for p in GRID_P:
        for m in GRID_M:
            sched = get_schedule(name, p, m)
            tl = simulate(sched, CostModel.uniform(p, F=f, B=b))
            assert tl.makespan == pytest.approx((m + p - 1) * (f + b)), (p, m)
            got = metrics(tl).bubble_fraction
            assert got == pytest.approx((p - 1) / (m + p - 1)), (p, m)


@pytest.mark.parametrize(("f", "b"), TIMES)
def test_interleaved_bubble_shrinks_by_v(f: float, b: float) -> None:
    # Narayanan et al. 2021 (Megatron-LM interleaved schedule, sec. 2.2): with v chunks per rank,
    # each costing F/v and B/v, every rank idles (p - 1)(F + B)/v
    for p in (2, 3, 4, 8):
        for v in (1, 2, 3, 4):
            for m in (p, 2 * p, 4 * p):
                sched = get_schedule("interleaved-1f1b", p, m, v)
                tl = simulate(sched, CostModel.uniform(sched.stages, F=f / v, B=b / v))
                for rank in metrics(tl).per_rank:
                    assert rank.idle == pytest.approx((p - 1) * (f + b) / v), (p, m, v)


@pytest.mark.parametrize("f", [1.0, 2.0, 3.0])
def test_zb_h1_bubble_is_a_third_of_1f1b(f: float) -> None:
    # Qi et al. 2024, "Zero Bubble Pipeline Parallelism" (arXiv:2401.10241, sec. 3): with
    # F = I = W, ZB-H1 idles (p - 1)(F + I - W) per rank, a third of 1F1B's (p - 1)(F + B)
    for p in (2, 3, 4, 8):
        for m in (p, 2 * p, 3 * p, 16):
            zb_costs, ob_costs = CostModel.uniform(p, F=f, I=f, W=f), CostModel.uniform(p, F=f)
            zb = metrics(simulate(get_schedule("zb-h1", p, m), zb_costs))
            ob = metrics(simulate(get_schedule("1f1b", p, m), ob_costs))
            for z, o in zip(zb.per_rank, ob.per_rank, strict=True):
                assert z.idle == pytest.approx((p - 1) * f), (p, m)
                assert z.idle == pytest.approx(o.idle / 3), (p, m)


# DeepSeek DualPipe README, "Pipeline bubbles and memory usage comparison": per-rank bubble
# 1F1B (PP-1)(F+B) and ZB1P (PP-1)(F+B-2W) with B the full backward. ZB1P is zb-h1 here.
# The ZB1P row assumes W <= F (a deferred W fits where an F would be); with W > F it does not
# hold (e.g. F=I=1, W=2, p=2 idles 1, not 0), so the grid keeps to W <= F.
README_TIMES = [(1.0, 1.0, 1.0), (2.0, 2.0, 1.0), (3.0, 2.0, 2.0), (1.0, 2.0, 1.0),
                (4.0, 3.0, 2.0), (2.0, 5.0, 1.5)]


@pytest.mark.parametrize(("f", "i", "w"), README_TIMES)
def test_dualpipe_readme_rows(f: float, i: float, w: float) -> None:
    b = i + w
    for p in (2, 3, 4, 8):
        for m in (p, 2 * p, 16):
            one = metrics(simulate(get_schedule("1f1b", p, m), CostModel.uniform(p, F=f, B=b)))
            zb1p = metrics(simulate(get_schedule("zb-h1", p, m),
                                    CostModel.uniform(p, F=f, I=i, W=w)))
            assert {round(r.idle, 9) for r in one.per_rank} == {round((p - 1) * (f + b), 9)}
            assert {round(r.idle, 9) for r in zb1p.per_rank} == {
                round((p - 1) * (f + b - 2 * w), 9)}, (p, m)


def test_zb_h1_bubble_formula_needs_w_at_most_min_f_i() -> None:
    # (p-1)(F+I-W) holds exactly when a deferred W fits where an F or an I would be
    vals = (0.5, 1.0, 2.0)
    for f in vals:
        for i in vals:
            for w in vals:
                for p, m in ((2, 2), (2, 5), (4, 4), (4, 8)):
                    tl = simulate(get_schedule("zb-h1", p, m), CostModel.uniform(p, F=f, I=i, W=w))
                    holds = {round(r.idle, 9) for r in metrics(tl).per_rank} == {
                        round((p - 1) * (f + i - w), 9)}
                    assert holds == (w <= min(f, i)), (f, i, w, p, m)
    # the counterexample in README: the formula's makespan, 8 x 3 = 24, is below the least
    # possible, (p-1)F before the last rank's first input plus its 24 of work
    tl = simulate(get_schedule("zb-h1", 4, 8), CostModel.uniform(4, F=1, I=0.5, W=1.5))
    assert tl.makespan == 27 == 3 * 1 + 8 * 3


# DeepSeek DualPipe README: DualPipe idles (PP/2 - 1)(F&B + B - 3W) per rank, F&B the time of an
# overlapped forward-and-backward pair. DualPipeV on p ranks has PP = 2p stages; F, B and W are
# one stage's times. With F = I = W and no overlap gain (F&B = F + B) the simulated step is exact:
# every rank works 2m(F + B) and idles (p - 1)(F&B + B - 3W). The issue's numbers, at one rank's
# share F=I=W=1 (a stage 0.5): p=4, m=8 -> 27; p=16, m=32 -> 111.
@pytest.mark.parametrize("f", [0.5, 1.0, 1.5])
def test_dualpipev_meets_the_dualpipe_readme_formula(f: float) -> None:
    for p in (1, 2, 3, 4, 5, 8):
        for m in sorted({2 * p, 2 * p + 1, 3 * p, 4 * p + 3, 16}):
            if m < 2 * p:
                continue
            sched = get_schedule("dualpipev", p, m)
            tl = simulate(sched, CostModel.uniform(sched.stages, F=f, I=f, W=f))
            fb, b, w = 3 * f, 2 * f, f
            bubble = (p - 1) * (fb + b - 3 * w)
            assert {round(r.idle, 9) for r in metrics(tl).per_rank} == {round(bubble, 9)}, (p, m)
            assert tl.makespan == pytest.approx(2 * m * (f + b) + bubble), (p, m)


@pytest.mark.parametrize(("p", "m", "makespan"), [(4, 8, 27), (16, 32, 111)])
def test_dualpipev_numbers_of_the_issue(p: int, m: int, makespan: float) -> None:
    sched = get_schedule("dualpipev", p, m)
    assert simulate(sched, CostModel.uniform(2 * p, F=0.5, I=0.5, W=0.5)).makespan == makespan


def test_a_pair_starts_when_both_inputs_are_in_and_sends_both_at_its_end() -> None:
    # a V on 2 ranks; rank 0's pair (0F1;3B0) needs no input for 0F1 (stage 0) but 3F0 for 3B0
    sched = parse_text("# pipesim schedule t: ranks=2 stages=4 microbatches=2 "
                       "stage_to_rank=0,1,1,0\n"
                       "0F0 3F0 (0F1;3B0)OVERLAP_F_B 3F1 3B1 0B0 0B1\n"
                       "1F0 2F0 2B0 1F1 1B0 2F1 2B1 1B1\n")
    costs = CostModel.uniform(4, F=1, B=2, overlap=0.5)
    times = {str(e.action): (e.start, e.end) for e in simulate(sched, costs).events}
    # 3F0 needs 2F0 (ends 3); the pair needs 3F0 (ends 4) for 3B0, so starts at 4, not at 2;
    # it lasts 0.5 x (1 + 2): 0F1 from 4 to 4.5, 3B0 from 4.5 to 5.5
    assert times["3F0"] == (3, 4)
    assert times["0F1"] == (4, 4.5) and times["3B0"] == (4.5, 5.5)
    # 0F1's output leaves with the pair's end: 1F1 (after 2B0 at 5.5 -> 7.5) starts at 7.5
    assert times["2B0"] == (5.5, 7.5) and times["1F1"] == (7.5, 8.5)
    sent = {str(m.producer): m.send for m in simulate(sched, costs).messages}
    assert sent["0F1"] == sent["3B0"] == 5.5


def test_without_overlap_a_pair_runs_its_parts_one_after_the_other() -> None:
    # overlap 1 (a CPU): the F starts once its own input is in, the B once the F is done (and
    # the engine's time) and its own input is in; both outputs leave at the pair's end
    early = 0
    for p, m in ((2, 4), (3, 6), (4, 8)):
        sched = get_schedule("dualpipev", p, m)
        costs = CostModel.from_lists(2 * p, [1.0 + 0.3 * s for s in range(2 * p)],
                                     [2.0 - 0.2 * s for s in range(2 * p)], 0.5, None,
                                     comm_latency=0.7, action_overhead=0.1)
        tl = simulate(sched, costs)
        at = {e.action: e for e in tl.events}
        arrive = {m.consumer: m.arrive for m in tl.messages}
        sent = {m.producer: m.send for m in tl.messages}
        row_of = {a: (r, i) for r, row in enumerate(sched.actions) for i, a in enumerate(row)}
        for first, second in sched.pairs:
            r, i = row_of[first]
            before = at[sched.actions[r][i - 1]].end + 0.1 if i else 0.1
            ready = {a: max([before if a is first else at[first].end + 0.1]
                            + ([arrive[a]] if a in arrive else [])
                            + [at[d].end for d in deps(a, sched) if row_of[d][0] == r])
                     for a in (first, second)}
            assert at[first].start == pytest.approx(ready[first])
            assert at[second].start == pytest.approx(ready[second])
            for a in (first, second):
                if a in sent:
                    assert sent[a] == pytest.approx(at[second].end)
            early += arrive.get(second, 0.0) > at[first].start + 1e-9
    assert early  # some F ran before its partner's input arrived: as one unit it would wait


def test_a_pair_pays_both_sends_at_its_end() -> None:
    sched = get_schedule("dualpipev", 2, 4)
    base = simulate(sched, CostModel.uniform(4, F=1, B=2))
    paid = simulate(sched, CostModel.uniform(4, F=1, B=2, send_overhead=0.25))
    first, second = sorted(sched.pairs)[0]
    dur = {str(e.action): e.end - e.start for e in base.events}
    got = {str(e.action): e.end - e.start for e in paid.events}
    extra = sum(0.25 for a in (first, second)
                if (a.op is Op.F and a.stage + 1 < 4 and sched.stage_to_rank[a.stage + 1]
                    != sched.stage_to_rank[a.stage])
                or (a.op is Op.B and a.stage > 0 and sched.stage_to_rank[a.stage - 1]
                    != sched.stage_to_rank[a.stage]))
    assert got[str(first)] == dur[str(first)]  # the F part's own time is unchanged
    assert got[str(second)] == pytest.approx(dur[str(second)] + extra)


def test_overlap_shortens_dualpipev_and_only_its_pairs() -> None:
    sched = get_schedule("dualpipev", 4, 8)
    full = simulate(sched, CostModel.uniform(8, F=0.5, I=0.5, W=0.5))
    gain = simulate(sched, CostModel.uniform(8, F=0.5, I=0.5, W=0.5, overlap=0.8))
    assert gain.makespan < full.makespan
    paired = {a for pair in sched.pairs for a in pair}
    for a, b in zip(full.events, gain.events, strict=True):
        if a.action not in paired:
            assert a.duration == b.duration
    one = simulate(get_schedule("zbv", 4, 8), CostModel.uniform(8, overlap=0.5))
    assert one == simulate(get_schedule("zbv", 4, 8), CostModel.uniform(8))  # no pairs


def test_a_pair_that_needs_its_own_output_deadlocks_as_the_reference_says() -> None:
    # as two actions this runs; as a pair, 0F1's output leaves only after 0B0, which needs 1B0,
    # which rank 1 runs after 1F1, which needs 0F1's output
    sched = parse_text("0F0 (0F1;0B0)OVERLAP_F_B 0B1\n1F0 1F1 1B0 1B1\n")
    costs = CostModel.uniform(2)
    with pytest.raises(DeadlockError) as want:
        reference_simulate(sched, costs)
    with pytest.raises(DeadlockError) as got:
        simulate(sched, costs)
    assert got.value.stuck == want.value.stuck == {
        0: (Action(0, Op.F, 1), Action(1, Op.B, 0)), 1: (Action(1, Op.F, 1), Action(0, Op.F, 1))}


def test_pair_parts_apart_are_a_value_error() -> None:
    sched = get_schedule("1f1b", 2, 2)
    apart = Schedule(2, 2, 2, (0, 1), sched.actions,
                     pairs=frozenset({(Action(0, Op.F, 1), Action(0, Op.B, 1))}))
    with pytest.raises(ValueError, match="next to each other"):
        simulate(apart)


# ----------------------------------------------------------------------------- metrics


def test_metrics_of_1f1b_by_hand() -> None:
    # p=2, m=3, F=1, B=2: makespan (3+1)*3 = 12; each rank busy 9, idle 3
    tl = simulate(get_schedule("1f1b", 2, 3))
    got = metrics(tl)
    assert got.makespan == 12.0
    assert [(r.busy, r.idle) for r in got.per_rank] == [(9.0, 3.0), (9.0, 3.0)]
    assert [r.bubble_fraction for r in got.per_rank] == [0.25, 0.25]
    assert got.bubble_fraction == 1 - 18 / (2 * 12)
    assert [r.peak_activations for r in got.per_rank] == [2, 1]  # min(p - r, m)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_total_bubble_is_one_minus_busy_share(name: str) -> None:
    for p, m in ((2, 4), (4, 8)):
        sched = get_schedule(name, p, m)
        tl = simulate(sched, random_costs(sched, seed=p * m))
        got = metrics(tl)
        busy = sum(e.end - e.start for e in tl.events)
        assert got.bubble_fraction == pytest.approx(1 - busy / (p * got.makespan))
        assert got.makespan == max(e.end for e in tl.events)
        for rank in got.per_rank:
            assert rank.busy + rank.idle == pytest.approx(got.makespan)


def test_peak_activations_count_and_bytes() -> None:
    # GPipe stashes every microbatch on every rank; 1F1B at most p - r on rank r
    p, m = 4, 8
    gp = metrics(simulate(get_schedule("gpipe", p, m)), stash_bytes=[10.0, 20.0, 30.0, 40.0])
    assert [r.peak_activations for r in gp.per_rank] == [m] * p
    assert [r.peak_activation_bytes for r in gp.per_rank] == [80.0, 160.0, 240.0, 320.0]
    ob = metrics(simulate(get_schedule("1f1b", p, m)))
    assert [r.peak_activations for r in ob.per_rank] == [4, 3, 2, 1]
    assert all(r.peak_activation_bytes is None for r in ob.per_rank)


def test_stash_over_time_follows_the_one_rule_and_counts_rank_stashes() -> None:
    # 1F1B, 2 ranks, 2 microbatches (F=1, B=2): rank 0 runs 0F0 0F1 0B0 0B1, an F's stash
    # counting from its start, a B freeing at its end
    tl = simulate(get_schedule("1f1b", 2, 2))
    rank0 = stash_over_time(tl)[0]
    assert [(c.time, c.level, str(c.event.action)) for c in rank0] == [
        (0.0, 1.0, "0F0"), (1.0, 2.0, "0F1"), (6.0, 1.0, "0B0"), (9.0, 0.0, "0B1")]
    # ZB-V: each rank holds two half-size chunks, so a chunk's F adds 1/2 a rank stash and
    # the peak is in line with 1F1B's (4 on rank 0 of 4), where the raw count says 8
    zbv = metrics(simulate(get_schedule("zbv", 4, 8)))
    assert [r.peak_activations for r in zbv.per_rank] == [8] * 4
    assert [r.peak_stash for r in zbv.per_rank] == [4.0] * 4
    ob = metrics(simulate(get_schedule("1f1b", 4, 8)))
    assert [r.peak_stash for r in ob.per_rank] == [4.0, 3.0, 2.0, 1.0]
    # bytes, when the costs know each stage's stash, travel with the timeline (and its JSON)
    sized = simulate(get_schedule("1f1b", 2, 2), CostModel.from_lists(2, 1, 1, 1,
                                                                      stash_bytes=[4e6, 1e6]))
    assert Timeline.from_json(sized.to_json()).stash_bytes == (4e6, 1e6)
    assert [r.peak_activation_bytes for r in metrics(sized).per_rank] == [8e6, 1e6]
    assert metrics(sized).peak.peak_activation_bytes == 8e6
    forward = metrics(simulate(get_schedule("forward", 2, 2)))  # inference keeps nothing
    assert [r.peak_stash for r in forward.per_rank] == [0.0, 0.0]


@pytest.mark.parametrize("name", ["gpipe", "1f1b", "zb-h1", "zbv", "dualpipev",
                                  "interleaved-1f1b", "looped-bfs"])
def test_metrics_peaks_are_the_highest_levels_of_stash_over_time(name: str) -> None:
    sched = get_schedule(name, 4, 8)
    tl = simulate(sched, CostModel.uniform(sched.stages, stash_bytes=[1e6 * (s + 1) for s in
                                                                      range(sched.stages)]))
    got = metrics(tl).per_rank
    for sizes, field in ((None, "peak_activation_bytes"), (stage_shares(tl), "peak_stash"),
                         ([1.0] * sched.stages, "peak_activations")):
        walk = stash_over_time(tl, sizes)
        assert [max(c.level for c in row) for row in walk] == pytest.approx(
            [getattr(r, field) for r in got])


def test_unit_and_identity_travel_into_the_timeline() -> None:
    sched = get_schedule("zbv", 2, 4)
    tl = simulate(sched, CostModel.uniform(sched.stages, unit="ms"))
    assert (tl.unit, tl.name, tl.ranks, tl.microbatches) == ("ms", "zbv", 2, 4)
    assert tl.stage_to_rank == (0, 1, 1, 0)
    assert len(tl.events) == sched.num_actions


# ----------------------------------------------------------------------------- step after step


def test_start_times_delay_each_rank() -> None:
    sched = get_schedule("gpipe", 2, 1)
    late = simulate(sched, CostModel.uniform(2), start=[0.0, 5.0])
    assert [(e.rank, str(e.action), e.start, e.end) for e in late.events] == [
        (0, "0F0", 0, 1), (0, "0B0", 8, 10), (1, "1F0", 5, 6), (1, "1B0", 6, 8)]
    with pytest.raises(ValueError, match="start has 1 times; the schedule has 2 ranks"):
        simulate(sched, CostModel.uniform(2), start=[0.0])


def test_steady_step_by_hand() -> None:
    # gpipe, 2 ranks, 1 microbatch, F=1 B=2: r0 F [0,1] B [4,6]; r1 F [1,2] B [2,4]
    sched, costs = get_schedule("gpipe", 2, 1), CostModel.uniform(2)
    assert steady_step(sched, costs).step == 6  # nothing between steps: the makespan
    # rank 1's 3 between steps fit in the time it waits anyway: rank 0 still bounds the step
    assert steady_step(sched, costs, [0.0, 3.0]).step == 6
    # with 5, rank 1 is the bound: F + B + 5 = 8, and rank 0 waits 3 for its B's input
    slow = steady_step(sched, costs, [0.0, 5.0])
    assert slow.step == 8
    assert [(e.rank, str(e.action), e.start) for e in slow.timeline.events] == [
        (0, "0F0", 0), (0, "0B0", 6), (1, "1F0", 3), (1, "1B0", 4)]
    with pytest.raises(ValueError, match="between has 3 times"):
        steady_step(sched, costs, [0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="max_steps must be >= 2"):
        steady_step(sched, costs, max_steps=1)


@pytest.mark.parametrize("schedule", CONFIGS[::7], ids=config_id)
def test_steady_step_lies_between_the_busiest_rank_and_the_makespan(schedule: Schedule) -> None:
    costs = random_costs(schedule, seed=schedule.num_actions)
    one = simulate(schedule, costs)
    busy = [sum(e.duration for e in row) for row in one.by_rank()]
    busiest = max(busy)
    steady = steady_step(schedule, costs)
    assert busiest - 1e-9 <= steady.step <= one.makespan + 1e-9
    gap = [0.5 * (r + 1) for r in range(schedule.ranks)]
    slower = steady_step(schedule, costs, gap)
    assert slower.step >= steady.step - 1e-9
    # each rank's work and its gap
    assert slower.step >= max(b + g for b, g in zip(busy, gap, strict=True)) - 1e-9


def test_a_send_keeps_the_sender_busy() -> None:
    sched = get_schedule("gpipe", 2, 1)
    costs = CostModel.uniform(2, send_overhead=0.5)
    got = [(e.rank, str(e.action), e.start, e.end) for e in simulate(sched, costs).events]
    # stage 0's F and stage 1's B cross ranks; stage 1's F and stage 0's B send nothing
    assert got == [(0, "0F0", 0, 1.5), (0, "0B0", 5.0, 7.0), (1, "1F0", 1.5, 2.5),
                   (1, "1B0", 2.5, 5.0)]
    one_rank = get_schedule("gpipe", 1, 2)
    assert simulate(one_rank, CostModel.uniform(1, send_overhead=9)).makespan == 6
    # interleaved: every hop crosses ranks, so every F and B but the ends' pays
    inter = get_schedule("interleaved-1f1b", 2, 2, 2)
    busy = CostModel.uniform(4, send_overhead=0.25)
    events = simulate(inter, busy).events
    paying = {(e.action.stage, e.action.op) for e in events
              if e.duration > (1 if e.action.op is Op.F else 2)}
    assert paying == {(0, Op.F), (1, Op.F), (2, Op.F), (1, Op.B), (2, Op.B), (3, Op.B)}
    again = CostModel.from_dict(busy.to_dict())
    assert again.send_overhead == 0.25


def test_the_engines_time_comes_before_each_action_and_delays_no_message() -> None:
    sched = get_schedule("gpipe", 2, 1)
    costs = CostModel.uniform(2, send_overhead=0.5, action_overhead=0.25)
    got = [(e.rank, str(e.action), e.start, e.end) for e in simulate(sched, costs).events]
    # 1F0 waits for 0F0's output (1.75), which already covers rank 1's own 0.25
    assert got == [(0, "0F0", 0.25, 1.75), (0, "0B0", 5.5, 7.5), (1, "1F0", 1.75, 2.75),
                   (1, "1B0", 3.0, 5.5)]
    assert CostModel.from_dict(costs.to_dict()).action_overhead == 0.25
    with pytest.raises(ValueError, match="action_overhead"):
        CostModel.uniform(2, action_overhead=-1.0)


# ----------------------------------------------------------------------------- per-action times


def test_actions_given_their_own_time_take_it_and_the_rest_follow() -> None:
    """gpipe p=2 m=2, F=1 B=2, a hop of 0.5 and a send of 0.25: 0F1 given 3 (its own time, the
    send still added) delays 1F1 and everything after it; the same times as the tables give
    the same timeline."""
    sched = get_schedule("gpipe", 2, 2)
    costs = CostModel.uniform(2, F=1.0, comm_latency=0.5, send_overhead=0.25, unit="s")
    plain = simulate(sched, costs)
    same = simulate(sched, costs, durations={e.action: costs.duration(e.action)
                                             for e in plain.events})
    assert [(e.start, e.end) for e in same.events] == [(e.start, e.end) for e in plain.events]
    slow = simulate(sched, costs, durations={Action(0, Op.F, 1): 3.0})
    at = {e.action: e for e in slow.events}
    was = {e.action: e for e in plain.events}
    f01 = at[Action(0, Op.F, 1)]
    assert f01.end - f01.start == 3.25  # its own 3 + the send
    assert at[Action(1, Op.F, 1)].start == f01.end + 0.5  # waits for it, then the hop
    assert at[Action(0, Op.F, 0)] == was[Action(0, Op.F, 0)]  # before it: unchanged
    assert slow.end == plain.end + 2.0


def test_a_pairs_parts_take_their_own_times() -> None:
    """DualPipeV on 2 ranks without an overlap gain runs a pair's F then its B: given their
    own times, the pair's events last exactly those (plus the send where a part sends)."""
    sched = get_schedule("dualpipev", 2, 4)
    costs = CostModel.uniform(sched.stages, F=1.0, unit="s")
    first, second = sorted(sched.pairs)[0]
    got = simulate(sched, costs, durations={first: 0.125, second: 5.0})
    at = {e.action: e for e in got.events}
    assert at[first].end - at[first].start == 0.125
    assert at[second].end - at[second].start == 5.0
    assert got.end > simulate(sched, costs).end
