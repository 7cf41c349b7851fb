"""Issue 16 item 1 and the runtime half of item 8: ``pipesim run`` speaks the shared vocabulary
(NAME or --schedule, -p/--dp/-w, -m), reads a schedule file's ranks, and its models learn."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipesim.cli import build_parser
from pipesim.commands.run import build_config
from tests.cli import run_cli as cli


def test_run_takes_the_positional_name_and_p(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "run", "1F1B", "-p", "2", "--visualize")
    assert code == 0 and "PIPELINE SCHEDULE: 1f1b, 2 ranks, 4 microbatches" in out, out
    code, out, _ = cli(capsys, "run", "--schedule", "gpipe", "-w", "4", "--dp", "2", "-m", "3",
                       "--visualize")
    assert code == 0 and "gpipe, 2 ranks, 3 microbatches" in out, out


@pytest.mark.parametrize(("argv", "words"), [
    (["gpipe", "--schedule", "1f1b"], ["gpipe", "--schedule 1f1b"]),
    (["-m", "2", "--num-microbatches", "4"], ["-m 2", "--num-microbatches 4"]),
    (["-p", "2", "-w", "8", "--dp", "2"], ["-w 8", "-p 2", "--dp 2"]),
])
def test_run_refuses_flags_that_disagree(capsys: pytest.CaptureFixture[str], argv: list[str],
                                         words: list[str]) -> None:
    code, _, err = cli(capsys, "run", *argv, "--visualize")
    assert code == 2 and all(w in err for w in words), err


def test_run_file_reads_its_rank_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, grid, _ = cli(capsys, "schedule", "1f1b", "-p", "2", "-m", "2")
    path = tmp_path / "s.txt"
    path.write_text(grid)
    code, out, _ = cli(capsys, "run", "--file", str(path), "--visualize")
    assert code == 0 and "2 ranks, 2 microbatches" in out, out
    code, _, err = cli(capsys, "run", "--file", str(path), "-p", "3", "--visualize")
    assert code == 2 and "-p 3" in err and "2 ranks" in err


def test_gpt_and_mlp_default_to_adam_3e_3() -> None:
    for model in ("gpt", "mlp"):
        args = build_parser().parse_args(["run", "1f1b", "-p", "2", "--model", model])
        cfg = build_config(args)
        assert (cfg.optimizer, cfg.lr) == ("adam", 3e-3)
    args = build_parser().parse_args(["run", "1f1b", "-p", "2", "--optimizer", "sgd"])
    assert build_config(args).lr == 0.01


def test_the_tutorial_mlp_learns_and_many_ranks_warn(capsys: pytest.CaptureFixture[str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0}, raising=False)
    code, out, err = cli(capsys, "run", "1f1b", "-p", "2", "-m", "2", "--steps", "8", "--json")
    loss = json.loads(out)["loss"]
    assert code == 0 and loss[-1] < 0.9 * loss[0], loss
    assert "pipesim: warning: 2 processes on 1 CPU cores" in err
