"""Linear layers whose weight gradient can be computed later (the W of zero-bubble schedules).

``SplitLinear`` is an ``nn.Linear`` (same parameters, same state_dict) whose backward computes
the input gradient and either accumulates the weight gradient at once, in place into ``.grad``
(mode "now": a full backward B), or queues the tensors it needs for a later W (mode "later").
Other modules keep plain autograd.

Several microbatches' W that a schedule runs back to back are one GEMM per layer
(``WeightGradQueue.run(*microbatches)``): sum_i g_i^T x_i = [g_1; g_2; ...]^T [x_1; x_2; ...],
so the weight gradient is read and written once instead of once per microbatch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional


@dataclass
class _Deferred:
    """One layer's weight gradient, not yet computed: weight.grad += g^T x (bias: sum g)."""

    weight: torch.Tensor
    bias: torch.Tensor | None
    x: torch.Tensor  # [rows, in]
    g: torch.Tensor  # [rows, out]

    def run(self) -> None:
        _accumulate(self.weight, self.bias, self.x, self.g)


class WeightGradQueue:
    """Per stage: deferred weight-gradient work, grouped by microbatch."""

    def __init__(self) -> None:
        self.defer = False  # True while an I runs: queue instead of accumulate
        self.current: int | None = None  # the microbatch whose backward is running
        self.pending: dict[int, list[_Deferred]] = {}

    def add(self, work: _Deferred) -> None:
        if self.defer and self.current is not None:
            self.pending.setdefault(self.current, []).append(work)
        else:
            work.run()

    def run(self, *microbatches: int) -> None:
        """The deferred weight gradients of ``microbatches``: with several, one GEMM per layer
        over all their rows (the same sum, read and written once)."""
        batches = [self.pending.pop(mb, []) for mb in microbatches]
        if len(batches) > 1 and _aligned(batches):
            for works in zip(*batches, strict=True):
                _accumulate(works[0].weight, works[0].bias, torch.cat([w.x for w in works]),
                            torch.cat([w.g for w in works]))
            return
        for batch in batches:
            for work in batch:
                work.run()


def _aligned(batches: list[list[_Deferred]]) -> bool:
    """Every microbatch deferred the same layers in the same order (rows may differ)."""
    first = batches[0]
    return all(len(b) == len(first) and all(w.weight is v.weight and w.x.dtype == v.x.dtype
                                            for w, v in zip(b, first, strict=True))
               for b in batches[1:])


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
        work = _Deferred(owner.weight, owner.bias, x2d, g2d)
        if owner.queue is None:
            work.run()
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
