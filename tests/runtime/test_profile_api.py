"""pipesim.profile on a user's own layers, and profile -> plan -> run as the CLI prints it.

No timing assertions: times are only checked to be present; bytes are exact.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import torch
from torch import nn

from pipesim.cli import main
from pipesim.layercosts import load_layer_costs
from pipesim.planner.api import plan
from pipesim.profiling.api import profile

B, H = 4, 8  # samples per microbatch, width


def _user_model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(H, H), nn.GELU(), nn.LayerNorm(H), nn.Linear(H, H))


def test_profile_a_user_sequential_then_plan() -> None:
    model = _user_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    costs = profile(model, torch.randn(B, H), nn.functional.mse_loss,
                    target=torch.randn(B, H), optimizer=torch.optim.AdamW, repeats=2, warmup=0,
                    comm=False, model_name="mine")
    assert len(costs) == 4 and costs.microbatch_size == B and costs.model == "mine"
    assert costs.profiled is None  # not a model pipesim builds: the plan prints Pipeline(...)
    assert [c.name for c in costs.layers] == ["0:Linear", "1:GELU", "2:LayerNorm", "3:Linear"]
    assert [c.param_bytes for c in costs.layers] == [(H * H + H) * 4, 0, 2 * H * 4,
                                                     (H * H + H) * 4]
    assert all(c.activation_bytes == B * H * 4 for c in costs.layers[:3])
    assert all(c.forward > 0 and c.backward > 0 for c in costs.layers)
    assert [c.optimizer > 0 for c in costs.layers] == [True, False, True, True]
    assert all(c.stash_bytes > 0 for c in costs.layers)
    assert costs.reference_time > 0  # the machine's speed while it profiled, for a drift
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    best = plan(costs, ranks=2, batch=8)
    assert sum(best.pipeline_args["balance"]) == 4
    assert best.command.startswith("pipesim.Pipeline(model, ")


class _Pair(nn.Module):
    """Returns a tuple: the activation and an int64 tensor the next layer needs."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, H)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed(ids), ids


class _Masked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(H, H)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.linear(x) * (ids > 0).unsqueeze(-1)


def test_tuples_and_int_inputs_between_layers() -> None:
    ids = torch.randint(0, 10, (B, 3))
    costs = profile([_Pair(), _Masked()], ids, repeats=1, warmup=0, comm=False, processes=2)
    first, second = costs.layers
    assert first.activation_bytes == B * 3 * H * 4 + B * 3 * 8  # float output + int64 ids
    assert second.activation_bytes == B * 3 * H * 4
    assert costs.microbatch_size == B and "mean of 2 processes" in costs.notes
    assert first.backward > 0 and second.forward > 0


class _Listy(nn.Module):
    def forward(self, x: torch.Tensor) -> list[int]:
        return [1]


@pytest.mark.parametrize(("args", "kwargs", "error", "message"), [
    (([nn.Linear(2, 2), "relu"], torch.randn(2, 2)), {}, TypeError, "list of nn.Module"),
    (([nn.Linear(2, 2)], torch.randn(2, 2), nn.functional.mse_loss), {}, ValueError,
     "target="),
    (([nn.Linear(2, 2)], torch.randn(2, 2)), {"statistic": "mode"}, ValueError, "median"),
    (([nn.Linear(2, 2)], torch.randn(2, 2)), {"repeats": 0}, ValueError, "repeats"),
    (([nn.Linear(2, 2), _Listy()], torch.randn(2, 2)), {"comm": False}, TypeError,
     r"layer 1 \(_Listy\) gave list; between layers pass a tensor or a tuple of tensors"),
    (([nn.Linear(2, 2)], torch.randn(2, 3)), {"comm": False}, RuntimeError,
     "profiling the layers failed: RuntimeError: mat1 and mat2 shapes cannot be multiplied"),
])
def test_mistakes_are_one_clear_error(args: tuple[object, ...], kwargs: dict[str, object],
                                      error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message) as caught:
        profile(*args, **({"repeats": 1, "warmup": 0} | kwargs))  # type: ignore[arg-type]
    assert "\n" not in str(caught.value).strip()


def test_the_planned_command_runs_the_profiled_model(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "c.json"
    assert main(["profile", "--model", "mlp", "--layers", "4", "--hidden-size", "8", "-b", "2",
                 "--optimizer", "adam", "--repeats", "1", "--warmup", "0", "--no-comm",
                 "-o", str(out)]) == 0
    assert json.loads(out.read_text())["profiled"] == {
        "model": "mlp", "hidden_size": 8, "layers": 4, "optimizer": "adam",
        "dtype": "float32", "loss": "mse"}
    assert load_layer_costs(str(out)).profiled is not None
    capsys.readouterr()
    assert main(["plan", "--costs", str(out), "-p", "2", "--batch", "4", "--schedules",
                 "1f1b", "--json"]) == 0
    command = json.loads(capsys.readouterr().out)["best"]["command"]
    words = shlex.split(command)
    assert words[:2] == ["pipesim", "run"]
    for flag in ("--model mlp", "--hidden-size 8", "--layers 4", "--optimizer adam"):
        assert f" {flag} " in f" {command} "
    steps = words.index("--steps")
    words[steps + 1] = "1"
    assert main([*words[1:], "--quiet", "--json"]) == 0
    run = json.loads(capsys.readouterr().out)
    assert run["schedule"] == "1f1b"
