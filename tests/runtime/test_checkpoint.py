"""Checkpoints: a run killed mid-way and resumed ends bit-identical to an uninterrupted run."""

from __future__ import annotations

import json
import os

import pytest
import torch

from pipesim.cli import main

BASE = ["run", "--schedule", "zb-h1", "-w", "2", "-m", "4", "--hidden-size", "8", "-b", "3",
        "--steps", "5", "--optimizer", "adam", "--lr", "0.05", "--quiet", "--json",
        "--checkpoint-every", "1"]


def _weights(directory: str, step: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for rank in range(2):
        state = torch.load(os.path.join(directory, f"step-{step:06d}", f"rank-{rank}.pt"),
                           weights_only=True)
        out.append(dict(state["model"]))
        out.append({f"opt.{k}": v for k, v in _flat(state["optimizer"]["state"]).items()})
    return out


def _flat(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    flat: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if isinstance(v, dict):
            flat.update(_flat(v, f"{prefix}{k}."))
        elif isinstance(v, torch.Tensor):
            flat[f"{prefix}{k}"] = v
    return flat


def test_killed_and_resumed_run_is_bit_identical(tmp_path, capsys, monkeypatch) -> None:
    straight, broken = str(tmp_path / "a"), str(tmp_path / "b")
    assert main([*BASE, "--checkpoint-dir", straight]) == 0
    full = json.loads(capsys.readouterr().out)
    monkeypatch.setenv("PIPESIM_FAULT", "1:1F2:kill:3")  # dies during step 3 (0-based)
    assert main([*BASE, "--checkpoint-dir", broken]) == 1
    assert "rank 1 failed: killed by signal SIGKILL" in capsys.readouterr().err
    with open(os.path.join(broken, "latest.json")) as fh:
        assert json.load(fh)["step"] == 3
    monkeypatch.delenv("PIPESIM_FAULT")
    assert main([*BASE, "--checkpoint-dir", broken, "--resume", broken]) == 0
    resumed = json.loads(capsys.readouterr().out)
    assert resumed["loss"] == full["loss"][3:]  # the steps it ran, bit for bit
    for a, b in zip(_weights(straight, 5), _weights(broken, 5), strict=True):
        assert a.keys() == b.keys() and a
        for k in a:
            assert torch.equal(a[k], b[k]), k


RESUME = BASE[:-2]  # without --checkpoint-every


@pytest.fixture
def saved(tmp_path, capsys) -> str:
    path = str(tmp_path / "ck")
    assert main([*RESUME, "--steps", "2", "--checkpoint-dir", path]) == 0
    capsys.readouterr()
    return path


def test_a_checkpoint_of_another_model_is_refused(saved: str, capsys) -> None:
    assert main([*RESUME, "--resume", saved, "--hidden-size", "16"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "hidden_size: checkpoint 8, this run 16" in err


def test_a_checkpoint_of_another_world_size_is_refused(saved: str, capsys) -> None:
    argv = list(RESUME)
    argv[argv.index("-w") + 1] = "4"  # -w given twice with two values is refused; change it
    assert main([*argv, "--resume", saved]) == 2
    assert "ranks: checkpoint 2, this run 4" in capsys.readouterr().err


def test_a_damaged_checkpoint_gets_exit_2(saved: str, capsys) -> None:
    with open(os.path.join(saved, "step-000002", "rank-1.pt"), "wb") as fh:
        fh.write(b"not a checkpoint")
    assert main([*RESUME, "--resume", saved]) == 2
    assert "is damaged or not a pipesim checkpoint" in capsys.readouterr().err


def test_a_missing_or_garbled_latest_is_refused(tmp_path, saved: str, capsys) -> None:
    assert main([*RESUME, "--resume", str(tmp_path / "nowhere")]) == 2
    with open(os.path.join(saved, "latest.json"), "w") as fh:
        fh.write("{oops")
    assert main([*RESUME, "--resume", saved]) == 2
    err = capsys.readouterr().err.splitlines()
    assert "no such directory" in err[0] and "latest.json is unreadable" in err[1]


def test_nothing_left_to_run_is_refused(saved: str, capsys) -> None:
    assert main([*RESUME, "--steps", "2", "--resume", saved]) == 2
    assert "leaves nothing to run" in capsys.readouterr().err
