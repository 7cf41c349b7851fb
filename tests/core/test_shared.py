"""Ranks sharing CPU cores (``pipesim.shared``): simulate's timeline when each rank has a core,
hand-worked timelines when they share, the bounds sharing must keep, and its wiring.

Legend: p ranks, m microbatches; F, B the per-stage op times. On c cores, n ranks computing at
once each run at min(1, c / n) of their speed; a rank waiting for an input computes nothing.
"""

from __future__ import annotations

from dataclasses import replace
from itertools import pairwise

import pytest

from pipesim.costs import CostModel
from pipesim.ir import Action, Op, Schedule
from pipesim.schedule_io import parse_text
from pipesim.schedules import get_schedule
from pipesim.shared import simulate_shared
from pipesim.simulate import DeadlockError, simulate, work_tables
from pipesim.steady import steady_step
from pipesim.timeline import Timeline
from tests.core.test_simulate import CONFIGS, config_id, random_costs


def _rows(timeline: Timeline) -> list[tuple[int, str, float, float]]:
    return [(e.rank, str(e.action), e.start, e.end) for e in timeline.events]


def _assert_close(got: Timeline, want: Timeline) -> None:
    """Same events and messages in the same order, times within 1e-9 relative."""
    def close(x: float, y: float) -> bool:
        return abs(x - y) <= 1e-9 * max(1.0, abs(y))
    assert len(got.events) == len(want.events)
    for g, w in zip(got.events, want.events, strict=True):
        assert (g.rank, g.action) == (w.rank, w.action)
        assert close(g.start, w.start) and close(g.end, w.end), (g, w)
    assert len(got.messages) == len(want.messages)
    for gm, wm in zip(got.messages, want.messages, strict=True):
        assert gm[:4] == wm[:4] and close(gm.send, wm.send) and close(gm.arrive, wm.arrive)
    assert (got.ranks, got.unit, got.name, got.stage_to_rank, got.microbatches, got.pairs) == (
        want.ranks, want.unit, want.name, want.stage_to_rank, want.microbatches, want.pairs)


def _work(schedule: Schedule, costs: CostModel) -> float:
    """All the CPU work of a step: each action with its send overhead and the engine's time
    before it; an overlapped pair overlap x (F + B) plus both sends, and the engine's time once."""
    raw, dur, _ = work_tables(schedule, costs)
    total = costs.action_overhead * (schedule.num_actions - len(schedule.pairs))
    for row in schedule.actions:
        for a in row:
            part = raw[a.op][a.stage] * (costs.overlap if a in schedule.partner else 1.0)
            total += part + dur[a.op][a.stage] - raw[a.op][a.stage]
    return total


# ----------------------------------------------------------------------------- a core each


@pytest.mark.parametrize("schedule", CONFIGS, ids=config_id)
def test_a_core_per_rank_is_simulate(schedule: Schedule) -> None:
    # random per-stage costs with bytes over a bandwidth and latency (random_costs), and on
    # top the engine's time per action, the sender's time per message and staggered starts
    costs = random_costs(schedule, seed=schedule.num_actions)
    busy = replace(costs, action_overhead=0.125, send_overhead=0.0625)
    start = [0.375 * r for r in range(schedule.ranks)][::-1]
    for cost, begin in ((costs, None), (busy, start)):
        want = simulate(schedule, cost, begin)
        for cores in (schedule.ranks, schedule.ranks + 3):
            got = simulate_shared(schedule, cost, cores, begin)
            _assert_close(got, want)
            assert got.meta["cores"] == cores


@pytest.mark.parametrize("overlap", [0.7, 1.0])  # pairs as one unit, and one part after the other
def test_a_core_per_rank_is_simulate_for_dualpipev_with_every_cost(overlap: float) -> None:
    for p, m, latency in ((4, 8, 0.05), (2, 4, 1.0), (3, 7, 0.5)):
        sched = get_schedule("dualpipev", p, m)
        assert sched.pairs
        costs = CostModel.from_lists(2 * p, [1.0 + 0.1 * s for s in range(2 * p)],
                                     [1.25 - 0.1 * s for s in range(2 * p)], 0.5, None,
                                     activation_bytes=300.0, comm_latency=latency,
                                     comm_bandwidth=1000.0, send_overhead=0.03, overlap=overlap,
                                     action_overhead=0.02)
        _assert_close(simulate_shared(sched, costs, p), simulate(sched, costs))


# ----------------------------------------------------------------------------- sharing


def test_two_ranks_on_one_core_by_hand() -> None:
    """gpipe p=2 m=2, F=1 B=2, no comm, 1 core. Rows: r0 0F0 0F1 0B0 0B1, r1 1F0 1F1 1B0 1B1.

    t=0   r0 runs 0F0 alone (r1 waits for it): ends at 1
    t=1   r0 0F1 and r1 1F0 share the core, each at 1/2: 1 of work each, both end at 3
    t=3   r0 wants 0B0, which waits for 1B0: r0 computes nothing; r1 runs 1F1 alone: 3 -> 4
    t=4   r1 runs 1B0 alone: 4 -> 6
    t=6   r0 0B0 and r1 1B1 share, each at 1/2: 2 of work each, both end at 10
    t=10  r0 runs 0B1 alone: 10 -> 12
    The core never idles: 12 = 4 F + 4 B, where a core per rank takes 9.
    """
    sched, costs = get_schedule("gpipe", 2, 2), CostModel.uniform(2, F=1, B=2)
    got = simulate_shared(sched, costs, 1)
    assert _rows(got) == [(0, "0F0", 0, 1), (0, "0F1", 1, 3), (0, "0B0", 6, 10),
                          (0, "0B1", 10, 12), (1, "1F0", 1, 3), (1, "1F1", 3, 4),
                          (1, "1B0", 4, 6), (1, "1B1", 6, 10)]
    assert [(m.send, m.arrive) for m in got.messages] == [(6, 6), (10, 10), (1, 1), (3, 3)]
    assert simulate(sched, costs).makespan == 9


def test_the_engines_time_and_a_send_share_the_core_too() -> None:
    """gpipe p=2 m=1, F=1 B=2, send 0.5, the engine's 0.25 before each action, 1 core.

    Work: 0F0 1.5 (it sends), 1F0 1, 1B0 2.5 (it sends), 0B0 2, and 0.25 before each.
    t=0    both ranks spend their engine's 0.25, sharing: both done at 0.5
    t=0.5  r0 runs 0F0 alone (r1 waits for it): 0.5 -> 2
    t=2    r0's engine (0.25) and r1's 1F0 share: r0's done at 2.5, when 1F0 has 0.75 left;
           r0 then waits for 1B0, computing nothing, and 1F0 ends alone at 3.25
    t=3.25 r1's engine alone to 3.5, 1B0 alone to 6; then r0's 0B0 6 -> 8
    The core never idles: 8 is all the work; with a core each, 7.5.
    """
    sched = get_schedule("gpipe", 2, 1)
    costs = CostModel.uniform(2, send_overhead=0.5, action_overhead=0.25)
    got = simulate_shared(sched, costs, 1)
    assert _rows(got) == [(0, "0F0", 0.5, 2.0), (0, "0B0", 6.0, 8.0),
                          (1, "1F0", 2.0, 3.25), (1, "1B0", 3.5, 6.0)]
    assert got.end == _work(sched, costs)  # the core never idles
    assert simulate(sched, costs).end == 7.5


def test_work_before_the_first_action_and_after_the_last_shares_the_core_by_hand() -> None:
    """gpipe p=2 m=1, F=1 B=2; rank 1 does 1 of work before its step, rank 0 2 after it.

    1 core: t=0 r0's 0F0 and r1's before-work share, both end at 2; r1 runs 1F0 2 -> 3 and
    1B0 3 -> 5 alone (r0 waits for it); r0 runs 0B0 5 -> 7 and its after-work 7 -> 9. The core
    never idles: 9 is all the work. 2 cores: r0 0F0 0 -> 1 while r1's before-work ends at 1;
    1F0 1 -> 2, 1B0 2 -> 4, 0B0 4 -> 6, r0's after-work 6 -> 8.
    """
    sched, costs = get_schedule("gpipe", 2, 1), CostModel.uniform(2, F=1, B=2)
    one = simulate_shared(sched, costs, 1, before=[0.0, 1.0], after=[2.0, 0.0])
    assert _rows(one) == [(0, "0F0", 0, 2), (0, "0B0", 5, 7), (1, "1F0", 2, 3), (1, "1B0", 3, 5)]
    assert one.meta["finished"] == [9, 5]
    two = simulate_shared(sched, costs, 2, before=[0.0, 1.0], after=[2.0, 0.0])
    assert _rows(two) == [(0, "0F0", 0, 1), (0, "0B0", 4, 6), (1, "1F0", 1, 2), (1, "1B0", 2, 4)]
    assert two.meta["finished"] == [8, 4]
    assert simulate_shared(sched, costs, 1).meta["finished"] == [6, 4]  # none: the last end
    with pytest.raises(ValueError, match="after needs one time >= 0 per rank"):
        simulate_shared(sched, costs, 1, after=[1.0])
    with pytest.raises(ValueError, match="before needs one time >= 0 per rank"):
        simulate_shared(sched, costs, 1, before=[1.0, -1.0])


def test_an_overlapped_pair_shares_as_one_unit_by_hand() -> None:
    """r0 0F0 0F1 0F2 (0F3;0B0) 0B1..., r1 1F0 1B0 1F1 1B1..., F=1 B=2, overlap 0.5, 1 core.

    0F0 [0,1] alone; 0F1 and 1F0 share [1,3]; 0F2 and 1B0 share [3,5] (1B0 has 1 left); the
    pair waits for 1B0, which ends alone at 6. The pair (work 0.5 x 3 = 1.5) and 1F1 (1) share
    from 6: 1F1 ends at 8, the pair's F part (0.5 of work) at 7; then the pair (0.5 left) and
    1B1 share: the pair ends at 9, and both its outputs leave then.
    """
    sched = parse_text("0F0 0F1 0F2 (0F3;0B0)OVERLAP_F_B 0B1 0B2 0B3\n"
                       "1F0 1B0 1F1 1B1 1F2 1B2 1F3 1B3", "pair")
    costs = CostModel.uniform(2, F=1, B=2, overlap=0.5)
    got = _rows(simulate_shared(sched, costs, 1))
    assert got[:5] == [(0, "0F0", 0, 1), (0, "0F1", 1, 3), (0, "0F2", 3, 5), (0, "0F3", 6, 7),
                       (0, "0B0", 7, 9)]
    assert got[8:11] == [(1, "1F0", 1, 3), (1, "1B0", 3, 6), (1, "1F1", 6, 8)]


SHARED = [get_schedule(name, p, m) for name, p, m in (
    ("gpipe", 4, 8), ("1f1b", 4, 8), ("interleaved-1f1b", 2, 4), ("zb-h1", 3, 6),
    ("zbv", 2, 4), ("dualpipev", 4, 8))]


@pytest.mark.parametrize("schedule", SHARED, ids=config_id)
def test_one_core_does_all_the_work_one_piece_at_a_time(schedule: Schedule) -> None:
    costs = replace(random_costs(schedule, seed=3), action_overhead=0.05, send_overhead=0.02)
    work = _work(schedule, costs)
    for cores in range(1, schedule.ranks + 1):
        span = simulate_shared(schedule, costs, cores).end  # every rank starts at 0
        assert span >= work / cores * (1 - 1e-12)
    alone = get_schedule("gpipe", 1, 4)  # one rank: nothing to share, its work back to back
    assert simulate_shared(alone, costs=None, cores=1).end == _work(alone, CostModel.uniform(1))


@pytest.mark.parametrize("schedule", SHARED, ids=config_id)
def test_fewer_cores_never_shorten_the_step(schedule: Schedule) -> None:
    costs = replace(random_costs(schedule, seed=5), action_overhead=0.03)
    spans = [simulate_shared(schedule, costs, c).makespan for c in range(1, schedule.ranks + 2)]
    assert all(a >= b * (1 - 1e-12) for a, b in pairwise(spans)), spans
    assert spans[0] > spans[-1]  # and sharing does cost something here


# ----------------------------------------------------------------------------- errors


def test_deadlocks_are_simulates() -> None:
    crossed = Schedule(2, 2, 1, (0, 1), ((Action(0, Op.F, 0), Action(0, Op.B, 0)),
                                         (Action(1, Op.B, 0), Action(1, Op.F, 0))), "crossed")
    own = parse_text("0F0 (0F1;0B1)OVERLAP_F_B 0B0\n1F0 1F1 1B1 1B0", "needs its own output")
    for sched in (crossed, own):
        with pytest.raises(DeadlockError) as want:
            simulate(sched)
        with pytest.raises(DeadlockError) as got:
            simulate_shared(sched, None, 1)
        assert got.value.stuck == want.value.stuck and str(got.value) == str(want.value)


def test_what_simulate_refuses_and_cores_below_one_are_value_errors() -> None:
    sched, f0 = get_schedule("1f1b", 2, 2), Action(0, Op.F, 0)
    for cores in (0, -1):
        with pytest.raises(ValueError, match="cores must be an integer >= 1"):
            simulate_shared(sched, None, cores)
        with pytest.raises(ValueError, match="cores must be an integer >= 1"):
            steady_step(sched, cores=cores)
    with pytest.raises(ValueError, match="more than once"):
        simulate_shared(Schedule(1, 1, 1, (0,), ((f0, f0, Action(0, Op.B, 0)),)), None, 1)
    with pytest.raises(ValueError, match="0F5 on rank 0 is out of range"):
        simulate_shared(Schedule(1, 1, 1, (0,), ((f0, Action(0, Op.F, 5)),)), None, 1)
    with pytest.raises(ValueError, match="cost model has 3 stages"):
        simulate_shared(sched, CostModel.uniform(3), 1)
    with pytest.raises(ValueError, match="start has 1 times"):
        simulate_shared(sched, None, 1, [0.0])


# ----------------------------------------------------------------------------- steady steps


def test_steady_step_on_shared_cores_by_hand() -> None:
    # gpipe p=2 m=2, F=1 B=2 on 1 core (test_two_ranks_on_one_core_by_hand): rank 1 ends its
    # step at 10 and waits for rank 0's next 0F0 (no CPU), rank 0 ends at 12, so the step is
    # the core's 12 of work; with a core each it is the makespan, 9
    sched, costs = get_schedule("gpipe", 2, 2), CostModel.uniform(2, F=1, B=2)
    shared = steady_step(sched, costs, cores=1)
    assert shared.step == 12 and shared.timeline.meta["cores"] == 1
    assert steady_step(sched, costs).step == steady_step(sched, costs, cores=2).step == 9
    # between steps is a delay, not CPU work: rank 1's 2 fit in its wait for rank 0
    assert steady_step(sched, costs, [0.0, 2.0], cores=1).step == 12


@pytest.mark.parametrize("schedule", SHARED[1::2], ids=config_id)
def test_a_steady_step_on_fewer_cores_is_no_shorter(schedule: Schedule) -> None:
    costs = random_costs(schedule, seed=11)
    between = [0.25 * r for r in range(schedule.ranks)]
    own = steady_step(schedule, costs, between).step
    assert steady_step(schedule, costs, between, cores=schedule.ranks).step == own
    half = steady_step(schedule, costs, between, cores=max(1, schedule.ranks // 2)).step
    one = steady_step(schedule, costs, between, cores=1).step
    assert own <= half * (1 + 1e-12) and half <= one * (1 + 1e-12)
    assert one >= _work(schedule, costs) * (1 - 1e-12)


def test_a_steady_step_whose_ranks_meet_by_hand() -> None:
    """gpipe p=2 m=1, F=1 B=2: r0 F [0,1], r1 F [1,2] and B [2,4], r0 B [4,6]. Between steps
    rank 1 spends 3: with a meeting 0.5 after the last rank is through, every step begins at
    max(6 + 0, 4 + 3) + 0.5 = 7.5 (on one core too: nothing overlaps here); without one,
    rank 1's update (4 -> 7) hides behind rank 0's B and next F (6 -> 7): the step is 6."""
    sched, costs = get_schedule("gpipe", 2, 1), CostModel.uniform(2, F=1, B=2)
    met = steady_step(sched, costs, [0.0, 3.0], barrier=0.5)
    assert met.step == 7.5 and met.steps == 1
    assert steady_step(sched, costs, [0.0, 3.0], cores=1, barrier=0.5).step == 7.5
    assert steady_step(sched, costs, [0.0, 3.0]).step == 6
    with pytest.raises(ValueError, match="barrier must be >= 0"):
        steady_step(sched, costs, barrier=-1.0)
