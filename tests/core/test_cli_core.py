"""``pipesim schedule`` and ``pipesim validate``, in process; two subprocess checks at the end."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from pipesim.schedule_io import format_text, parse_csv, parse_text
from pipesim.schedules import SCHEDULES, get_schedule
from tests.cli import run_cli as run

WriteFile = Callable[[str, "str | bytes"], str]



def assert_one_line_error(err: str, *fragments: str) -> None:
    assert err.count("\n") == 1 and err.startswith("pipesim: error: "), err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


# ----------------------------------------------------------------------------- pipesim schedule


def test_schedule_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schedule", "--list")
    assert code == 0
    assert [line.split()[0] for line in out.splitlines()] == list(SCHEDULES)
    assert "Megatron's interleaved 1F1B" in out


def test_schedule_grid_is_the_default(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schedule", "1f1b", "-p", "2", "-m", "3")
    assert code == 0
    assert out == (
        "1f1b: 2 ranks, 2 stages, 3 microbatches (one column per unit step)\n"
        "rank 0: 0F0 0F1  .  0B0 0F2 0B1  .  0B2\n"
        "rank 1:  .  1F0 1B0 1F1 1B1 1F2 1B2  .\n"
    )


def test_schedule_as_text_and_csv_parse_back(capsys: pytest.CaptureFixture[str]) -> None:
    expected = get_schedule("interleaved-1f1b", 3, 6, 3)
    code, out, _ = run(capsys, "schedule", "interleaved-1f1b", "-p", "3", "-m", "6", "-v", "3",
                       "--as", "text")
    assert code == 0 and out == format_text(expected)
    assert parse_text(out) == expected and expected.stages == 9
    code, out, _ = run(capsys, "schedule", "interleaved-1f1b", "-p", "3", "-m", "6", "-v", "3",
                       "--as", "csv")
    assert code == 0 and parse_csv(out) == expected


def test_schedule_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schedule", "zbv", "-p", "2", "-m", "3", "--json")
    assert code == 0
    data = json.loads(out)
    assert set(data) == {"ranks", "stages", "microbatches", "stage_to_rank", "actions",
                         "peak_activations", "peak_stash", "schedule"}
    assert (data["schedule"], data["ranks"], data["stages"], data["microbatches"]) == \
        ("zbv", 2, 4, 3)
    assert data["stage_to_rank"] == [0, 1, 1, 0]
    assert data["actions"] == [[str(a) for a in row] for row in get_schedule("zbv", 2, 3).actions]
    assert data["peak_activations"] == [4, 4]
    assert data["peak_stash"] == [2, 2]  # zbv's two half-size chunks per rank count 1/2 each


def test_schedule_json_lists_overlapped_pairs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "schedule", "dualpipev", "-p", "2", "-m", "4", "--json")
    assert code == 0
    pairs = json.loads(out)["pairs"]
    assert pairs == [[str(f), str(b)] for f, b in sorted(get_schedule("dualpipev", 2, 4).pairs)]
    assert ["0F3", "3B1"] in pairs


def test_schedule_writes_a_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    out_path = tmp_path / "s.txt"
    code, out, _ = run(capsys, "schedule", "gpipe", "-p", "2", "-m", "2", "--as", "text",
                       "-o", str(out_path))
    assert code == 0 and out == ""
    assert parse_text(out_path.read_text()) == get_schedule("gpipe", 2, 2)


@pytest.mark.parametrize(("argv", "fragments"), [
    (["schedule", "1f1x"], ["unknown schedule '1f1x'", "valid: forward, gpipe, 1f1b"]),
    (["schedule", "dualpipev", "-p", "4", "-m", "4"], ["at least as many microbatches"]),
    (["schedule", "interleaved-1f1b", "-p", "4", "-m", "9"], ["divisible by", "Nearby valid"]),
    (["schedule", "zbv", "-v", "3"], ["zbv always has 2 stages per rank"]),
    (["schedule"], ["name a schedule"]),
    (["schedule", "1f1b", "-p", "0"], ["must be >= 1, got 0"]),
    (["schedule", "1f1b", "-m", "x"], ["'x' is not an integer"]),
])
def test_schedule_mistakes_are_one_line(capsys: pytest.CaptureFixture[str], argv: list[str],
                                        fragments: list[str]) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert_one_line_error(err, *fragments)


def test_schedule_of_an_invalid_file_cannot_be_drawn(capsys: pytest.CaptureFixture[str],
                                                     write_file: WriteFile) -> None:
    path = write_file("cycle.txt", "0F0 0B0 0F1 0B1\n1F1 1F0 1B0 1B1\n")
    code, _, err = run(capsys, "schedule", "--file", path)
    assert code == 1
    assert_one_line_error(err, "cannot draw cycle.txt, it is not valid: deadlock")
    code, out, _ = run(capsys, "schedule", "--file", path, "--as", "csv")  # converting is fine
    assert code == 0 and out == "0F0,0B0,0F1,0B1\n1F1,1F0,1B0,1B1\n"


# ----------------------------------------------------------------------------- pipesim validate


def test_validate_a_valid_file(capsys: pytest.CaptureFixture[str], write_file: WriteFile) -> None:
    path = write_file("zbv.txt", format_text(get_schedule("zbv", 2, 3)))
    code, out, err = run(capsys, "validate", path)
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[:2] == ["valid: 2 ranks, 4 stages, 3 microbatches, 36 actions",
                         "peak stash per rank: 2 2 rank stashes (stashes of one stage: 4 4)"]
    assert lines[2].startswith("warning: channel rank 0 -> rank 1: ")


def test_validate_an_invalid_file(capsys: pytest.CaptureFixture[str],
                                  write_file: WriteFile) -> None:
    path = write_file("bad.txt", "0F0 0F1 0B0\n1F0 1F1 1B0 1B1 1B1\n")
    code, out, _ = run(capsys, "validate", path)
    assert code == 1
    assert out == (f"invalid: {path}\n"
                   "  1B1 appears 2 times (rank 1 step 3, rank 1 step 4)\n"
                   "  missing the backward of stage 0 microbatch 1 (0B1, or 0I1 and 0W1)\n")


def test_validate_json(capsys: pytest.CaptureFixture[str], write_file: WriteFile) -> None:
    good = write_file("good.csv", "0F0,0B0\n1F0,1B0\n")
    code, out, _ = run(capsys, "validate", good, "--json")
    assert code == 0
    data = json.loads(out)
    assert data == {"valid": True, "ranks": 2, "stages": 2, "microbatches": 1,
                    "stage_to_rank": [0, 1], "errors": [], "warnings": [],
                    "peak_activations": [1, 1], "peak_stash": [1, 1]}
    bad = write_file("bad.csv", "0F0,0B0,0F1,0B1\n1F1,1F0,1B0,1B1\n")
    code, out, _ = run(capsys, "validate", bad, "--json")
    assert code == 1
    data = json.loads(out)
    assert data["valid"] is False and data["microbatches"] == 2
    assert len(data["errors"]) == 1 and data["errors"][0].startswith("deadlock: ")


def test_validate_format_flag(capsys: pytest.CaptureFixture[str], write_file: WriteFile) -> None:
    path = write_file("one-per-line.txt", "0F0\n\n1F0\n")
    code, out, _ = run(capsys, "validate", path)  # detected as text: a blank line is nothing
    assert code == 0 and out.startswith("valid: 2 ranks, 2 stages, 1 microbatches")
    code, out, _ = run(capsys, "validate", path, "--format", "csv")  # CSV: a blank row is a rank
    assert code == 0 and out.startswith("valid: 3 ranks, 2 stages, 1 microbatches")


def test_validate_parse_error_names_line_and_column(capsys: pytest.CaptureFixture[str],
                                                    write_file: WriteFile) -> None:
    path = write_file("typo.txt", "# my schedule\n0F0 0B0\n1F0 1X0\n")
    code, out, err = run(capsys, "validate", path)
    assert code == 2 and out == ""
    assert_one_line_error(err, f"{path}: line 3, column 5: '1X0' is not an action")


@pytest.mark.parametrize(("name", "content", "says"), [
    ("empty.txt", "", "the schedule has no ranks"),
    ("comments.txt", "# nothing here\n", "the schedule has no ranks"),
    ("junk.bin", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "is not UTF-8 text"),
    ("nul.bin", b"\x00\x01\x02garbage", "line 1, column 1"),
])
def test_validate_unreadable_files(capsys: pytest.CaptureFixture[str], write_file: WriteFile,
                                   name: str, content: str | bytes, says: str) -> None:
    code, out, err = run(capsys, "validate", write_file(name, content))
    assert code == 2 and out == ""
    assert_one_line_error(err, says)


def test_validate_missing_file_and_directory(capsys: pytest.CaptureFixture[str],
                                             tmp_path: Path) -> None:
    code, _, err = run(capsys, "validate", str(tmp_path / "nope.txt"))
    assert code == 2
    assert_one_line_error(err, "nope.txt does not exist")
    code, _, err = run(capsys, "validate", str(tmp_path))
    assert code == 2
    assert_one_line_error(err, "is a directory")


# ----------------------------------------------------------------------------- subprocesses


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[2] / "src")
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def test_python_dash_m_pipesim() -> None:
    done = subprocess.run([sys.executable, "-m", "pipesim", "schedule", "1f1b", "--json"],
                          capture_output=True, text=True, env=_env(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["schedule"] == "1f1b" and data["peak_activations"] == [4, 3, 2, 1]


NO_TORCH = """
import sys
sys.modules["torch"] = None  # import torch now raises ImportError
sys.modules["numpy"] = None
import pipesim, pipesim.ir, pipesim.schedules, pipesim.validate, pipesim.simulate
import pipesim.timeline, pipesim.views.grid, pipesim.cli
code = pipesim.cli.main(["schedule", "zbv", "-p", "4", "-m", "8", "--json"])
assert "torch" not in [m.split(".")[0] for m in sys.modules if sys.modules[m] is not None]
sys.exit(code)
"""


def test_core_runs_without_torch_or_numpy() -> None:
    done = subprocess.run([sys.executable, "-c", NO_TORCH], capture_output=True, text=True,
                          env=_env(), timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert data["schedule"] == "zbv" and data["stages"] == 8
    assert data["peak_activations"] == [8, 8, 8, 8]
