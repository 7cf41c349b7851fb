"""Models a user would write, for the library's tests: built the same way in every process.

    mixed(d)      ids [b, T] int64 -> Embed -> (h, mask) tuples through Gate/Scaled/Block
                  layers (int64 mask travels, a registered buffer) -> Head -> logits [b, C]
    mlp_bn(d)     Linear + GELU + LayerNorm blocks with a BatchNorm1d in eval mode
Legend: b samples, T tokens, d width, C classes (= VOCAB).
"""

from __future__ import annotations

import torch
from torch import nn

from pipesim.runtime.layers import run_layers

VOCAB = 11
T = 5


class Embed(nn.Module):
    """ids [b, T] -> (h [b, T, d], mask [b, T] int64: 1 where the token counts)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(VOCAB, d)
        self.pos = nn.Parameter(torch.randn(T, d) * 0.1)

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.tok(ids) + self.pos, (ids % 3 != 0).long()


class Gate(nn.Module):
    """(h, mask) -> (h + mask * LayerNorm(Linear(h)), mask)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin, self.norm = nn.Linear(d, d), nn.LayerNorm(d)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return h + self.norm(self.lin(h)) * mask.unsqueeze(-1).to(h.dtype), mask


class Scaled(nn.Module):
    """A registered buffer (not a parameter): (h, mask) -> (GELU(Linear(h)) * scale, mask)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.lin = nn.Linear(d, d)
        self.register_buffer("scale", torch.linspace(0.5, 1.5, d))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return nn.functional.gelu(self.lin(h)) * self.scale, mask


class Head(nn.Module):
    """(h, mask) -> logits [b, C]: a masked mean over tokens, then Linear."""

    def __init__(self, d: int) -> None:
        super().__init__()
        self.out = nn.Linear(d, VOCAB)

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = mask.to(h.dtype).unsqueeze(-1)
        pooled = (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)
        return self.out(pooled)  # type: ignore[no-any-return]


def mixed(d: int = 8, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(Embed(d), Gate(d), Scaled(d), Gate(d), Scaled(d), Head(d)).to(dtype)


def mixed_batch(step: int, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(100 + step)
    return torch.randint(0, VOCAB, (n, T), generator=gen), \
        torch.randint(0, VOCAB, (n,), generator=gen)


def mlp_bn(d: int = 6, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    torch.manual_seed(1)
    bn = nn.BatchNorm1d(d)
    bn.running_mean.uniform_(-0.5, 0.5)
    bn.running_var.uniform_(0.5, 1.5)
    bn.eval()  # uses (and keeps) its running statistics: a buffer, no batch dependence
    return nn.Sequential(
        nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d)),
        nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d)),
        nn.Sequential(nn.Linear(d, d), bn),
        nn.Sequential(nn.Linear(d, d), nn.GELU()),
        nn.Linear(d, d),
    ).to(dtype)


def mlp_batch(step: int, n: int = 8, d: int = 6, dtype: torch.dtype = torch.float64
              ) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(200 + step)
    return torch.randn(n, d, generator=gen, dtype=dtype), torch.randn(n, d, generator=gen,
                                                                     dtype=dtype)


def reference(model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]],
              loss_fn: object, lr: float = 0.1) -> tuple[list[float], dict[str, torch.Tensor],
                                                          dict[str, torch.Tensor]]:
    """Unpipelined: losses, final state and the last step's gradients, SGD on the batches."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    losses, grads = [], {}
    for x, y in batches:
        loss = loss_fn(run_layers(list(model), x), y)  # type: ignore[operator]
        torch.autograd.backward(loss)
        losses.append(float(loss.detach()))
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        opt.step()
        opt.zero_grad()
    return losses, {k: v.clone() for k, v in model.state_dict().items()}, grads
