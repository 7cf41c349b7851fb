"""examples/hf_gpt2.py: a Hugging Face GPT-2 cut into pipesim layers trains as the HF model does.

For every training schedule, two SGD-with-momentum steps through ``pipesim.Pipeline`` on 2 ranks
give the unpipelined ``GPT2LMHeadModel``'s losses, every parameter's gradient at each step, and
its weights after the steps (float64, 1e-10). The example's own adapters are what is tested.
Tiny config (hidden 16, 2 heads, 8 tokens, 2 blocks: 4 layers, enough for 4 stages on 2 ranks).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import pipesim

pytest.importorskip("transformers")

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "hf_gpt2.py"
BLOCKS, HIDDEN, HEADS, SEQ = 2, 16, 2, 8
MICROBATCHES, PER_MB, STEPS, LR = 4, 2, 2, 0.5
TRAINING = [n for n in pipesim.SCHEDULES
            if not pipesim.get_schedule(n, 2, MICROBATCHES).forward_only]


def _example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("hf_gpt2_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ex = _example()


def _model() -> Any:
    torch.manual_seed(7)
    return ex.gpt2(BLOCKS, HIDDEN, HEADS, SEQ).to(torch.float64)


def _optimizer(params: Any) -> torch.optim.Optimizer:
    return torch.optim.SGD(params, lr=LR, momentum=0.9)  # linear in the gradients


def _batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [ex.batch(step, MICROBATCHES * PER_MB, SEQ, seed=1) for step in range(STEPS)]


def _pipelined(rank: int, world: int, schedule: str) -> dict[str, Any]:
    """One rank: losses, gradients per step and final weights, keyed by HF parameter names."""
    model = _model()
    layers = ex.cut(model)
    names = ex.hf_names(layers, model)
    pipe = pipesim.Pipeline(layers, schedule, microbatches=MICROBATCHES, loss_fn=ex.loss_fn)
    opt = _optimizer(pipe.parameters())
    out: dict[str, Any] = {"losses": [], "grads": []}
    for x, y in _batches():
        out["losses"].append(pipe.step(x, y))
        out["grads"].append({names[n]: p.grad.clone() for n, p in pipe.named_parameters()
                             if p.grad is not None})
        opt.step()
        opt.zero_grad()
    out["weights"] = {names[n]: p.detach().clone() for n, p in pipe.named_parameters()}
    return out


@pytest.fixture(scope="module")
def reference() -> dict[str, Any]:
    """The whole HF model in this process: its own forward, the same loss and optimizer."""
    model = _model()
    opt = _optimizer(model.parameters())
    out: dict[str, Any] = {"losses": [], "grads": []}
    for x, y in _batches():
        loss = ex.loss_fn(model(input_ids=x).logits, y)
        loss.backward()
        out["losses"].append(float(loss.detach()))
        out["grads"].append({n: p.grad.clone() for n, p in model.named_parameters()})
        opt.step()
        opt.zero_grad()
    out["weights"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return out


def test_cut_covers_every_hf_parameter_once() -> None:
    model = _model()
    names = ex.hf_names(ex.cut(model), model)
    assert sorted(names.values()) == sorted(n for n, _ in model.named_parameters())
    assert model.lm_head.weight is not model.transformer.wte.weight  # untied: ranks can't share


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_cut_forward_equals_hf_forward(attention: str) -> None:
    """Unpipelined, the layers compute the HF model's logits; eager attention adds the mask it
    is given and nothing else, so a Block without its causal mask would look ahead here."""
    model = _model()
    model.set_attn_implementation(attention)
    x, _ = ex.batch(0, 2, SEQ, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(ex.cut(model)(x), model(input_ids=x).logits,
                                   rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("schedule", TRAINING)
def test_hf_gpt2_pipelined_equals_unpipelined(schedule: str, reference: dict[str, Any]) -> None:
    ranks = pipesim.launch(_pipelined, 2, schedule)
    losses = [r["losses"] for r in ranks if r["losses"][0] is not None]
    assert len(losses) == 1  # exactly one rank holds the last stage
    assert losses[0] == pytest.approx(reference["losses"], rel=1e-12)
    for step in range(STEPS):
        got = {n: g for r in ranks for n, g in r["grads"][step].items()}
        assert got.keys() == reference["grads"][step].keys()  # every parameter, each on one rank
        for name, want in reference["grads"][step].items():
            torch.testing.assert_close(got[name], want, rtol=1e-10, atol=1e-10,
                                       msg=lambda e, n=name, s=step: f"step {s} grad {n}: {e}")
    weights = {n: w for r in ranks for n, w in r["weights"].items()}
    assert sum(len(r["weights"]) for r in ranks) == len(reference["weights"])
    for name, want in reference["weights"].items():
        torch.testing.assert_close(weights[name], want, rtol=1e-10, atol=1e-10,
                                   msg=lambda e, n=name: f"weight {n} after {STEPS} steps: {e}")
