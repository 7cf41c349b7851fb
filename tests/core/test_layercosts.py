"""Per-layer cost files: round trip, units, validation errors, layers summed into stages."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from pipesim.layercosts import (
    CostFileError,
    LayerCost,
    LayerCosts,
    load_layer_costs,
    parse_layer_costs,
    transformer_layer_costs,
)
from pipesim.stagecosts import stage_costs, stage_memory, stage_optimizer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "costs"


def small_file(**top: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "model": "toy", "microbatch_size": 2, "unit": "ms",
        "layers": [
            {"name": "a", "F": 1, "I": 2, "W": 3, "activation_bytes": 10, "stash_bytes": 100,
             "param_bytes": 1000, "optimizer": 0.5},
            {"F": 4, "B": 6, "activation_bytes": 20, "stash_bytes": 200, "param_bytes": 2000},
            {"F": 7, "I": 1, "W": 1, "B": 1.5, "activation_bytes": 30, "stash_bytes": 300,
             "param_bytes": 3000},
        ],
    }
    data.update(top)
    return data


def test_round_trip_through_json_text() -> None:
    costs = transformer_layer_costs(4, 64, 4, 16, 100, microbatch_size=2, model="tiny")
    again = parse_layer_costs(costs.to_json())
    assert again == costs
    assert LayerCosts.from_dict(json.loads(json.dumps(costs.to_dict()))) == costs


def test_units_defaults_and_backward_rules() -> None:
    costs = LayerCosts.from_dict(small_file(comm_latency=0.5, comm_bandwidth=1000,
                                            comm_send_overhead=0.25))
    a, b, c = costs.layers
    assert a == LayerCost(0.001, 0.002, 0.003, 0.005, 10, 100, 1000, "a", 0.0005)  # B = I + W
    assert b.optimizer == 0.0  # absent: no optimizer time
    assert (b.backward_input, b.backward_weight, b.backward) == (0.003, 0.003, 0.006)  # B only
    assert c.backward == 0.0015  # a measured B wins over I + W
    assert costs.comm_latency == 0.0005 and costs.comm_bandwidth == 1e6  # per ms -> per s
    assert costs.comm_send_overhead == 0.00025
    assert stage_costs(costs, [1, 2]).send_overhead == 0.00025
    assert costs.model == "toy" and costs.microbatch_size == 2
    plain = LayerCosts.from_dict({"microbatch_size": 1, "layers": [{"F": 1, "B": 2}]})
    assert plain.comm_bandwidth == math.inf and plain.layers[0].param_bytes == 0.0


def _set(path: str, value: Any) -> dict[str, Any]:
    data = small_file()
    target: Any = data
    keys = path.split(".")
    for k in keys[:-1]:
        target = target[int(k)] if isinstance(target, list) else target[k]
    if value is _DELETE:
        del target[keys[-1]]
    else:
        target[keys[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(("path", "value", "message"), [
    ("microbatch_size", _DELETE, "missing field 'microbatch_size'"),
    ("microbatch_size", 1.5, "microbatch_size: 1.5 is not an integer >= 1"),
    ("microbatch_size", 0, "microbatch_size: 0"),
    ("unit", "h", "unit: 'h' is not one of s, ms, us"),
    ("unit", 3, "unit: 3 is not a string"),
    ("model", 7, "model: 7 is not a string"),
    ("layers", [], "layers: expected a non-empty list"),
    ("layers", {"F": 1}, "layers: expected a non-empty list"),
    ("layers.0.F", -1, r"layers\[0\]\.F: -1 is not a finite number >= 0"),
    ("layers.0.F", "1", r"layers\[0\]\.F: '1' is not a finite number"),
    ("layers.1.F", math.nan, r"layers\[1\]\.F: nan"),
    ("layers.0.F", _DELETE, r"layers\[0\]: missing field 'F'"),
    ("layers.0.W", _DELETE, r"layers\[0\]: give both 'I' and 'W'"),
    ("layers.1.B", _DELETE, r"layers\[1\]: missing backward time"),
    ("layers.0.Fwd", 1, r"layers\[0\]: unknown field 'Fwd'"),
    ("layers.2.stash_bytes", True, r"layers\[2\]\.stash_bytes: True"),
    ("layers.2.name", 3, r"layers\[2\]\.name: 3 is not a string"),
    ("layers.0.optimizer", -0.1, r"layers\[0\]\.optimizer: -0.1 is not a finite number >= 0"),
    ("forward", [1, 2], "unknown field 'forward'"),
    ("comm_bandwidth", 0, "comm_bandwidth: 0 is not a finite number > 0"),
    ("comm_latency", -1, "comm_latency: -1"),
    ("comm_send_overhead", -1, "comm_send_overhead: -1"),
    ("format", "pipesim-stage-costs", "format: 'pipesim-stage-costs' is not"),
    ("version", 2, "version: 2 is not supported"),
])
def test_validation_errors_are_one_line(path: str, value: Any, message: str) -> None:
    with pytest.raises(CostFileError, match=message) as info:
        LayerCosts.from_dict(_set(path, value), "f.json")
    assert str(info.value).startswith("f.json: ") and "\n" not in str(info.value)


def test_not_an_object_and_not_json(tmp_path: Path) -> None:
    with pytest.raises(CostFileError, match="cost file: expected a JSON object, got list"):
        LayerCosts.from_dict([1, 2])
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    with pytest.raises(CostFileError, match=r"bad\.json: not JSON"):
        load_layer_costs(str(bad))
    with pytest.raises(CostFileError, match=r"cannot read cost file .*missing\.json"):
        load_layer_costs(str(tmp_path / "missing.json"))


def test_stage_costs_sum_layers_and_scale_with_microbatch_size() -> None:
    costs = LayerCosts.from_dict(small_file(comm_latency=0.5, comm_bandwidth=1000,
                                            comm_send_overhead=0.25))
    model = stage_costs(costs, [2, 1])
    assert model.stages == 2 and model.unit == "s"
    assert model.forward == pytest.approx((0.005, 0.007))
    assert model.backward_input == pytest.approx((0.005, 0.001))
    assert model.backward == pytest.approx((0.011, 0.0015))
    assert model.activation_bytes == (20.0, 30.0)  # each stage's last layer's output
    assert model.param_bytes == (3000.0, 3000.0)
    assert (model.comm_latency, model.comm_bandwidth) == (0.0005, 1e6)
    doubled = stage_costs(costs, [2, 1], microbatch_size=4)  # profiled at 2
    assert doubled.forward == pytest.approx((0.010, 0.014))
    assert doubled.activation_bytes == (40.0, 60.0)
    assert doubled.param_bytes == model.param_bytes  # parameters do not scale
    stash, params = stage_memory(costs, [1, 2], microbatch_size=1)
    assert stash == [50.0, 250.0] and params == [1000.0, 5000.0]
    # what a stage stashes is the sum of its layers' stashes, not its output's bytes
    assert stage_costs(costs, [1, 2], microbatch_size=1).stash_bytes == (50.0, 250.0)


def test_stage_costs_checks_the_balance() -> None:
    costs = LayerCosts.from_dict(small_file())
    with pytest.raises(ValueError, match="covers 2 layers; the model has 3"):
        stage_costs(costs, [1, 1])
    with pytest.raises(ValueError, match="covers 4 layers"):
        stage_memory(costs, [2, 2])


@pytest.mark.parametrize("name", ["gpt-10b-48l.json", "gpt-58b-128l.json"])
def test_example_files_load(name: str) -> None:
    costs = load_layer_costs(str(EXAMPLES / name))
    assert costs.model == name.removesuffix(".json")
    assert costs.layers[0].name == "embed" and costs.layers[-1].name == "head"
    assert "illustrative" in costs.notes
    # the file is what the documented generator writes
    blocks, hidden = (48, 4096) if "48l" in name else (128, 6144)
    heads = hidden // 128
    assert costs == transformer_layer_costs(blocks, hidden, heads, 2048, 51200, model=costs.model)


def test_optimizer_time_sums_per_stage_and_ignores_the_microbatch_size() -> None:
    costs = LayerCosts.from_dict(small_file())
    again = parse_layer_costs(costs.to_json())
    assert again == costs and again.layers[0].optimizer == 0.0005
    assert stage_optimizer(costs, [1, 2]) == [0.0005, 0.0]
    with_all = LayerCosts(tuple(c._replace(optimizer=1.0) for c in costs.layers), 2)
    assert stage_optimizer(with_all, [2, 1]) == [2.0, 1.0]
    # the microbatch size scales F/I/W/B, never the optimizer's once-a-step update
    four_times = stage_costs(with_all, [2, 1], 8).forward[0]
    assert four_times == 4 * stage_costs(with_all, [2, 1]).forward[0]
    with pytest.raises(ValueError):
        stage_optimizer(with_all, [1, 1])
