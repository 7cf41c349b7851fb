"""One pipeline stage on one rank: forward, full or split backward, stashing and recompute.

A stage takes and returns a *payload*: a tuple of tensors (a module returning one tensor gives a
1-tuple; the next stage receives the members as positional arguments). Floating-point members
carry gradients back; integer and bool members (token ids, masks) travel forward only.

F stashes what backward needs (the stage input, and the graph unless checkpointing);
B runs the whole backward; I runs it with Linear weight gradients deferred; W runs those.
Activations are dropped as soon as their backward (or W) is done. Losses stay tensors: they are
read once per step by whoever asks, never per microbatch (on CUDA that would be a sync each).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from pipesim.runtime.splitlinear import WeightGradQueue, convert_linears

Payload = tuple[torch.Tensor, ...]
LossFn = Callable[..., torch.Tensor]  # (last stage's output, target) -> scalar mean loss


class StageOutputError(TypeError):
    """A stage module returned something other than a tensor or a tuple of tensors."""


def as_payload(value: Any, stage: int) -> Payload:
    """A module's output as a tuple of tensors; StageOutputError for anything else."""
    if isinstance(value, torch.Tensor):
        return (value,)
    if isinstance(value, tuple | list) and value and all(isinstance(v, torch.Tensor)
                                                          for v in value):
        return tuple(value)
    kind = type(value).__name__ if not isinstance(value, tuple | list) else \
        f"{type(value).__name__} of " + ", ".join(sorted({type(v).__name__ for v in value}))
    raise StageOutputError(f"stage {stage} returned a {kind or 'empty tuple'}; a stage must "
                           f"return a tensor or a tuple of tensors")


def floating(payload: Payload) -> Payload:
    """The members that carry gradients back."""
    return tuple(t for t in payload if t.is_floating_point())


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
        self._stash: dict[int, tuple[Payload, Payload | None]] = {}
        self._targets: dict[int, Any] = {}
        self.losses: dict[int, torch.Tensor] = {}  # unscaled, detached loss per microbatch

    def run(self, inputs: Payload) -> Payload:
        """The module on ``inputs`` (no stashing): shape inference and inference use it."""
        return as_payload(self.module(*inputs), self.index)

    def forward(self, mb: int, inputs: Payload, target: Any = None, training: bool = True
                ) -> Payload:
        """Run F; returns the output to send on (for the last stage: its output)."""
        if not training:
            with torch.no_grad():
                return self.run(inputs)
        if not self.is_first:  # backward must reach the received floating inputs
            inputs = tuple(x.detach().requires_grad_(True) if x.is_floating_point() else x
                           for x in inputs)
        if self.is_last:
            if target is None:
                raise ValueError("the last stage needs targets to compute the loss")
            self._targets[mb] = target
        if self.checkpoint:
            with torch.no_grad():
                out = self.module(*inputs)
                if self.is_last:
                    self.losses[mb] = self._loss(out, target).detach()
            self._stash[mb] = (inputs, None)
            return tuple(t.detach() for t in as_payload(out, self.index))
        out = self.module(*inputs)
        if self.is_last:
            loss = self._loss(out, target)
            self.losses[mb] = loss.detach()
            self._stash[mb] = (inputs, (loss * self.scale,))
            return tuple(t.detach() for t in as_payload(out, self.index))
        payload = as_payload(out, self.index)
        self._stash[mb] = (inputs, payload)
        return tuple(t.detach() for t in payload)

    def _loss(self, out: Any, target: Any) -> torch.Tensor:
        assert self.loss_fn is not None
        loss = self.loss_fn(out, target)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            shape = list(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
            raise ValueError(f"loss_fn must return a scalar tensor (the microbatch's mean "
                             f"loss); it returned {shape}")
        return loss.reshape(())

    def _recompute(self, mb: int, inputs: Payload) -> Payload:
        with torch.enable_grad():
            out = self.module(*inputs)
            if self.is_last:
                return (self._loss(out, self._targets[mb]) * self.scale,)
            return as_payload(out, self.index)

    def backward(self, mb: int, grads: Payload | None, split: bool) -> Payload | None:
        """B (split=False) or I (split=True); returns the gradients of the floating inputs."""
        inputs, out = self._stash.pop(mb)
        if out is None:  # checkpointed: recompute the forward with autograd on
            out = self._recompute(mb, inputs)
        self._targets.pop(mb, None)
        if self.is_last:
            roots, seeds = list(out), None
        else:
            assert grads is not None
            pairs = [(o, g) for o, g in zip(floating(out), grads, strict=True) if o.requires_grad]
            roots, seeds = [o for o, _ in pairs], [g for _, g in pairs]
        self.queue.current, self.queue.defer = mb, split
        try:
            if roots:
                torch.autograd.backward(roots, grad_tensors=seeds)
        finally:
            self.queue.current, self.queue.defer = None, False
        if self.is_first:
            return None
        grad_in = tuple(x.grad if x.grad is not None else torch.zeros_like(x)
                        for x in floating(inputs))
        for x in inputs:
            x.grad = None
        return grad_in

    def weight(self, *mbs: int) -> None:
        """W: the deferred Linear weight gradients of ``mbs`` (several: one GEMM per layer)."""
        self.queue.run(*mbs)

    def parameters(self) -> list[nn.Parameter]:
        return list(self.module.parameters())

    def reset(self) -> None:
        """Drop anything left from an interrupted step."""
        self._stash.clear()
        self._targets.clear()
        self.queue.pending.clear()
        self.losses.clear()


__all__ = ["LossFn", "Payload", "StageOutputError", "StageRunner", "as_payload", "floating"]
