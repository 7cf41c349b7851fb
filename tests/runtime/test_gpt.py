"""The GPT model: a pipelined step's loss and every gradient equal one process's, and it learns.

float64, a tiny config (hidden 16, 2 heads, 8 tokens, 3 blocks) so the forked runs stay quick.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from pipesim.config import RunConfig
from pipesim.models.gpt import corpus, decode, gpt_heads, gpt_shape, vocabulary
from pipesim.runtime.train import make_batch
from pipesim.schedules import get_schedule
from tests.runtime.helpers import assert_step_matches, run_job


@dataclass(frozen=True)
class GPTConfig(RunConfig):
    seq_len: int = 8
    heads: int | None = 2


def _config(name: str, m: int = 4, v: int | None = None, **kw: object) -> GPTConfig:
    sched = get_schedule(name, 2, m, v)
    base: dict[str, object] = dict(schedule=sched, batch_size=2, hidden_size=16,
                                   layers=max(5, sched.stages + 1), model="gpt",
                                   dtype="float64", seed=3, collect_state=True)
    base.update(kw)
    return GPTConfig(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("name", "v"), [("1f1b", None), ("zb-h1", None),
                                         ("interleaved-1f1b", 2), ("zbv", None)])
def test_gpt_gradients_equal_single_process(name: str, v: int | None) -> None:
    assert_step_matches(_config(name, v=v), rtol=1e-11)


def test_gpt_loss_goes_down() -> None:
    cfg = _config("1f1b", layers=4, hidden_size=32, batch_size=8, seq_len=16, steps=30,
                  optimizer="adam", lr=3e-3, dtype="float32", collect_state=False)
    result = run_job(cfg)
    losses = result.losses
    assert len(losses) == 30
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    # starts near ln(V) (uniform guess); 30 Adam steps learn the character frequencies at least
    assert first == pytest.approx(torch.log(torch.tensor(len(vocabulary()))).item(), rel=0.1)
    assert last < first - 0.5, losses


def test_batches_are_next_token_windows_the_same_for_every_call() -> None:
    cfg = _config("1f1b", m=3)
    x, y = make_batch(cfg, 5)
    x2, _ = make_batch(cfg, 5)
    x6, _ = make_batch(cfg, 6)
    assert [t.shape for t in x] == [torch.Size([2, 8])] * 3 and x[0].dtype == torch.int64
    assert all(torch.equal(a, b) for a, b in zip(x, x2, strict=True))
    assert not torch.equal(x[0], x6[0])
    assert torch.equal(x[1][:, 1:], y[1][:, :-1])  # targets are the inputs shifted by one
    assert decode(x[0][0]) in decode(corpus())
    two_replicas, _ = make_batch(_config("1f1b", m=3, dp=2), 5)
    assert len(two_replicas) == 6 and torch.equal(two_replicas[0], x[0])


def test_layers_count_embedding_blocks_and_head() -> None:
    cfg = _config("1f1b", layers=7)
    shape = gpt_shape(cfg)
    assert (shape.blocks, shape.heads, shape.seq_len) == (5, 2, 8)
    with pytest.raises(ValueError, match="needs >= 3"):
        gpt_shape(_config("1f1b", layers=2))
    with pytest.raises(ValueError, match="not divisible"):
        gpt_shape(_config("1f1b", hidden_size=10, heads=4))
    assert [gpt_heads(h) for h in (16, 64, 128, 96, 20, 8)] == [1, 4, 8, 6, 1, 1]
