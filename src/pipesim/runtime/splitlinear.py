"""Linear layers whose weight gradient can be computed later (the W of zero-bubble schedules).

``SplitLinear`` is an ``nn.Linear`` (same parameters, same state_dict) whose backward computes
the input gradient and either accumulates the weight gradient at once, in place into ``.grad``
(mode "now": a full backward B), or queues the tensors it needs for a later W (mode "later").
Other modules keep plain autograd.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional


class WeightGradQueue:
    """Per stage: deferred weight-gradient work, grouped by microbatch."""

    def __init__(self) -> None:
        self.defer = False  # True while an I runs: queue instead of accumulate
        self.current: int | None = None  # the microbatch whose backward is running
        self.pending: dict[int, list[Callable[[], None]]] = {}

    def add(self, work: Callable[[], None]) -> None:
        if self.defer and self.current is not None:
            self.pending.setdefault(self.current, []).append(work)
        else:
            work()

    def run(self, microbatch: int) -> None:
        for work in self.pending.pop(microbatch, []):
            work()


def _accumulate(weight: torch.Tensor, bias: torch.Tensor | None, x2d: torch.Tensor,
                g2d: torch.Tensor) -> None:
    """weight.grad += g^T x; bias.grad += sum(g) - in place, as autograd would accumulate."""
    with torch.no_grad():
        if weight.grad is None:
            weight.grad = g2d.t().mm(x2d)
        else:
            weight.grad.addmm_(g2d.t(), x2d)
        if bias is not None:
            gb = g2d.sum(0)
            if bias.grad is None:
                bias.grad = gb
            else:
                bias.grad.add_(gb)


class _SplitLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                owner: SplitLinear) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.owner = owner
        return functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[Any, ...]:
        x, weight = ctx.saved_tensors
        owner: SplitLinear = ctx.owner
        grad_in = grad_out.matmul(weight) if ctx.needs_input_grad[0] else None
        x2d = x.reshape(-1, x.shape[-1])
        g2d = grad_out.reshape(-1, grad_out.shape[-1])
        w, b = owner.weight, owner.bias

        def work() -> None:
            _accumulate(w, b, x2d, g2d)

        if owner.queue is None:
            work()
        else:
            owner.queue.add(work)
        return grad_in, None, None, None


class SplitLinear(nn.Linear):
    """nn.Linear with an explicit, deferrable weight gradient. x: [..., in] -> [..., out]."""

    queue: WeightGradQueue | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled() or not self.weight.requires_grad:
            return functional.linear(x, self.weight, self.bias)
        out: torch.Tensor = _SplitLinearFn.apply(  # type: ignore[no-untyped-call]
            x, self.weight, self.bias, self)
        return out


def convert_linears(module: nn.Module, queue: WeightGradQueue) -> int:
    """Turn every plain nn.Linear inside ``module`` into a SplitLinear (in place); count them."""
    count = 0
    for child in module.modules():
        if type(child) is nn.Linear:
            child.__class__ = SplitLinear
            cast(SplitLinear, child).queue = queue
            count += 1
    return count


__all__ = ["SplitLinear", "WeightGradQueue", "convert_linears"]
