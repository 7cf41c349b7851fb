"""Same-machine messages through shared memory (``runtime/shm.py``): the channel file's
protocol in one process, then real ranks: which messages take it, and that a job where it is
off (everywhere, or on one rank) trains exactly the same."""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any

import pytest
import torch
from torch import nn

import pipesim
from pipesim import transport
from pipesim.runtime import shm
from tests.runtime.library_models import mixed, mixed_batch, reference

SHAPES = [[((2, 3), torch.float32), ((4,), torch.int64)], [((2, 3), torch.float64)],
          [((5,), torch.bool), ((1, 2), torch.bfloat16)]]
NAMES = ["a", "b", "c"]


@pytest.fixture
def token() -> Any:
    token = shm.new_token()
    yield token
    shm.remove(token, 3)


def test_layout_keeps_members_apart_and_aligned() -> None:
    places, size = shm.layout(SHAPES)
    spans = []
    for (control, offsets), members in zip(places, SHAPES, strict=True):
        spans.append((control, control + 128))
        for off, (shape, dtype) in zip(offsets, members, strict=True):
            assert off % 64 == 0
            spans.append((off, off + torch.empty(shape, dtype=dtype).nbytes))
    spans.sort()
    assert spans[0][0] >= 64  # the first line is the token's
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # nothing overlaps
    assert spans[-1][1] <= size


def test_a_message_goes_through_and_is_released(token: int) -> None:
    mine = shm.create(token, 3, SHAPES, NAMES)
    theirs = shm.attach(token, 3, SHAPES, NAMES)
    assert mine is not None and theirs is not None
    payload = (torch.randn(2, 3), torch.arange(4))
    for seq in (1, 2):
        assert not shm.arrived(mine.slots[0], seq)
        shm.put(theirs.slots[0], payload, seq, timeout=5)
        assert shm.arrived(mine.slots[0], seq)
        got = shm.get(mine.slots[0], seq, timeout=5)
        assert torch.equal(got[0], payload[0]) and torch.equal(got[1], payload[1])
        shm.release(mine.slots[0], seq)
        payload = (payload[0] + 1, payload[1] * 2)


def test_a_sender_waits_for_the_last_step_to_be_released(token: int) -> None:
    mine = shm.create(token, 3, SHAPES, NAMES)
    theirs = shm.attach(token, 3, SHAPES, NAMES)
    assert mine is not None and theirs is not None
    x = (torch.ones(2, 3, dtype=torch.float64),)
    shm.put(theirs.slots[1], x, 1, timeout=5)
    with pytest.raises(TimeoutError, match="message b to release"):
        shm.put(theirs.slots[1], x, 2, timeout=0.01)  # step 1's message not released yet
    with pytest.raises(TimeoutError, match="message c to arrive"):
        shm.get(mine.slots[2], 1, timeout=0.01)


def test_a_sender_cannot_attach_to_another_size_or_token(token: int) -> None:
    assert shm.create(token, 3, SHAPES, NAMES) is not None
    assert shm.create(token, 3, SHAPES, NAMES) is None  # the name is taken
    assert shm.attach(token, 3, SHAPES[:2], NAMES[:2]) is None  # another layout
    assert shm.attach(token + 1, 3, SHAPES, NAMES) is None  # no such file
    shm.remove(token, 3)
    assert shm.attach(token, 3, SHAPES, NAMES) is None  # the name is gone


def test_no_shared_memory_file_system_means_none(monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Any) -> None:
    monkeypatch.setattr(transport, "SHM_DIR", str(tmp_path / "missing"))
    assert not shm.supported()
    assert shm.create(shm.new_token(), 0, SHAPES, NAMES) is None
    monkeypatch.setattr(transport, "SHM_DIR", str(tmp_path))
    monkeypatch.setenv("PIPESIM_SHM", "0")
    assert not shm.supported()


def _train(rank: int, world: int, off_on: int | None) -> dict[str, Any]:
    if off_on == rank:
        os.environ["PIPESIM_SHM"] = "0"
    pipe = pipesim.Pipeline(mixed(), "zbv", 4, nn.functional.cross_entropy)
    x, y = mixed_batch(0)
    loss = pipe.step(x if pipe.holds_first else None, y if pipe.holds_last else None)
    grads = {n: p.grad.clone() for n, p in pipe.named_parameters() if p.grad is not None}
    token = pipe._engines[True][0].comm.shm_token
    left = [f for f in os.listdir(transport.SHM_DIR) if f.startswith(f"pipesim-{token:016x}")]
    return {"loss": loss, "grads": grads, "transports": pipe.transports(), "left": left}


@pytest.mark.parametrize("off_on", [None, 1, -1], ids=["on", "off-on-rank-1", "off"])
def test_messages_take_shared_memory_only_where_both_ranks_can(
        monkeypatch: pytest.MonkeyPatch, off_on: int | None) -> None:
    if not shm.supported():
        pytest.skip("no shared-memory messages on this machine")
    if off_on == -1:
        monkeypatch.setenv("PIPESIM_SHM", "0")  # forked ranks inherit it
    results = pipesim.launch(_train, 2, off_on)
    # zbv on 2 ranks, 4 microbatches: stages 0/3 on rank 0, 1/2 on rank 1; two boundaries
    # cross, each with one message per microbatch each way: 16 per rank per step
    for r in results:
        assert sum(r["transports"].values()) == 16
        assert r["transports"]["shared memory"] == (16 if off_on is None else 0)
        assert r["left"] == []  # names removed once attached (or refused)
    _, _, want_grads = reference(mixed(), [mixed_batch(0)], nn.functional.cross_entropy)
    grads = {k: v for r in results for k, v in r["grads"].items()}
    assert set(grads) == set(want_grads)
    for name, want in want_grads.items():
        torch.testing.assert_close(grads[name], want, rtol=1e-10, atol=1e-10, msg=name)


def test_a_sleeping_receiver_is_woken_by_the_sender(token: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    mine = shm.create(token, 3, SHAPES, NAMES)
    theirs = shm.attach(token, 3, SHAPES, NAMES)
    assert mine is not None and theirs is not None
    monkeypatch.setattr(shm, "_NAP", shm._Timespec(60, 0))  # a lost wake-up would hang 60 s
    got: list[torch.Tensor] = []
    receiver = threading.Thread(target=lambda: got.extend(shm.get(mine.slots[1], 1, 120,
                                                                  sleep=True)))
    receiver.start()
    while not mine.slots[1].control[1]:  # until it says it sleeps (state, not time)
        os.sched_yield()
    x = torch.full((2, 3), 7.0, dtype=torch.float64)
    shm.put(theirs.slots[1], (x,), 1, timeout=5)
    receiver.join(timeout=30)
    assert not receiver.is_alive() and torch.equal(got[0], x)
    assert mine.slots[1].control[1] == 0  # awake again
    shm.release(mine.slots[1], 1)
    shm.put(theirs.slots[1], (x + 1,), 2, timeout=5)  # already there: no sleep at all
    assert torch.equal(shm.get(mine.slots[1], 2, 5, sleep=True)[0], x + 1)


def test_a_dead_makers_stale_files_are_swept(tmp_path: Any) -> None:
    """A rank killed between creating a channel file and its peer attaching leaves the name
    behind; the next set-up removes names older than STALE whose maker is gone, and nothing
    else: a live maker's, a fresh one's, an old version's (no process id), other files."""
    import subprocess
    import sys
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    gone = int(dead.stdout)  # a process that has exited
    old = 1_000_000_000.0  # a modification time long past

    def made(name: str, pid: int, stale: bool = True) -> None:
        path = tmp_path / name
        path.write_bytes((7).to_bytes(8, "little") + pid.to_bytes(8, "little") + bytes(48))
        if stale:
            os.utime(path, (old, old))

    made("pipesim-00000000000000aa-1", gone)
    made("pipesim-00000000000000bb-1", os.getpid())  # alive: this test
    made("pipesim-00000000000000cc-1", gone, stale=False)  # still in its set-up window
    made("pipesim-00000000000000dd-1", 0)  # an old version's: no process id
    made("other-file", gone)
    assert shm.sweep(str(tmp_path)) == ["pipesim-00000000000000aa-1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "other-file", "pipesim-00000000000000bb-1", "pipesim-00000000000000cc-1",
        "pipesim-00000000000000dd-1"]
    assert shm.sweep(str(tmp_path / "absent")) == []


def test_a_channel_file_names_its_maker(token: int) -> None:
    mine = shm.create(token, 3, SHAPES, NAMES)
    assert mine is not None
    assert memoryview(mine.buf).cast("q")[1] == os.getpid()
