"""The ranks' once-a-step meeting (``runtime/meeting.py``): through shared memory when every
rank can, else gloo on every rank, with the same rows either way; round after round without
a row overwritten before it was read; no files left behind."""

from __future__ import annotations

import os
from typing import Any

import pytest
import torch

import pipesim
from pipesim import transport
from pipesim.runtime import shm

ROUNDS = 200


def _rounds(rank: int, world: int, off_on: int | None) -> dict[str, Any]:
    from pipesim.runtime.meeting import Meeting
    if off_on == rank:
        os.environ["PIPESIM_SHM"] = "0"
    before = set(os.listdir(transport.SHM_DIR)) if os.path.isdir(transport.SHM_DIR) else set()
    meeting = Meeting(torch.device("cpu"), 4)
    wrong = []
    for r in range(1, ROUNDS + 1):
        # rank 0 races ahead on even rounds (no work), the others on odd ones: a rank that
        # overwrote a row before everyone read it would show another round's numbers
        if (rank == 0) != (r % 2 == 0):
            sum(range(2000))
        got = meeting.all_ints([rank, r, rank * r, -r])
        want = [[q, r, q * r, -r] for q in range(world)]
        if got != want:
            wrong.append((r, got))
    other = meeting.all_ints([rank, 7])  # another width: gloo, on every rank alike
    after = set(os.listdir(transport.SHM_DIR)) if os.path.isdir(transport.SHM_DIR) else set()
    return {"transport": meeting.transport, "wrong": wrong[:3], "other": other,
            "left": sorted(f for f in after - before if f.startswith("pipesim-"))}


@pytest.mark.parametrize("world,off_on", [(2, None), (3, None), (2, 1), (3, 0)],
                         ids=["2-shm", "3-shm", "2-off-on-rank-1", "3-off-on-rank-0"])
def test_every_rank_gets_every_rows_round_after_round(world: int, off_on: int | None) -> None:
    results = pipesim.launch(_rounds, world, off_on)
    expect = "shm" if shm.supported() and off_on is None else "gloo"
    for r in results:
        assert r["transport"] == expect  # the same on every rank
        assert r["wrong"] == []
        assert r["other"] == [[q, 7] for q in range(world)]
        assert r["left"] == []  # names removed once attached (or refused)
