"""When receives are posted: two actions ahead, and on gloo every receive of the step left as
soon as a rank would block (gloo moves a message's data only once its receive is announced).

dist.irecv is replaced by a stand-in that records each posting, so what is asserted is the
engine's order of calls, not anything timed."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from pipesim.ir import Action, Op
from pipesim.runtime import comm as comm_module
from pipesim.runtime.comm import Comm, Member
from pipesim.schedules import get_schedule


class _Work:
    def __init__(self, done: bool) -> None:
        self.done = done

    def is_completed(self) -> bool:
        return self.done

    def wait(self) -> bool:
        self.done = True
        return True


def _comm(monkeypatch: pytest.MonkeyPatch, arrived: bool) -> tuple[Comm, list[int]]:
    """Rank 1 of 1F1B on 2 ranks, 4 microbatches; ``arrived``: every message is already in."""
    posted: list[int] = []

    def irecv(buf: torch.Tensor, src: int, group: Any = None, tag: int = 0) -> _Work:
        posted.append(tag)
        return _Work(arrived)

    monkeypatch.setattr(comm_module.dist, "irecv", irecv)
    comm = Comm(get_schedule("1f1b", 2, 4), 1, torch.device("cpu"))
    comm.boundaries[0] = (Member((2, 3), torch.float32),)
    return comm, posted


def test_a_rank_about_to_wait_posts_every_receive_of_the_step(
        monkeypatch: pytest.MonkeyPatch) -> None:
    comm, posted = _comm(monkeypatch, arrived=False)
    first = Action(1, Op.F, 0)
    comm.prefetch(first)
    assert len(posted) == 1  # two ahead would post more; here only what F(1, 0) needs
    comm.recv(first, Action(0, Op.F, 0))  # not there yet: it would block
    assert len(posted) == 4 and len(set(posted)) == 4  # F(0, 0..3): the whole step's channel
    assert all(comm.next_post[src] == len(ms) for src, ms in comm.channel.items())


def test_a_message_already_in_posts_nothing_more(monkeypatch: pytest.MonkeyPatch) -> None:
    comm, posted = _comm(monkeypatch, arrived=True)
    comm.recv(Action(1, Op.F, 0), Action(0, Op.F, 0))
    assert len(posted) == 1


def test_not_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """nccl: a receive posted early can hold up a send queued behind it on the same stream."""
    sched = get_schedule("1f1b", 2, 4)
    assert Comm(sched, 1, torch.device("cpu")).post_when_idle
    assert not Comm(sched, 1, torch.device("cuda", 0)).post_when_idle  # nothing allocated yet
    comm, posted = _comm(monkeypatch, arrived=False)
    comm.post_when_idle = False
    comm.recv(Action(1, Op.F, 0), Action(0, Op.F, 0))
    assert len(posted) == 1
