"""A user's model as layers: their names, the balance that cuts them, and this rank's share.

A stage module chains its layers (a layer returning a tuple passes its members to the next as
positional arguments) and keys them by their own names, so a stage's ``named_parameters`` and
``state_dict`` read exactly as the whole model's (``"3.weight"``). A layer built on the meta
device is materialised only on the rank that keeps it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from pipesim.balance import blocks_to_bounds, check_balance
from pipesim.profiling.partitioning import METHODS, balance_of
from pipesim.runtime.agree import PipelineError


class Stage(nn.Module):
    """Consecutive layers of a model under their own names; ``forward(*inputs)`` chains them."""

    def __init__(self, named: Sequence[tuple[str, nn.Module]]) -> None:
        super().__init__()
        for name, layer in named:
            self.add_module(name, layer)

    def forward(self, *inputs: Any) -> Any:
        out: Any = inputs
        for layer in self.children():
            out = layer(*out) if isinstance(out, tuple) else layer(out)
        return out


def run_layers(layers: Sequence[nn.Module], *inputs: Any) -> Any:
    """The unpipelined model: ``layers`` chained as a stage chains them (for references)."""
    return Stage([(str(i), layer) for i, layer in enumerate(layers)])(*inputs)


def layer_list(model: nn.Module | Sequence[nn.Module]) -> tuple[list[str], list[nn.Module]]:
    """(names, layers) of an nn.Sequential / nn.ModuleList (its own names) or a list (0..n-1)."""
    if isinstance(model, nn.Sequential | nn.ModuleList):
        named = list(model.named_children())
        return [n for n, _ in named], [m for _, m in named]
    if isinstance(model, nn.Module):
        raise PipelineError(f"the model must be an nn.Sequential or a list of layers; got "
                            f"{type(model).__name__} (put its layers in an nn.Sequential)")
    if not isinstance(model, Sequence) or not all(isinstance(x, nn.Module) for x in model):
        raise PipelineError("the model must be an nn.Sequential or a list of nn.Module layers")
    return [str(i) for i in range(len(model))], list(model)


def choose_balance(layers: Sequence[nn.Module], stages: int, balance: Sequence[int] | None,
                   method: str, example: torch.Tensor | None) -> tuple[int, ...]:
    """Layers per stage: ``balance`` as given, else the partition ``method``'s."""
    if len(layers) < stages:
        raise PipelineError(f"{len(layers)} layers cannot fill {stages} stages (each stage "
                            f"needs at least one layer)")
    try:
        if balance is not None:
            cut = check_balance(list(balance), len(layers))
            if len(cut) != stages:
                raise ValueError(f"the balance has {len(cut)} entries; the schedule has "
                                 f"{stages} stages")
            return tuple(cut)
        if method not in METHODS:
            raise ValueError(f"unknown partition {method!r}; valid: {', '.join(METHODS)}")
        return tuple(balance_of(layers, stages, method, example))
    except ValueError as err:
        raise PipelineError(str(err)) from None


def stage_modules(names: Sequence[str], layers: Sequence[nn.Module], balance: Sequence[int],
                  stages: Sequence[int]) -> dict[int, Stage]:
    """The modules of ``stages``, each a Stage of its layers under their own names."""
    bounds = blocks_to_bounds(list(balance))
    return {s: Stage([(names[i], layers[i]) for i in range(*bounds[s])]) for s in stages}


def materialize(module: nn.Module, device: torch.device,
                init_fn: Callable[[nn.Module], None] | None) -> nn.Module:
    """``module`` on ``device``; layers on the meta device get storage and initial values
    (``init_fn(layer)``, else every submodule's own ``reset_parameters``; a tensor that no
    ``reset_parameters`` would set is refused, never left as uninitialised memory)."""
    for name, layer in module.named_children():
        if any(t.is_meta for t in (*layer.parameters(), *layer.buffers())):
            if init_fn is None:
                _check_resettable(name, layer)
            layer.to_empty(device=device)
            if init_fn is not None:
                init_fn(layer)
            else:
                _reset(layer)
    return module.to(device)


def _check_resettable(name: str, layer: nn.Module) -> None:
    for path, sub in layer.named_modules():
        if callable(getattr(sub, "reset_parameters", None)):
            continue
        own = [n for n, _ in (*sub.named_parameters(recurse=False),
                              *sub.named_buffers(recurse=False))]
        if own:
            where = f"{name}.{path}.{own[0]}" if path else f"{name}.{own[0]}"
            raise PipelineError(f"{where} was built on the meta device and its module "
                                f"({type(sub).__name__}) has no reset_parameters() to "
                                f"initialise it; pass init_fn=... to Pipeline")


def _reset(layer: nn.Module) -> None:
    for sub in layer.modules():
        reset = getattr(sub, "reset_parameters", None)
        if callable(reset):
            with torch.no_grad():
                reset()


__all__ = ["Stage", "choose_balance", "layer_list", "materialize", "run_layers", "stage_modules"]
