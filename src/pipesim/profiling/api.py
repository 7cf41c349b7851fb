"""``pipesim.profile``: per-layer costs of a user's own layers, for ``pipesim.plan``.

    model = nn.Sequential(nn.Linear(64, 64), nn.GELU(), nn.LayerNorm(64), ...)
    costs = pipesim.profile(model, x[:8], F.mse_loss, target=y[:8], optimizer=torch.optim.AdamW)
    best = pipesim.plan(costs, ranks=2, batch=64)

The profiler of ``pipesim profile`` (``pipesim.profiling.profiler.profile_layers``: F, I, W, B,
the optimizer's update, output, stash and parameter bytes per layer, one torch thread) run on the
caller's layers in fresh forked processes set up as ranks are, so what this process allocated
before does not count; then, unless ``comm=False``, the 2-rank message ping-pong. Torch is
imported on the first call, not on import.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pipesim.layercosts import LayerCosts

if TYPE_CHECKING:
    import torch
    from torch import nn

    from pipesim.profiling.profiler import Example, MakeOptimizer
    from pipesim.runtime.stage import LossFn


def profile(layers: nn.Sequential | nn.ModuleList | Sequence[nn.Module], example: Example,
            loss_fn: LossFn | None = None, *, target: torch.Tensor | None = None,
            optimizer: MakeOptimizer | None = None, repeats: int = 5, warmup: int = 2,
            processes: int = 1, statistic: str = "median", comm: bool = True,
            model_name: str = "") -> LayerCosts:
    """Per-layer costs of ``layers`` at the microbatch ``example`` (a tensor, or a tuple of
    tensors passed as positional arguments; dim 0 = samples).

    ``loss_fn(output, target)`` is timed with the last layer when ``target`` (one microbatch of
    targets) is given; otherwise the last backward starts from a fixed random gradient.
    ``optimizer(params)`` (e.g. ``torch.optim.AdamW``) builds the optimizer whose update of each
    layer is timed (none: 0). ``processes``: profile in as many processes at once as the run
    will have ranks on this machine, so the cores are as busy (times are their mean).
    ``statistic``: "median" of ``repeats`` after ``warmup``, "mean", or "min". ``model_name``
    labels the plan. The caller's layers are not changed. ValueError/TypeError say what was wrong.
    """
    from torch import nn

    from pipesim.processes.launch import RankFailedError, launch
    from pipesim.profiling.comm import with_comm
    from pipesim.profiling.profiler import STATISTICS
    listed = isinstance(layers, nn.Sequential | nn.ModuleList | list | tuple)
    modules = list(layers) if listed else []
    if not modules or not all(isinstance(m, nn.Module) for m in modules):
        raise TypeError(f"layers: give an nn.Sequential, nn.ModuleList or a list of nn.Module "
                        f"layers, got {type(layers).__name__}")
    if (loss_fn is None) != (target is None):
        raise ValueError("give loss_fn and target= together (one microbatch of targets), or "
                         "neither (the last layer's backward then starts from a random gradient)")
    if statistic not in STATISTICS:
        raise ValueError(f"statistic {statistic!r}: use one of {', '.join(STATISTICS)}")
    for label, value, least in (("repeats", repeats, 1), ("warmup", warmup, 0),
                                ("processes", processes, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{label} must be an integer >= {least}, got {value!r}")
    job = _UserProfile(modules, example, loss_fn, target, optimizer, repeats, warmup,
                       statistic, model_name)
    try:
        costs: LayerCosts = launch(job, processes)
    except RankFailedError as err:  # the layers' own error, in one line, as raised here
        kind = {"ValueError": ValueError, "TypeError": TypeError}.get(err.kind, RuntimeError)
        raise kind(err.error if kind is not RuntimeError else
                   f"profiling the layers failed: {err.kind or 'error'}: {err.error}") from None
    return with_comm(costs, statistic) if comm else costs


@dataclass(frozen=True)
class _UserProfile:
    """Forked worker: every rank profiles every layer; rank 0 returns the mean."""

    layers: list[nn.Module]
    example: Example
    loss_fn: LossFn | None
    target: torch.Tensor | None
    optimizer: MakeOptimizer | None
    repeats: int
    warmup: int
    statistic: str
    model_name: str

    def __call__(self, rank: int, world: int, monitor: Any = None) -> LayerCosts | None:
        from pipesim.profiling.profiler import mean_over_ranks, profile_layers
        from pipesim.runtime.reference import reference_call
        notes = (f"pipesim.profile: {len(self.layers)} layers, {self.statistic} of "
                 f"{self.repeats} after {self.warmup} warm-up, 1 thread"
                 + (", optimizer update timed" if self.optimizer else ""))
        costs = profile_layers(self.layers, self.example, self.target, self.loss_fn,
                               self.repeats, self.warmup, model=self.model_name, notes=notes,
                               statistic=self.statistic, optimizer=self.optimizer,
                               probe=reference_call)
        return mean_over_ranks(costs, rank, world)


__all__ = ["profile"]
