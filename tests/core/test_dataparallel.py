"""Data parallel x pipeline: the ring all-reduce cost, its overlap with the pipeline, links."""

from __future__ import annotations

import math

import pytest

from pipesim.costs import CostModel
from pipesim.ir import Op
from pipesim.planner.dataparallel import (
    DPConfig,
    grad_ready,
    microbatch_counts_for,
    ring_allreduce_time,
    simulate_dp,
    step_lower_bound,
    world_splits,
)
from pipesim.schedules import SCHEDULES, get_schedule
from pipesim.simulate import simulate
from pipesim.timeline import Span

INF = math.inf


def slow_link(replicas: int, **kwargs: float) -> DPConfig:
    """Every ring inter-node (one GPU per node); latency 0 and bandwidth 1 unless given."""
    args: dict[str, float] = {"latency": 0.0, "bandwidth": 1.0, "bucket_bytes": INF} | kwargs
    return DPConfig(replicas, ranks_per_node=1, **args)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the ring


def test_ring_closed_form_exactly() -> None:
    # 2(D-1)/D x n / bandwidth + 2(D-1) x latency (Patarasuk & Yuan 2009; NCCL's bus bandwidth)
    assert ring_allreduce_time(2**20, 4, 0.5, 1024.0) == 1.5 * 1024 + 6 * 0.5
    assert ring_allreduce_time(1000.0, 2, 0.25, 10.0) == 100.0 + 0.5
    assert ring_allreduce_time(1000.0, 1, 0.25, 10.0) == 0.0  # one replica: nothing to reduce
    assert ring_allreduce_time(0.0, 8, 0.25, 10.0) == 0.0
    with pytest.raises(ValueError, match="replicas must be >= 1"):
        ring_allreduce_time(1.0, 0, 0.0, 1.0)


def ring_allreduce_by_steps(vectors: list[list[float]], latency: float, bandwidth: float,
                            item_bytes: float) -> tuple[list[list[float]], float]:
    """Run a ring all-reduce element by element: D-1 reduce-scatter steps, D-1 all-gather.

    In each step every rank sends one chunk (n / D items) to the next rank; the step lasts
    latency + chunk bytes / bandwidth. Returns every rank's result and the total time.
    """
    d, n = len(vectors), len(vectors[0])
    size = n // d
    data = [list(v) for v in vectors]
    chunk = [slice(c * size, (c + 1) * size) for c in range(d)]
    elapsed = 0.0
    for step in range(2 * (d - 1)):
        sends = []
        for r in range(d):
            c = (r - step) % d  # the chunk rank r passes on in this step
            sends.append(((r + 1) % d, c, data[r][chunk[c]]))
        for dst, c, values in sends:
            if step < d - 1:  # reduce-scatter: add
                data[dst][chunk[c]] = [a + b for a, b in zip(data[dst][chunk[c]], values,
                                                             strict=True)]
            else:  # all-gather: copy the finished chunk
                data[dst][chunk[c]] = values
        elapsed += latency + size * item_bytes / bandwidth
    return data, elapsed


@pytest.mark.parametrize("replicas", [2, 3, 4, 8])
def test_ring_formula_matches_a_ring_run_step_by_step(replicas: int) -> None:
    n = 24 * replicas
    vectors = [[float(r * 1000 + i) for i in range(n)] for r in range(replicas)]
    result, elapsed = ring_allreduce_by_steps(vectors, 0.5, 64.0, 4.0)
    total = [sum(col) for col in zip(*vectors, strict=True)]
    assert all(row == total for row in result)
    assert elapsed == pytest.approx(ring_allreduce_time(n * 4.0, replicas, 0.5, 64.0),
                                    rel=1e-12)


def test_buckets_run_one_after_another() -> None:
    dp = slow_link(2, latency=1.0, bucket_bytes=100.0)
    one = ring_allreduce_time
    # 250 bytes: buckets of 100, 100, 50; each pays the ring's 2(D-1) latency steps
    assert dp.allreduce_time(250.0, 0, 4) == 2 * one(100.0, 2, 1.0, 1.0) + one(50.0, 2, 1.0, 1.0)
    assert dp.allreduce_time(250.0, 0, 4) == 250.0 + 3 * 2.0
    assert dp.allreduce_time(200.0, 0, 4) == 200.0 + 2 * 2.0  # no empty third bucket
    assert dp.allreduce_time(60.0, 0, 4) == 60.0 + 2.0
    assert slow_link(2, latency=1.0).allreduce_time(250.0, 0, 4) == 250.0 + 2.0  # inf: one
    assert DPConfig(1).allreduce_time(1e9, 0, 4) == 0.0


# ----------------------------------------------------------------------------- links


@pytest.mark.parametrize(("pp", "dp", "order", "intra"), [
    (2, 4, "pipeline-first", [True, True]),  # 8 GPUs: the whole world is one node
    (8, 2, "pipeline-first", [False] * 8),  # a stage's replicas sit 8 ranks apart
    (4, 4, "pipeline-first", [False] * 4),  # ranks r, r+4 | r+8, r+12: two nodes
    (3, 3, "pipeline-first", [True, True, False]),  # 0,3,6 and 1,4,7 in node 0; 2,5,8 not
    (8, 2, "replica-first", [True] * 8),  # a stage's replicas are neighbours
    (2, 16, "replica-first", [False, False]),  # 16 replicas cannot share an 8-GPU node
])
def test_intra_or_inter_node_ring(pp: int, dp: int, order: str, intra: list[bool]) -> None:
    config = DPConfig(dp, order=order)
    assert [config.intra_node(r, pp) for r in range(pp)] == intra


def test_link_speed_follows_the_node_rule() -> None:
    config = DPConfig(2, latency=0.5, bandwidth=10.0, intra_node_latency=0.25,
                      intra_node_bandwidth=100.0, bucket_bytes=INF)
    assert config.global_rank(1, 3, 4) == 7
    assert config.allreduce_time(1000.0, 0, 4) == 10.0 + 0.5  # ranks 0 and 4: one node
    assert config.allreduce_time(1000.0, 0, 8) == 100.0 + 1.0  # ranks 0 and 8: two nodes
    replica_first = DPConfig(2, order="replica-first", bandwidth=10.0, bucket_bytes=INF,
                             intra_node_bandwidth=100.0, intra_node_latency=0.0)
    assert replica_first.global_rank(1, 3, 8) == 7
    assert replica_first.allreduce_time(1000.0, 7, 8) == 10.0


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"replicas": 0}, "replicas must be an integer >= 1"),
    ({"ranks_per_node": 0}, "ranks_per_node must be"),
    ({"latency": -1.0}, "latency must be a finite number >= 0"),
    ({"bandwidth": 0.0}, "bandwidth must be > 0"),
    ({"bucket_bytes": 0.0}, "bucket_bytes must be > 0"),
    ({"order": "diagonal"}, "unknown rank order 'diagonal'; valid: pipeline-first"),
])
def test_bad_dp_config(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DPConfig(**kwargs)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- the step


def test_one_replica_changes_nothing() -> None:
    sched = get_schedule("zbv", 4, 8)
    costs = CostModel.uniform(sched.stages, F=1, B=2, param_bytes=1e9, comm_latency=0.1)
    result = simulate_dp(sched, costs, DPConfig(1))
    plain = simulate(sched, costs)
    assert result.timeline.events == plain.events and result.timeline.spans == ()
    assert result.step_time == result.makespan == plain.makespan
    assert result.exposed_allreduce == 0.0


def test_1f1b_first_stage_exposed_later_stage_hidden_by_hand() -> None:
    # 1F1B, 2 ranks, 2 microbatches, F = 1, B = 2, no message cost:
    #   rank 0  F0 F1 .. B0 B0 .  B1 B1        time 0 1 2 3 4 5 6 7 8 9
    #   rank 1  .  F0 B0 B0 F1 B1 B1
    # stage 1's last B ends at 7, stage 0's at 9 (the step's last action). D = 2 replicas on
    # a bandwidth-1 link: a ring moves 2(D-1)/D x n = n bytes, so n bytes take n.
    sched = get_schedule("1f1b", 2, 2)
    costs = CostModel.uniform(2, F=1, B=2, param_bytes=[1.5, 1.5])
    result = simulate_dp(sched, costs, slow_link(2))
    assert result.makespan == 9.0
    assert result.timeline.spans == (Span(0, "allreduce stage 0", 9.0, 10.5),
                                     Span(1, "allreduce stage 1", 7.0, 8.5))  # 8.5 < 9: hidden
    assert (result.step_time, result.exposed_allreduce) == (10.5, 1.5)
    # stage 1's all-reduce longer than the 2 units it can hide in: 7 + 3.5 = 10.5
    longer = simulate_dp(sched, CostModel.uniform(2, F=1, B=2, param_bytes=[1.0, 3.5]),
                         slow_link(2))
    assert [r.step_end for r in longer.per_rank] == [10.0, 10.5]
    assert (longer.step_time, longer.exposed_allreduce) == (10.5, 1.5)
    # the optimizer steps after the last all-reduce; it is not counted as exposed
    opt = simulate_dp(sched, costs, slow_link(2, optimizer_time=0.25))
    assert (opt.step_time, opt.exposed_allreduce) == (10.75, 1.5)
    assert opt.timeline.meta["step_time"] == 10.75


def test_split_backward_waits_for_the_last_w() -> None:
    sched = get_schedule("zb-h1", 3, 6)
    costs = CostModel.uniform(3, F=1, I=1, W=1, param_bytes=2.0)
    result = simulate_dp(sched, costs, slow_link(2))
    for span in result.timeline.spans:
        stage = int(span.name.rsplit(" ", 1)[1])
        mine = [e for e in result.timeline.events if e.action.stage == stage]
        assert span.start == max(e.end for e in mine if e.action.op is Op.W)
        assert span.start > max(e.end for e in mine if e.action.op is Op.I)
        assert span.end - span.start == 2.0


def test_stages_of_one_rank_share_its_comm_stream() -> None:
    # interleaved: rank 0 holds stages 0 and 2; stage 2 is ready first, stage 0 must queue
    sched = get_schedule("interleaved-1f1b", 2, 4, 2)
    costs = CostModel.uniform(4, F=1, B=2, param_bytes=20.0)
    result = simulate_dp(sched, costs, slow_link(2))
    ready = {(r, s): result.timeline.events[i].end for r, s, i in grad_ready(sched).stages}
    rank0 = sorted((s for s in result.timeline.spans if s.rank == 0), key=lambda s: s.start)
    assert [s.name for s in rank0] == ["allreduce stage 2", "allreduce stage 0"]
    assert rank0[0].start == ready[(0, 2)]
    assert ready[(0, 0)] < rank0[0].end  # stage 0 became ready while stage 2 was reducing
    assert rank0[1].start == rank0[0].end and rank0[1].end == rank0[0].end + 20.0
    assert result.per_rank[0].allreduce_busy == 40.0
    assert result.step_time == rank0[1].end


def test_no_param_bytes_no_allreduce() -> None:
    sched = get_schedule("1f1b", 2, 4)
    result = simulate_dp(sched, CostModel.uniform(2), slow_link(8))
    assert result.timeline.spans == () and result.step_time == result.makespan


@pytest.mark.parametrize("name", [n for n, spec in SCHEDULES.items() if spec.training])
def test_lower_bound_never_beats_the_simulation(name: str) -> None:
    sched = get_schedule(name, 4, 8)
    costs = CostModel.from_lists(sched.stages, [1.0 + s % 3 for s in range(sched.stages)], 1.5,
                                 [0.5 + s % 2 for s in range(sched.stages)],
                                 param_bytes=[3.0 * (s + 1) for s in range(sched.stages)],
                                 comm_latency=0.1)
    for dp in (DPConfig(1), slow_link(4), slow_link(2, latency=0.5, bucket_bytes=2.0)):
        bound = step_lower_bound(costs, 8, 4, dp)
        assert 0 < bound <= simulate_dp(sched, costs, dp).step_time


def test_lower_bound_holds_for_overlapped_pairs() -> None:
    sched = get_schedule("dualpipev", 4, 8)
    for overlap in (1.0, 0.8, 0.5):
        costs = CostModel.uniform(8, F=0.5, I=0.5, W=0.5, overlap=overlap)
        assert 0 < step_lower_bound(costs, 8, 4, DPConfig(1)) <= simulate(sched, costs).makespan


def test_lower_bound_is_tight_for_1f1b_without_w() -> None:
    # with W = 0 (nothing to gain by splitting B) the last stage's bound - microbatch 0's way
    # up, its m F's and B's, the last gradient's way back down - is 1F1B's (m + P - 1)(F + B)
    costs = CostModel.uniform(4, F=1, I=2, W=0)
    bound = step_lower_bound(costs, 8, 4, DPConfig(1))
    assert bound == pytest.approx(simulate(get_schedule("1f1b", 4, 8), costs).makespan)
    assert bound == pytest.approx((8 + 4 - 1) * 3.0)
    # with W > 0 it cannot know the schedule will not split B, so it stays below: 3 + 8 x 3
    assert step_lower_bound(CostModel.uniform(4, F=1, B=2), 8, 4, DPConfig(1)) == \
        pytest.approx(27.0)


# ----------------------------------------------------------------------------- splits


def test_world_splits() -> None:
    assert world_splits(8, 4, 16) == [
        (1, 8, "the model has 4 layers, fewer than the pipeline ranks"),
        (2, 4, ""), (4, 2, ""), (8, 1, "")]
    assert world_splits(8, 8, 6, replicas=[4, 2]) == [
        (2, 4, ""), (4, 2, "batch 6 does not split evenly over 4 replicas")]
    with pytest.raises(ValueError, match="3 replicas do not divide 8 GPUs; valid: 1, 2, 4, 8"):
        world_splits(8, 8, 8, replicas=[3])


def test_microbatch_counts_for_a_split() -> None:
    assert microbatch_counts_for(64, 8) == [8, 16, 32]  # P to 4P
    assert microbatch_counts_for(4, 8) == [4]  # none in range: the nearest below
    assert microbatch_counts_for(96, 5) == [6, 8, 12, 16]
    assert microbatch_counts_for(13, 2) == [1, 13]  # nearest below 2, nearest above 8
    assert microbatch_counts_for(64, 8, [3, 4, 64]) == [4, 64]


def test_chrome_trace_draws_the_allreduce_spans() -> None:
    from pipesim.views.chrome_trace import render_chrome_trace

    result = simulate_dp(get_schedule("1f1b", 2, 2), CostModel.uniform(2, param_bytes=1.0),
                         slow_link(2))
    trace = render_chrome_trace(result.timeline)
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e["name"] for e in events if e.get("cat") == "span"}
    assert names == {"allreduce stage 0", "allreduce stage 1"}
