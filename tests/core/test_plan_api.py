"""pipesim.plan from Python (planning_api) and the command `pipesim plan` prints (issue 16.3).

Pure tier: cost files written here; no torch.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from pipesim.cli import main
from pipesim.layercosts import (
    CostFileError,
    LayerCost,
    LayerCosts,
    ProfiledModel,
    parse_layer_costs,
)
from pipesim.planner.api import memory_limit_bytes, plan
from pipesim.planner.dataparallel import DPConfig
from pipesim.planner.search import plan as plan_all
from pipesim.planner.search import plan_world
from pipesim.planner.space import PlanError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "costs"
PIPELINE_KEYS = {"schedule", "microbatches", "virtual_stages", "balance", "dp",
                 "checkpoint_activations"}
GPT = ProfiledModel("gpt", 128, 6, "adam", seq_len=64, heads=8)


def layers(n: int = 8, stash: float = 1.0, params: float = 0.0,
           profiled: ProfiledModel | None = None) -> LayerCosts:
    """n identical layers: F = I = W = 1 s, B = 2 s."""
    layer = LayerCost(1.0, 1.0, 1.0, 2.0, 0.0, stash, params)
    return LayerCosts((layer,) * n, 1, "toy", profiled=profiled)


def test_pipeline_args_are_the_best_row_of_the_plan_table() -> None:
    best = plan(layers(), ranks=4, batch=8, memory_limit=10)
    row = plan_all(layers(), 4, 8, 10).best
    assert row is not None and best == row
    assert set(best.pipeline_args) == PIPELINE_KEYS
    c = best.config
    assert best.pipeline_args == {
        "schedule": c.schedule, "microbatches": c.microbatches,
        "virtual_stages": c.virtual_stages, "balance": c.balance, "dp": 1,
        "checkpoint_activations": False}
    assert isinstance(c.balance, tuple) and sum(c.balance) == 8
    assert len(c.balance) == 4 * c.virtual_stages
    assert best.predicted_step_seconds > 0 and max(best.peak_memory_bytes) <= 10


def test_world_size_plans_replicas_too() -> None:
    costs = layers(params=1000.0)
    best = plan(costs, world_size=8, batch=32, network=DPConfig(bandwidth=1.0, latency=0.0))
    full = plan_world(costs, 8, 32, network=DPConfig(bandwidth=1.0, latency=0.0))
    assert full.best is not None
    assert (best.config, best.predicted_step_seconds) == (
        full.best.config, full.best.predicted_step_seconds)
    assert best.pipeline_args["dp"] == best.config.dp
    assert best.world_size == best.config.dp * best.config.pp == 8
    assert len(best.pipeline_args["balance"]) == best.config.pp * best.config.virtual_stages


def test_memory_limit_takes_bytes_or_the_cli_sizes() -> None:
    assert memory_limit_bytes("2GB") == 2 * 10**9
    assert memory_limit_bytes("512MiB") == 512 * 2**20
    assert memory_limit_bytes(12) == 12 and memory_limit_bytes(None) is None
    by_text = plan(layers(), ranks=4, batch=8, memory_limit="12")
    assert by_text == plan(layers(), ranks=4, batch=8, memory_limit=12.0)
    for bad in ("2 apples", 0, -1.0, True):
        with pytest.raises(PlanError, match="memory_limit"):
            plan(layers(), ranks=2, batch=8, memory_limit=bad)  # type: ignore[arg-type]


def test_costs_may_be_a_file(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text(layers().to_json())
    assert plan(path, ranks=2, batch=4) == plan(layers(), ranks=2, batch=4)
    assert plan(str(path), ranks=2, batch=4).config.pp == 2


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch": 8}, "exactly one"),
    ({"batch": 8, "ranks": 2, "world_size": 4}, "exactly one"),
    ({"batch": 8, "ranks": 2, "memory_limit": "3B"}, "no configuration fits in 3 B per rank; "
                                                      "the smallest needs"),
    ({"batch": 8, "ranks": 9}, "cannot place 8 layers on 9 ranks"),
    ({"batch": 8, "ranks": 2, "schedules": ["zbv"], "virtual": [1]}, "widen --virtual"),
])
def test_mistakes_raise_plan_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(PlanError, match=message):
        plan(layers(), **kwargs)  # type: ignore[arg-type]


def test_cost_file_records_what_was_profiled() -> None:
    costs = layers(6, profiled=GPT)
    data = json.loads(costs.to_json())
    assert data["profiled"] == {"model": "gpt", "hidden_size": 128, "layers": 6,
                                "optimizer": "adam", "dtype": "float32", "seq_len": 64,
                                "heads": 8}
    assert parse_layer_costs(costs.to_json()) == costs
    mlp = layers(2, profiled=ProfiledModel("mlp", 8, 2, loss="mse"))
    assert parse_layer_costs(mlp.to_json()).profiled == mlp.profiled


@pytest.mark.parametrize(("profiled", "message"), [
    ({"model": "gpt", "hidden_size": 128}, "profiled: missing field 'layers'"),
    ({"model": "gpt", "hidden_size": 128, "layers": 6, "lr": 1}, "unknown field 'lr'"),
    ({"model": "gpt", "hidden_size": 0, "layers": 6}, "profiled.hidden_size: 0 is not"),
    ({"model": "", "hidden_size": 8, "layers": 6}, "profiled.model"),
    ({"model": "gpt", "hidden_size": 8, "layers": 5}, "profiled.layers: 5 but the file has 6"),
])
def test_bad_profiled_records_name_the_field(profiled: dict[str, object], message: str) -> None:
    data = json.loads(layers(6).to_json()) | {"profiled": profiled}
    with pytest.raises(CostFileError, match=message):
        parse_layer_costs(json.dumps(data))


def _plan_cli(tmp_path: Path, costs: LayerCosts, capsys: pytest.CaptureFixture[str],
              *argv: str) -> str:
    path = tmp_path / "costs.json"
    path.write_text(costs.to_json())
    assert main(["plan", "--costs", str(path), "-p", "2", "--batch", "8", *argv]) == 0
    return capsys.readouterr().out


def test_printed_command_builds_the_profiled_model(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = _plan_cli(tmp_path, layers(6, profiled=GPT), capsys, "--schedules", "1f1b")
    command = out.split("\nbest: ")[1].splitlines()[1].strip()
    words = shlex.split(command)
    assert words[:2] == ["pipesim", "run"]
    flags = dict(zip(words[2::2], words[3::2], strict=False))
    assert {k: flags[k] for k in ("--model", "--hidden-size", "--layers", "--optimizer",
                                  "--dtype", "--seq-len", "--heads")} == {
        "--model": "gpt", "--hidden-size": "128", "--layers": "6", "--optimizer": "adam",
        "--dtype": "float32", "--seq-len": "64", "--heads": "8"}
    assert (flags["--schedule"], flags["-w"], flags["-m"]) == ("1f1b", "2", "8")


def test_a_model_pipesim_does_not_build_gets_the_python_call(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = _plan_cli(tmp_path, layers(), capsys, "--schedules", "zbv", "--microbatches", "4")
    assert "pipesim run" not in out
    assert ('  pipesim.Pipeline(model, schedule="zbv", microbatches=4, loss_fn=loss_fn, '
            "virtual_stages=2, balance=(2, 2, 2, 2))  # 2 processes, microbatches of 2 "
            "samples\n") in out


def test_readme_example_file_prints_a_call_not_an_unknown_model() -> None:
    costs = EXAMPLES / "gpt-10b-48l.json"
    best = plan(costs, ranks=8, batch=64, memory_limit="80GB")
    assert "--model gpt-10b-48l" not in best.command
    assert best.command.startswith("pipesim.Pipeline(model, schedule=")
    assert f"balance={best.config.balance!r}" in best.command


def test_the_python_call_is_python() -> None:
    best = plan(layers(), ranks=2, batch=8, microbatches=[4], schedules=["interleaved-1f1b"])
    seen: dict[str, object] = {}

    class Fake:  # stands in for pipesim.Pipeline: records its keyword arguments
        def Pipeline(self, model: object, **kwargs: object) -> None:
            seen.update(kwargs)

    eval(best.command, {"pipesim": Fake(), "model": None, "loss_fn": len})
    assert seen.pop("loss_fn") is len
    defaults = {"virtual_stages": 1, "dp": 1, "checkpoint_activations": False}  # Pipeline's
    assert defaults | seen == best.pipeline_args


def test_the_api_imports_without_torch() -> None:
    code = ("import sys; sys.modules['torch'] = None; sys.modules['numpy'] = None\n"
            "import pipesim.planner.api, pipesim.profiling.api\n")
    src = str(Path(__file__).resolve().parents[2] / "src")
    env = {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
