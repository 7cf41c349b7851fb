"""pipesim.Pipeline on models a user writes: after two SGD steps, every weight (and the last
step's every gradient, and each loss) equals unpipelined training on the same batches.

float64 throughout: tolerance 1e-10. Every registered training schedule, a schedule file,
dp=2, a model built on the meta device, and bad input raised on every rank without a hang.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import pipesim
from pipesim.runtime.layers import run_layers
from pipesim.schedule_io import format_text
from pipesim.schedules import SCHEDULES, get_schedule
from tests.runtime.library_models import (
    mixed,
    mixed_batch,
    mlp_batch,
    mlp_bn,
    reference,
)

TRAINING = [n for n, spec in SCHEDULES.items() if spec.training]
STEPS = 2
mse = nn.functional.mse_loss
xent = nn.functional.cross_entropy


def _train(rank: int, world: int, build: Callable[[], nn.Module], batch: Callable[[int], Any],
           loss_fn: Any, schedule: Any, kw: dict[str, Any]) -> dict[str, Any]:
    """One rank: STEPS SGD steps through the pipeline; its state, last grads and losses."""
    pipe = pipesim.Pipeline(build(), schedule, loss_fn=loss_fn, **kw)
    opt = torch.optim.SGD(pipe.parameters(), lr=0.1)
    losses, grads = [], {}
    for step in range(STEPS):
        x, y = batch(step)
        losses.append(pipe.step(x if pipe.holds_first else None,
                                y if pipe.holds_last else None))
        grads = {n: p.grad.clone() for n, p in pipe.named_parameters() if p.grad is not None}
        opt.step()
        opt.zero_grad()
    return {"state": pipe.state_dict(), "grads": grads, "losses": losses,
            "last": pipe.holds_last, "names": [n for n, _ in pipe.named_parameters()]}


def _check(results: list[dict[str, Any]], build: Callable[[], nn.Module],
           batch: Callable[[int], Any], loss_fn: Any, tol: float = 1e-10) -> None:
    want_losses, want_state, want_grads = reference(build(), [batch(s) for s in range(STEPS)],
                                                    loss_fn)
    state = {k: v for r in results for k, v in r["state"].items()}
    grads = {k: v for r in results for k, v in r["grads"].items()}
    assert set(state) == set(want_state)  # every tensor, named as in the model
    assert set(grads) == set(want_grads)
    for name, want in want_state.items():
        torch.testing.assert_close(state[name], want, rtol=tol, atol=tol, msg=name)
    for name, want in want_grads.items():
        torch.testing.assert_close(grads[name], want, rtol=tol, atol=tol, msg=name)
    for r in results:
        if r["last"]:
            assert r["losses"] == pytest.approx(want_losses, rel=tol)
        else:
            assert r["losses"] == [None] * STEPS


@pytest.mark.parametrize("name", TRAINING)
def test_a_mixed_model_trains_as_one_process_on_every_schedule(name: str) -> None:
    """Embedding fed int64 ids, tuples with an int64 mask between stages, a buffer."""
    kw = {"microbatches": 4}
    results = pipesim.launch(_train, 2, mixed, mixed_batch, xent, name, kw)
    _check(results, mixed, mixed_batch, xent)


@pytest.mark.parametrize("name", ["1f1b", "zb-h1", "interleaved-1f1b"])
def test_linear_gelu_layernorm_batchnorm_stack(name: str) -> None:
    results = pipesim.launch(_train, 2, mlp_bn, mlp_batch, mse, name, {"microbatches": 2})
    _check(results, mlp_bn, mlp_batch, mse)


def test_a_schedule_file_and_an_explicit_balance(tmp_path: Any) -> None:
    path = tmp_path / "zbv.txt"
    path.write_text(format_text(get_schedule("zbv", 2, 4)))
    kw = {"balance": (2, 1, 1, 2)}
    results = pipesim.launch(_train, 2, mixed, mixed_batch, xent, str(path), kw)
    _check(results, mixed, mixed_batch, xent)
    # zbv puts stages 0 and 3 on rank 0: layers 0-1 and 4-5 of the balance
    want = [n for n, _ in mixed().named_parameters() if n.split(".")[0] in "0145"]
    assert sorted(results[0]["names"]) == sorted(want)


@pytest.mark.parametrize("placement", ["one", "v"])
def test_a_synthesized_schedule_file_trains_as_one_process(tmp_path: Any, placement: str
                                                           ) -> None:
    """pipesim.synthesize for uneven costs, written as torch's CSV, trained from the file."""
    from pipesim.costs import CostModel
    from pipesim.schedule_io import format_csv
    stages = 2 if placement == "one" else 4
    costs = CostModel.from_lists(stages, [1.0, 2.0] * (stages // 2), [1.0, 2.5] * (stages // 2),
                                 [0.5, 1.0] * (stages // 2))
    sched = pipesim.synthesize(2, 4, costs, max_stashed=3, placement=placement, time_limit=2)
    path = tmp_path / "synth.csv"
    path.write_text(format_csv(sched))
    results = pipesim.launch(_train, 2, mixed, mixed_batch, xent, str(path), {})
    _check(results, mixed, mixed_batch, xent)


def test_two_replicas_of_a_two_rank_pipeline() -> None:
    results = pipesim.launch(_train, 4, mixed, mixed_batch, xent, "1f1b",
                             {"microbatches": 2, "dp": 2})
    _check([results[0], results[1]], mixed, mixed_batch, xent)  # replica 0
    for a, b in ((0, 2), (1, 3)):  # the replicas hold equal weights after the all-reduce
        for k, v in results[a]["state"].items():
            torch.testing.assert_close(results[b]["state"][k], v, rtol=0, atol=0)


def _meta_build() -> nn.Module:
    with torch.device("meta"):
        return mlp_bn(dtype=torch.float32)


def _meta_train(rank: int, world: int) -> dict[str, Any]:
    model = _meta_build()
    pipe = pipesim.Pipeline(model, "1f1b", 2, mse, init_fn=_seeded_init)
    still_meta = [n for n, p in model.named_parameters() if p.is_meta]
    mine = [n for n, _ in pipe.named_parameters()]
    x, y = mlp_batch(0, dtype=torch.float32)
    pipe.step(x, y)
    return {"meta": still_meta, "mine": mine, "state": pipe.state_dict(),
            "grads": {n: p.grad for n, p in pipe.named_parameters()}}


def _seeded_init(layer: nn.Module) -> None:
    """Deterministic values from the layer's shapes, so the reference can rebuild them."""
    with torch.no_grad():
        for i, t in enumerate([*layer.parameters(), *layer.buffers()]):
            if not t.is_floating_point():
                t.zero_()  # BatchNorm's num_batches_tracked
                continue
            gen = torch.Generator().manual_seed(t.numel() + 31 * i)
            t.copy_(torch.rand(t.shape, generator=gen, dtype=t.dtype) * 0.4 + 0.3)


def test_a_model_built_on_meta_is_materialised_per_rank() -> None:
    results = pipesim.launch(_meta_train, 2)
    for r in results:  # each rank materialised only its own layers
        assert r["mine"] and not set(r["mine"]) & set(r["meta"])
        assert len(r["meta"]) + len(r["mine"]) == len(list(_meta_build().parameters()))
    model = mlp_bn(dtype=torch.float32)
    for layer in model:
        _seeded_init(layer)
    state = {k: v for r in results for k, v in r["state"].items()}
    assert set(state) == set(model.state_dict())
    x, y = mlp_batch(0, dtype=torch.float32)
    torch.autograd.backward(mse(run_layers(list(model), x), y))
    grads = {k: v for r in results for k, v in r["grads"].items()}
    for name, p in model.named_parameters():
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-6, msg=name)


class _NoReset(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.w


def _meta_without_init(rank: int, world: int) -> None:
    with torch.device("meta"):
        model = nn.Sequential(nn.Linear(4, 4), _NoReset())
    pipesim.Pipeline(model, "gpipe", 2, mse)


def test_a_meta_tensor_no_reset_parameters_can_set_is_refused() -> None:
    with pytest.raises(pipesim.PipelineError, match=r"1\.w was built on the meta device .* "
                       r"pass init_fn"):
        pipesim.launch(_meta_without_init, 2)


def _shapes_change(rank: int, world: int) -> list[float | None]:
    pipe = pipesim.Pipeline(mixed(), "zb-h1", 2, xent)
    out = []
    for n in (8, 4, 8):  # a shorter batch, then the long one again: shapes re-inferred
        x, y = mixed_batch(n, n)
        out.append(pipe.step(x, y))
    return out


def test_a_shorter_batch_re_infers_shapes() -> None:
    got = pipesim.launch(_shapes_change, 2)[1]
    model = mixed()
    for n, loss in zip((8, 4, 8), got, strict=True):
        x, y = mixed_batch(n, n)
        want = float(xent(run_layers(list(model), x), y).detach())
        assert loss == pytest.approx(want, rel=1e-10)


def _inference_and_timeline(rank: int, world: int) -> tuple[Any, Any]:
    pipe = pipesim.Pipeline(mixed(), "1f1b", 4, xent)
    x, y = mixed_batch(0)
    out = pipe.forward(x)
    pipe.step(x, y)
    return out, pipe.timeline()


def test_forward_returns_outputs_and_timeline_holds_every_action() -> None:
    results = pipesim.launch(_inference_and_timeline, 2)
    x, _ = mixed_batch(0)
    torch.testing.assert_close(results[1][0], run_layers(list(mixed()), x), rtol=1e-12,
                               atol=1e-12)
    assert results[0][0] is None and results[1][1] is None
    timeline = results[0][1]
    want = sorted(str(a) for row in get_schedule("1f1b", 2, 4).actions for a in row)
    assert sorted(str(e.action) for e in timeline.events) == want
    chart = pipesim.ascii(timeline)
    assert all(f"rank {r} |" in chart for r in range(2)) and "F0" in chart
    # when each rank began the step and when the ranks' batch check let it go on
    for rank, row in enumerate(timeline.by_rank()):
        assert timeline.meta["begin"][rank] <= timeline.meta["synced"][rank] <= row[0].start


# ----------------------------------------------------------------------------- mistakes


def _bad(rank: int, world: int, case: str) -> None:
    model, kw = mixed(), {"microbatches": 4}
    x, y = mixed_batch(0)
    if case == "layers":
        model = nn.Sequential(*list(model)[:3])
        kw = {"microbatches": 4}
        pipesim.Pipeline(model, "zbv", loss_fn=xent, **kw)
    if case == "differ" and rank == 1:
        model[2] = nn.Linear(3, 3)  # type: ignore[assignment]
    if case == "non-tensor":
        model[2] = _Stringy()  # type: ignore[assignment]  # stage 0's last layer
    schedule = get_schedule("1f1b", 4, 4) if case == "world" else "1f1b"
    if case == "world":
        kw = {}
    pipe = pipesim.Pipeline(model, schedule, loss_fn=xent, **kw)
    if case == "divide":
        x, y = mixed_batch(0, n=6)
    pipe.step(x, None if case == "targets" else y)


class _Stringy(nn.Module):
    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> str:
        return "not a tensor"


@pytest.mark.parametrize(("case", "words"), [
    ("divide", "a batch of 6 samples does not split into 4 microbatches"),
    ("layers", "3 layers cannot fill 4 stages"),
    ("non-tensor", "stage 0: StageOutputError: stage 0 returned a str"),
    ("differ", "rank 1's model (layer names, classes, parameter shapes or dtypes) differs"),
    ("world", "the schedule has 4 ranks but the job has 2"),
    ("targets", "targets=None on the rank holding the last stage"),
])
def test_a_mistake_is_one_error_on_every_rank(case: str, words: str) -> None:
    with pytest.raises(pipesim.PipelineError, match=words.replace("(", r"\(").replace(")", r"\)")):
        pipesim.launch(_bad, 2, case)
