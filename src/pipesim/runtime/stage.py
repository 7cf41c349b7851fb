"""One pipeline stage on one rank: forward, full or split backward, stashing and recompute.

F stashes what backward needs (the stage input, and the graph unless checkpointing);
B runs the whole backward; I runs it with Linear weight gradients deferred; W runs those.
Activations are dropped as soon as their backward (or W) is done.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pipesim.runtime.splitlinear import WeightGradQueue, convert_linears

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class StageRunner:
    """Runs stage ``index`` (of ``num_stages``) on its module; the last stage computes the loss."""

    def __init__(self, index: int, num_stages: int, module: nn.Module, loss_fn: LossFn | None,
                 microbatches: int, checkpoint: bool = False) -> None:
        self.index = index
        self.is_first = index == 0
        self.is_last = index == num_stages - 1
        self.module = module
        self.loss_fn = loss_fn
        self.scale = 1.0 / microbatches  # each microbatch's loss is 1/m of the step's mean
        self.checkpoint = checkpoint
        self.queue = WeightGradQueue()
        self.fast_linears = convert_linears(module, self.queue)
        # mb -> (stage input, stage output or scaled loss; None when checkpointing)
        self._stash: dict[int, tuple[torch.Tensor, torch.Tensor | None]] = {}
        self._targets: dict[int, torch.Tensor] = {}
        self.losses: dict[int, float] = {}  # unscaled loss per microbatch (last stage)

    def forward(self, mb: int, x: torch.Tensor, target: torch.Tensor | None = None,
                training: bool = True) -> torch.Tensor:
        """Run F; returns the output to send on (for the last stage: its output)."""
        if not training:
            with torch.no_grad():
                return self.module(x)  # type: ignore[no-any-return]
        if not self.is_first and x.is_floating_point():
            x = x.detach().requires_grad_(True)  # backward must reach the received input
        if self.is_last:
            if target is None:
                raise ValueError("the last stage needs targets to compute the loss")
            self._targets[mb] = target
        if self.checkpoint:
            with torch.no_grad():
                out = self.module(x)
            self._stash[mb] = (x, None)
            if self.is_last:
                self.losses[mb] = float(self._loss(out, target))  # type: ignore[arg-type]
            return out.detach()
        out = self.module(x)
        if self.is_last:
            loss = self._loss(out, target)  # type: ignore[arg-type]
            self.losses[mb] = float(loss.detach())
            self._stash[mb] = (x, loss * self.scale)
        else:
            self._stash[mb] = (x, out)
        return out.detach()

    def _loss(self, out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        assert self.loss_fn is not None
        return self.loss_fn(out, target)

    def backward(self, mb: int, grad: torch.Tensor | None, split: bool) -> torch.Tensor | None:
        """B (split=False) or I (split=True); returns the gradient of the stage input."""
        x, out = self._stash.pop(mb)
        if out is None:  # checkpointed: recompute the forward with autograd on
            with torch.enable_grad():
                out = self.module(x)
                if self.is_last:
                    out = self._loss(out, self._targets[mb]) * self.scale
        target = self._targets.pop(mb, None)
        del target
        self.queue.current, self.queue.defer = mb, split
        try:
            if self.is_last:
                torch.autograd.backward(out)
            else:
                torch.autograd.backward(out, grad_tensors=grad)
        finally:
            self.queue.current, self.queue.defer = None, False
        grad_in = x.grad if x.requires_grad else None
        x.grad = None
        return grad_in

    def weight(self, mb: int) -> None:
        """W: the deferred Linear weight gradients of ``mb``."""
        self.queue.run(mb)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.module.parameters())

    def reset(self) -> None:
        """Drop anything left from an interrupted step."""
        self._stash.clear()
        self._targets.clear()
        self.queue.pending.clear()
        self.losses.clear()
