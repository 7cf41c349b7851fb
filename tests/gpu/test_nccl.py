"""Tier (c): the same engine on nccl, one GPU per rank. Skipped without CUDA GPUs."""

from __future__ import annotations

import pytest
import torch

from pipesim.cli import main

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                       reason="needs at least 2 CUDA GPUs and nccl"),
]


@pytest.mark.parametrize("schedule", ["1f1b", "zb-h1", "interleaved-1f1b", "zbv"])
def test_nccl_run_matches_one_process(schedule: str, capsys) -> None:
    import json
    code = main(["run", "--schedule", schedule, "--backend", "nccl", "-w", "2", "-m", "4",
                 "--hidden-size", "32", "-b", "4", "--steps", "2", "--dtype", "float64",
                 "--verify", "--json"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data["verify_max_abs_diff"] < 1e-9
