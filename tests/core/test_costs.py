"""CostModel construction, its JSON round trip, the --cost flag and the shared CLI cost flags."""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Callable

import pytest

from pipesim.commands import UserError
from pipesim.commands._costargs import add_cost_args, costs_from_args, op_times
from pipesim.costs import CostError, CostModel, load_costs, parse_cost_flag
from pipesim.ir import Action, Op
from pipesim.schedules import get_schedule


def cost_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_cost_args(parser)
    return parser.parse_args(list(argv))


def test_uniform_defaults_split_b_evenly() -> None:
    c = CostModel.uniform(3)
    assert (c.forward, c.backward_input, c.backward_weight, c.backward) == (
        (1.0,) * 3, (1.0,) * 3, (1.0,) * 3, (2.0,) * 3)
    c = CostModel.uniform(2, F=2, B=5)
    assert c.backward_input == (2.5, 2.5) and c.backward == (5.0, 5.0)
    assert CostModel.uniform(1, F=1, I=3, W=1).backward == (4.0,)


def test_duration_and_message_time() -> None:
    c = CostModel.from_lists(2, [1, 2], [3, 4], [5, 6], activation_bytes=[100, 0],
                             comm_latency=0.5, comm_bandwidth=50)
    assert c.duration(Action(1, Op.W, 0)) == 6.0
    assert c.duration(Action(0, Op.B, 0)) == 8.0  # I + W when B is not given
    assert c.message_time(Action(0, Op.F, 0), Action(1, Op.F, 0)) == 0.5 + 100 / 50


def test_dict_round_trip(write_file: Callable[[str, str], str]) -> None:
    c = CostModel.from_lists(2, [1, 2], [3, 4], [5, 6], activation_bytes=[7, 8],
                             comm_latency=0.25, unit="ms")
    data = c.to_dict()
    assert data["comm_bandwidth"] is None  # infinity is not JSON
    assert CostModel.from_dict(json.loads(json.dumps(data))) == c
    assert load_costs(write_file("c.json", json.dumps(data)), 2) == c


@pytest.mark.parametrize(("data", "message"), [
    ({"forward": [1, 2]}, "missing field 'backward'"),
    ({"forward": [1, "x"], "backward": [1, 1]}, "'x' is not a finite number"),
    ({"forward": [1, 2, 3], "backward": [1, 1, 1]}, "costs have 3 stages, the schedule 2"),
    ({"forward": 1, "backward": 2, "speed": 3}, "unknown field 'speed'"),
    ({"forward": [1, -1], "backward": [2, 2]}, "-1 is not a finite number >= 0"),
    ([1, 2], "a cost file holds a JSON object"),
])
def test_bad_cost_dicts(data: object, message: str) -> None:
    with pytest.raises(CostError, match=message):
        CostModel.from_dict(data, stages=2)  # type: ignore[arg-type]


def test_load_costs_reports_unreadable_and_malformed(
        write_file: Callable[[str, str], str]) -> None:
    with pytest.raises(CostError, match="cannot read cost file"):
        load_costs("/nonexistent/costs.json")
    with pytest.raises(CostError, match="is not JSON"):
        load_costs(write_file("bad.json", "{forward: 1"))


def test_parse_cost_flag() -> None:
    assert parse_cost_flag("F=1,B=2") == {"F": 1.0, "B": 2.0}
    assert parse_cost_flag("f=1, i=0.5 ,w=2") == {"F": 1.0, "I": 0.5, "W": 2.0}
    for bad, message in [("F=x", "not a number"), ("B=2", "needs F"), ("F=1,Q=2", "OP=NUMBER"),
                         ("F=-1", ">= 0"), ("F=inf", ">= 0")]:
        with pytest.raises(CostError, match=message):
            parse_cost_flag(bad)


def test_op_times_fill_the_defaults() -> None:
    assert op_times(None) == {"F": 1.0, "I": 1.0, "W": 1.0, "B": 2.0}
    assert op_times("F=2,B=5") == {"F": 2.0, "I": 2.5, "W": 2.5, "B": 5.0}
    assert op_times("F=1,I=2,W=1") == {"F": 1.0, "I": 2.0, "W": 1.0, "B": 3.0}


def test_flags_build_a_cost_model_per_stage() -> None:
    one = get_schedule("1f1b", 4, 8)
    c = costs_from_args(cost_args("--cost", "F=2,B=5", "--comm-latency", "0.1",
                                  "--comm-bandwidth", "1e6", "--activation-bytes", "4e6",
                                  "--unit", "ms"), one)
    assert c.forward == (2.0,) * 4 and c.backward == (5.0,) * 4
    assert (c.comm_latency, c.comm_bandwidth, c.unit) == (0.1, 1e6, "ms")
    assert c.activation_bytes == (4e6,) * 4
    assert math.isinf(costs_from_args(cost_args(), one).comm_bandwidth)


def test_flags_divide_a_ranks_share_among_its_stages() -> None:
    # --cost is one rank's share; interleaved with v=2 runs each of its 2 stages at half
    sched = get_schedule("interleaved-1f1b", 2, 4, 2)
    c = costs_from_args(cost_args("--cost", "F=1,B=2"), sched)
    assert c.forward == (0.5,) * 4 and c.backward == (1.0,) * 4


def test_cost_file_is_used_as_written_and_flags_override(
        write_file: Callable[[str, str], str]) -> None:
    sched = get_schedule("zbv", 2, 4)  # 4 stages
    path = write_file("c.json", json.dumps({"forward": [1, 2, 3, 4], "backward": [2, 4, 6, 8],
                                            "comm_latency": 0.5}))
    c = costs_from_args(cost_args("--costs", path, "--comm-latency", "0.25"), sched)
    assert c.forward == (1.0, 2.0, 3.0, 4.0) and c.backward_input == (1.0, 2.0, 3.0, 4.0)
    assert c.comm_latency == 0.25
    with pytest.raises(UserError, match=r"c.json: the per-stage costs have 4 stages, "
                                         r"the schedule 2"):
        costs_from_args(cost_args("--costs", path), get_schedule("1f1b", 2, 4))
    with pytest.raises(UserError, match="not both"):
        costs_from_args(cost_args("--costs", path, "--cost", "F=1"), sched)


def test_overlap_factor_from_flag_file_and_dict(write_file: Callable[[str, str], str]) -> None:
    assert parse_cost_flag("F=1,overlap=0.8", overlap=True) == {"F": 1.0, "overlap": 0.8}
    with pytest.raises(CostError, match="OP=NUMBER"):
        parse_cost_flag("F=1,overlap=0.8")  # only where a cost model is built (not --synthetic)
    for bad in ("0", "1.5", "nan", "x"):
        with pytest.raises(CostError, match="overlap"):
            parse_cost_flag(f"F=1,overlap={bad}", overlap=True)
    sched = get_schedule("dualpipev", 2, 4)
    c = costs_from_args(cost_args("--cost", "F=1,I=1,W=1,overlap=0.8"), sched)
    assert c.overlap == 0.8 and c.forward == (0.5,) * 4
    assert costs_from_args(cost_args(), sched).overlap == 1.0
    again = CostModel.from_dict(c.to_dict())
    assert again == c and again.overlap == 0.8
    path = write_file("c.json", json.dumps({**c.to_dict(), "overlap": 0.6}))
    assert costs_from_args(cost_args("--costs", path), sched).overlap == 0.6
    with pytest.raises(CostError, match="overlap"):
        CostModel.uniform(2, overlap=0)


def test_stash_bytes_round_trip_and_are_optional() -> None:
    costs = CostModel.from_lists(2, 1.0, 1.0, 1.0, stash_bytes=[4e6, 2e6])
    assert costs.stash_bytes == (4e6, 2e6)
    assert CostModel.from_dict(json.loads(json.dumps(costs.to_dict()))) == costs
    plain = CostModel.uniform(2)
    assert plain.stash_bytes == () and "stash_bytes" not in plain.to_dict()
    with pytest.raises(CostError, match="stash_bytes: 1 values for 2 stages"):
        CostModel.from_dict({"forward": [1, 1], "backward": 2, "stash_bytes": [1]})
