"""torch.distributed.pipelining on the same stage modules, data and processes as pipesim.

``TORCH_EQUIVALENT`` pairs each pipesim schedule with torch's class for it; ``TorchPipeline``
builds torch's stages and schedule as a user would, on a process group of its own so its
messages never meet pipesim's: ``PipelineStage`` without examples, shapes inferred on the first
step (the gradient check's step, untimed).

``examples="static-no-grad"`` builds them instead with the static examples this harness used
before 2026-12-01 (made under ``torch.no_grad()``): torch then computes no input gradient on any
stage but the first, so earlier stages train on zeros and zero-bubble stages skip their weight
gradients (``benchmarks/torch_static_pitfall.py``). It exists so the gradient check's test can
show that the check rejects such a side; never time it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import torch
import torch.distributed as dist
from torch import nn


class TorchEquivalent(NamedTuple):
    """torch's schedule class name and stages per rank for one pipesim schedule name."""

    cls: str
    stages_per_rank: int


# pipesim schedule -> torch.distributed.pipelining schedule (placement: looped, or V for 2/rank
# V schedules; pipesim's placements are the same, which ``check_placement`` asserts at run time)
TORCH_EQUIVALENT: dict[str, TorchEquivalent] = {
    "gpipe": TorchEquivalent("ScheduleGPipe", 1),
    "1f1b": TorchEquivalent("Schedule1F1B", 1),
    "interleaved-1f1b": TorchEquivalent("ScheduleInterleaved1F1B", 2),
    "zb-h1": TorchEquivalent("ScheduleInterleavedZeroBubble", 1),
    "zbv": TorchEquivalent("ScheduleZBVZeroBubble", 2),
    "dualpipev": TorchEquivalent("ScheduleDualPipeV", 2),
}

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def torch_placement(name: str, ranks: int) -> tuple[int, ...]:
    """torch's stage -> rank map for the schedule paired with pipesim's ``name``."""
    from torch.distributed.pipelining._utils import generate_stage_to_rank_mapping

    eq = TORCH_EQUIVALENT[name]
    stages = ranks * eq.stages_per_rank
    style = "v" if eq.cls in ("ScheduleZBVZeroBubble", "ScheduleDualPipeV") else "loop"
    mapping = generate_stage_to_rank_mapping(ranks, stages, style=style)
    return tuple(mapping[s] for s in range(stages))


class TorchPipeline:
    """torch's stages and schedule for this rank; ``step`` runs one training step of it."""

    def __init__(self, name: str, rank: int, ranks: int, modules: Mapping[int, nn.Module],
                 num_stages: int, microbatches: int, example: torch.Tensor, loss_fn: LossFn,
                 group: dist.ProcessGroup | None, examples: str = "inferred") -> None:
        from torch.distributed import pipelining

        self.name = name
        eq = TORCH_EQUIVALENT[name]
        self.stage_ids = sorted(modules)
        if examples not in ("inferred", "static-no-grad"):
            raise ValueError(f"examples must be 'inferred' or 'static-no-grad', got {examples!r}")
        stages = []
        for s in self.stage_ids:
            if examples == "inferred":
                stages.append(pipelining.PipelineStage(modules[s], s, num_stages,
                                                       torch.device("cpu"), group=group))
                continue
            with torch.no_grad():  # the pitfall: examples that do not require grad
                out = modules[s](example)
            stages.append(pipelining.PipelineStage(
                modules[s], s, num_stages, torch.device("cpu"), input_args=(example,),
                output_args=(out,), output_grads=(out,),
                input_grads=(example,) if s > 0 else (None,), group=group))
        self.compute = 0.0  # seconds in the stages' F/B/I/W calls since the last reset
        for stage in stages:
            self._time_compute(stage)
        self.first = 0 in modules
        self.last = num_stages - 1 in modules
        cls: Any = getattr(pipelining, eq.cls)
        if eq.cls in ("ScheduleGPipe", "Schedule1F1B"):
            self.schedule = cls(stages[0], microbatches, loss_fn=loss_fn)
        else:
            self.schedule = cls(stages, microbatches, loss_fn=loss_fn)

    def _time_compute(self, stage: Any) -> None:
        """Add the wall time of this stage's compute calls into ``self.compute``."""
        for name in ("forward_one_chunk", "backward_one_chunk", "backward_weight_one_chunk"):
            fn = getattr(stage, name)

            def timed(*args: Any, _fn: Any = fn, **kwargs: Any) -> Any:
                t0 = time.perf_counter()
                try:
                    return _fn(*args, **kwargs)
                finally:
                    self.compute += time.perf_counter() - t0

            setattr(stage, name, timed)

    def step(self, inputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor]
             ) -> list[float]:
        """One step on whole-batch tensors (torch splits them); the last stage's losses."""
        args = (torch.cat(list(inputs)),) if self.first else ()
        target = torch.cat(list(targets)) if self.last else None
        losses: list[torch.Tensor] = []
        self.schedule.step(*args, target=target, losses=losses if self.last else None,
                           return_outputs=False)
        return [float(x.detach()) for x in losses]
