"""The models pipesim builds itself, by name: an explicit registry (nothing registers on import).

    mlp   the tutorial's MLP: Linear+ReLU layers of --hidden-size
    gpt   a small character-level GPT on a shipped text; --layers = blocks + 2

Your own model needs no registration: pass it to ``pipesim.Pipeline``.
"""

from __future__ import annotations

from torch import nn

from pipesim.config import RunConfig
from pipesim.models.gpt import GPT
from pipesim.models.mlp import MLP
from pipesim.models.spec import Batch, LossFn, ModelSpec, split_layers, torch_dtype

MODELS: dict[str, ModelSpec] = {"mlp": MLP, "gpt": GPT}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None


def build_layers(cfg: RunConfig) -> list[nn.Module]:
    return get_model(cfg.model).build(cfg)


def make_batch(cfg: RunConfig, step: int) -> Batch:
    """All dp x m microbatches of inputs and targets for ``step``, the same on every rank."""
    inputs, targets = get_model(cfg.model).batch(cfg, step)
    if len(inputs) != cfg.global_microbatches:
        raise RuntimeError(f"model {cfg.model!r} made {len(inputs)} microbatches; "
                           f"expected {cfg.global_microbatches}")
    return inputs, targets


def loss_function(cfg: RunConfig) -> LossFn:
    return get_model(cfg.model).loss(cfg)


__all__ = ["MODELS", "Batch", "LossFn", "ModelSpec", "build_layers", "get_model",
           "loss_function", "make_batch", "split_layers", "torch_dtype"]
