"""The optimizers the built-in runs use (``--optimizer sgd|adam``)."""

from __future__ import annotations

import torch
from torch import nn


def make_optimizer(name: str, params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
    """SGD, or Adam with its fused kernel (CPU and CUDA): one pass over each tensor instead of
    a chain of element-wise ops with temporaries; on one CPU thread it updates four 512x512
    Linears in 1.6-2.1 ms against 5.5-6.4 ms (freed memory kept) or 12 ms (glibc's defaults)
    for the for-loop Adam (benchmarks/RESULTS_predict.md)."""
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, fused=True)
    return torch.optim.SGD(params, lr=lr)


__all__ = ["make_optimizer"]
