"""The tutorial's MLP: a Linear+ReLU block per layer, and its in-memory dataset."""

from __future__ import annotations

import functools

import torch
from torch import nn

from pipesim.config import RunConfig
from pipesim.models.spec import Batch, LossFn, ModelSpec, torch_dtype


class LinearReLU(nn.Module):
    """The tutorial's stage: Linear then ReLU. x: [batch, in] -> [batch, out]."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, out_features)
        self.activation = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.activation(self.linear(x))
        return out


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


def _mlp_layers(cfg: RunConfig) -> list[nn.Module]:
    return build_mlp(cfg.hidden_size, cfg.num_layers, cfg.seed, torch_dtype(cfg))


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


def _mlp_batch(cfg: RunConfig, step: int) -> Batch:
    """m microbatches of b samples drawn from the dataset, seeded by the step.

    Indexing an in-memory dataset, as a data loader would, rather than drawing new random
    samples each step: on one thread, drawing 4 x 64 x 512 inputs and targets took 3.5 ms
    of every step on the ranks that read the batch.
    """
    m, b = cfg.global_microbatches, cfg.batch_size
    x, y = _mlp_dataset(cfg.seed, cfg.hidden_size, torch_dtype(cfg), cfg.loss == "cross-entropy")
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    index = torch.randint(0, MLP_DATASET, (m * b,), generator=gen)
    return list(x[index].chunk(m)), list(y[index].chunk(m))


def _mlp_loss(cfg: RunConfig) -> LossFn:
    if cfg.loss == "cross-entropy":
        return nn.functional.cross_entropy
    return nn.functional.mse_loss


MLP = ModelSpec("mlp", _mlp_layers, _mlp_batch, _mlp_loss,
                "the tutorial's MLP: Linear+ReLU layers of --hidden-size")

__all__ = ["MLP", "MLP_DATASET", "LinearReLU", "build_mlp"]
