"""What a built-in model family is: its layers, its data and its loss, all from a RunConfig."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from pipesim.config import RunConfig

LossFn = Callable[..., torch.Tensor]  # (last stage's output(s), target) -> scalar mean loss
Batch = tuple[list[torch.Tensor], list[torch.Tensor]]  # inputs and targets per microbatch

_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def torch_dtype(cfg: RunConfig) -> torch.dtype:
    return _DTYPES[cfg.dtype]


@dataclass(frozen=True)
class ModelSpec:
    """A trainable model family.

    ``build(cfg)`` -> the layer list (deterministic in cfg.seed); ``batch(cfg, step)`` -> all
    dp x m microbatches of inputs and targets, the same on every rank; ``loss(cfg)`` -> loss of
    (last stage output, target), a mean over the microbatch.
    """

    name: str
    build: Callable[[RunConfig], list[nn.Module]]
    batch: Callable[[RunConfig, int], Batch]
    loss: Callable[[RunConfig], LossFn]
    summary: str = ""


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


__all__ = ["Batch", "LossFn", "ModelSpec", "split_layers", "torch_dtype"]
