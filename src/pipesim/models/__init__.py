"""The models pipesim builds itself, by name: an explicit registry (nothing registers on import).

    mlp   the tutorial's MLP: Linear+ReLU layers of --hidden-size
    gpt   a small character-level GPT on a shipped text; --layers = blocks + 2

Your own model needs no registration: pass it to ``pipesim.Pipeline``.
"""

from __future__ import annotations

from pipesim.models.gpt import GPT
from pipesim.models.mlp import MLP
from pipesim.models.spec import Batch, LossFn, ModelSpec, split_layers, torch_dtype

MODELS: dict[str, ModelSpec] = {"mlp": MLP, "gpt": GPT}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None


__all__ = ["MODELS", "Batch", "LossFn", "ModelSpec", "get_model", "split_layers", "torch_dtype"]
