"""Models the runtime trains: the tutorial's MLP (a Linear+ReLU block per layer) and layer lists.

A model is a list of layers; a *balance* (layers per stage) cuts it into stage modules.
Every rank builds the whole model from the seed, then keeps its own stages: no weights travel.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn


class LinearReLU(nn.Module):
    """The tutorial's stage: Linear then ReLU. x: [batch, in] -> [batch, out]."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activation(self.linear(x))


def build_mlp(hidden: int, layers: int, seed: int, dtype: torch.dtype = torch.float32
              ) -> list[nn.Module]:
    """``layers`` LinearReLU blocks of width ``hidden``, initialised from ``seed``."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        blocks: list[nn.Module] = [LinearReLU(hidden, hidden).to(dtype) for _ in range(layers)]
    finally:
        torch.random.set_rng_state(gen_state)
    return blocks


def uniform_balance(layers: int, stages: int) -> list[int]:
    """Equal layer counts, the remainder spread over the first stages; never an empty stage."""
    if layers < stages:
        raise ValueError(f"{layers} layers cannot fill {stages} stages (each needs at least one)")
    base, extra = divmod(layers, stages)
    return [base + (1 if s < extra else 0) for s in range(stages)]


def split_layers(layers: Sequence[nn.Module], balance: Sequence[int]) -> list[nn.Sequential]:
    """Cut ``layers`` into contiguous stage modules of ``balance[s]`` layers each."""
    if sum(balance) != len(layers) or any(b < 1 for b in balance):
        raise ValueError(f"balance {list(balance)} does not cut {len(layers)} layers into "
                         f"non-empty stages")
    out, start = [], 0
    for size in balance:
        out.append(nn.Sequential(*layers[start:start + size]))
        start += size
    return out


LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batch = tuple[list[torch.Tensor], list[torch.Tensor]]  # inputs and targets per microbatch


@dataclass(frozen=True)
class ModelSpec:
    """A trainable model family: its layers, its data and its loss, all from the run config.

    ``build(cfg)`` -> the layer list (deterministic in cfg.seed); ``batch(cfg, step)`` ->
    microbatches of inputs and targets, the same on every rank; ``loss(cfg)`` -> loss function
    of (last stage output, target), a mean over the microbatch.
    """

    name: str
    build: Callable[[Any], list[nn.Module]]
    batch: Callable[[Any, int], Batch]
    loss: Callable[[Any], LossFn]
    summary: str = ""


MODELS: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    MODELS[spec.name] = spec
    return spec


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; valid: {', '.join(MODELS)}") from None


def _mlp_layers(cfg: Any) -> list[nn.Module]:
    return build_mlp(cfg.hidden_size, cfg.num_layers, cfg.seed, cfg.torch_dtype)


MLP_DATASET = 1024  # samples in the MLP's synthetic dataset


@functools.lru_cache(maxsize=4)
def _mlp_dataset(seed: int, hidden: int, dtype: torch.dtype, classes: bool
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """MLP_DATASET random inputs and learnable targets, made once a process.

    The targets are a fixed random "teacher" applied to the inputs (ReLU of a linear map, as
    the MLP's own last layer; class ids: its argmax), so training visibly lowers the loss;
    random targets would leave nothing to learn.
    """
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(MLP_DATASET, hidden, generator=gen, dtype=dtype)
    teacher = torch.randn(hidden, hidden, generator=gen, dtype=dtype) / hidden ** 0.5
    y = (x @ teacher).argmax(dim=1) if classes else torch.relu(x @ teacher)
    return x, y


def _mlp_batch(cfg: Any, step: int) -> Batch:
    """m microbatches of b samples drawn from the dataset, seeded by the step.

    Indexing an in-memory dataset, as a data loader would, rather than drawing new random
    samples each step: on one thread, drawing 4 x 64 x 512 inputs and targets took 3.5 ms
    of every step on the ranks that read the batch.
    """
    m, b = cfg.global_microbatches, cfg.batch_size
    x, y = _mlp_dataset(cfg.seed, cfg.hidden_size, cfg.torch_dtype, cfg.loss == "cross-entropy")
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    index = torch.randint(0, MLP_DATASET, (m * b,), generator=gen)
    return list(x[index].chunk(m)), list(y[index].chunk(m))


def _mlp_loss(cfg: Any) -> LossFn:
    if cfg.loss == "cross-entropy":
        return nn.functional.cross_entropy
    return nn.functional.mse_loss


register_model(ModelSpec("mlp", _mlp_layers, _mlp_batch, _mlp_loss,
                         "the tutorial's MLP: Linear+ReLU layers of --hidden-size"))

from pipesim.runtime import gpt as _gpt  # noqa: E402, F401  (registers --model gpt)
