"""Cut a model (an nn.Sequential or a list of layers) into pipeline stage modules.

    partition(model, ranks=2)                              equal layer counts
    partition(model, 2, method="params")                   even parameter counts
    partition(model, 2, method="time", example=x)          even measured F+B time (profiled)
    partition(model, 4, virtual_stages=2, balance=[...])   an explicit balance

The cut is the pure algorithm of ``pipesim.balance`` (``partition_balanced`` minimises the
largest stage's cost; ``partition_uniform`` splits by count) applied to per-layer costs.
``balance_for(cfg, method)`` does the same for a run's model (``pipesim run --partition``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from pipesim.balance import check_balance, partition_balanced, partition_uniform
from pipesim.layercosts import LayerCosts
from pipesim.models.spec import split_layers

METHODS = ("uniform", "params", "time")


def _layers(model: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    if isinstance(model, nn.Sequential):
        return list(model)
    if isinstance(model, nn.Module):
        raise TypeError(f"partition needs an nn.Sequential or a list of layers; got "
                        f"{type(model).__name__} (wrap its layers in nn.Sequential)")
    layers = list(model)
    if not all(isinstance(x, nn.Module) for x in layers):
        raise TypeError("partition needs a list of nn.Module layers")
    return layers


def param_counts(layers: Sequence[nn.Module]) -> list[float]:
    return [float(sum(p.numel() for p in layer.parameters())) for layer in layers]


def balance_of(layers: Sequence[nn.Module], stages: int, method: str = "uniform",
               example: torch.Tensor | None = None, target: torch.Tensor | None = None,
               loss_fn: Any = None, layer_costs: LayerCosts | None = None) -> list[int]:
    """Layers per stage for ``method``: "uniform" (count), "params" or "time" (F+B).

    "time" uses ``layer_costs`` if given, else profiles ``layers`` on ``example`` (one
    microbatch; ``target`` and ``loss_fn`` make the last layer's cost include the loss).
    """
    n = len(layers)
    if method == "uniform":
        return partition_uniform(n, stages)
    if method == "params":
        return partition_balanced(param_counts(layers), stages)
    if method == "time":
        if layer_costs is None:
            if example is None:
                raise ValueError('method="time" needs an example input (one microbatch) to '
                                 "profile the layers, or layer_costs")
            from pipesim.profiling.profiler import profile_layers
            layer_costs = profile_layers(layers, example, target, loss_fn, repeats=3, warmup=1)
        if len(layer_costs) != n:
            raise ValueError(f"the layer costs cover {len(layer_costs)} layers; the model "
                             f"has {n}")
        return partition_balanced(layer_costs.layer_times(), stages)
    raise ValueError(f"unknown partition method {method!r}; valid: {', '.join(METHODS)}")


def partition(model: nn.Module | Sequence[nn.Module], ranks: int, virtual_stages: int = 1,
              method: str = "uniform", balance: Sequence[int] | None = None,
              example: torch.Tensor | None = None,
              layer_costs: LayerCosts | None = None) -> list[nn.Sequential]:
    """Stage modules (``ranks x virtual_stages`` of them, in stage order) cut from ``model``.

    ``balance`` (layers per stage) overrides ``method``. The stages share the model's layer
    objects (no copies). ValueError when the model has fewer layers than stages.
    """
    layers = _layers(model)
    if ranks < 1 or virtual_stages < 1:
        raise ValueError(f"ranks and virtual_stages must be >= 1; got {ranks}, "
                         f"{virtual_stages}")
    stages = ranks * virtual_stages
    if balance is not None:
        cut = check_balance(list(balance), len(layers))
        if len(cut) != stages:
            raise ValueError(f"the balance has {len(cut)} stages; {ranks} ranks x "
                             f"{virtual_stages} virtual stages need {stages}")
    else:
        cut = balance_of(layers, stages, method, example, layer_costs=layer_costs)
    return split_layers(layers, cut)


def balance_for(cfg: Any, method: str, layer_costs: LayerCosts | None = None
                ) -> tuple[int, ...]:
    """The balance of a run (a RunConfig) under ``method`` ("uniform", "params", "time")."""
    from pipesim.models import build_layers, loss_function, make_batch
    stages = cfg.schedule.stages
    if method == "uniform":
        return tuple(partition_uniform(cfg.num_layers, stages))
    layers = build_layers(cfg)
    if method == "time" and layer_costs is None:
        inputs, targets = make_batch(cfg, 0)
        return tuple(balance_of(layers, stages, method, inputs[0], targets[0],
                                loss_function(cfg)))
    return tuple(balance_of(layers, stages, method, layer_costs=layer_costs))


__all__ = ["METHODS", "balance_for", "balance_of", "param_counts", "partition"]
