"""What a run is, as plain data: ``RunConfig`` (torch-free, so no signature needs ``Any``).

The CLI fills a RunConfig from flags; ``pipesim.run(schedule, **fields)`` takes the same fields.
The torch side (runtime/, models/) reads it; nothing here imports torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pipesim.balance import partition_uniform
from pipesim.ir import Op, Schedule
from pipesim.ranks import RankGrid

DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs (defaults: the tutorial's demo)."""

    schedule: Schedule
    batch_size: int = 32  # samples per microbatch
    hidden_size: int = 64
    layers: int | None = None  # layers of the model; default one per stage
    balance: tuple[int, ...] | None = None  # layers per stage; default uniform
    steps: int = 1
    lr: float = 0.01
    optimizer: str = "sgd"  # sgd | adam
    loss: str = "mse"  # mse | cross-entropy
    model: str = "mlp"  # a key of pipesim.models.MODELS
    seq_len: int | None = None  # --model gpt: tokens per sequence (None: 64)
    heads: int | None = None  # --model gpt: attention heads (None: hidden / 16)
    seed: int = 0
    dtype: str = "float32"  # one of DTYPES
    checkpoint_activations: bool = False
    backend: str = "gloo"
    synthetic: dict[Op, float] = field(default_factory=dict)  # seconds slept per op
    verify: bool = False
    keep_outputs: bool = False  # inference: return the last stage's outputs (tests)
    collect_state: bool = False  # return every stage's final weights and gradients (tests)
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0  # save every N steps (and after the last) when checkpoint_dir
    resume_dir: str | None = None
    dp: int = 1  # pipeline replicas (data parallel); world size = dp x schedule.ranks
    rank_order: str = "pipeline-first"  # see pipesim.ranks

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}; valid: {', '.join(DTYPES)}")

    @property
    def grid(self) -> RankGrid:
        return RankGrid(self.schedule.ranks, self.dp, self.rank_order)

    @property
    def global_microbatches(self) -> int:
        """Microbatches per step over all replicas; replica d takes its m-long slice."""
        return self.dp * self.schedule.microbatches

    @property
    def num_layers(self) -> int:
        return self.layers if self.layers is not None else self.schedule.stages

    def stage_balance(self) -> list[int]:
        if self.balance is not None:
            return list(self.balance)
        return partition_uniform(self.num_layers, self.schedule.stages)

    def fingerprint(self) -> dict[str, Any]:
        """What a checkpoint must agree with to be resumed by this run."""
        return {"model": self.model, "hidden_size": self.hidden_size, "layers": self.num_layers,
                "balance": self.stage_balance(), "ranks": self.schedule.ranks,
                "stages": self.schedule.stages,
                "stage_to_rank": list(self.schedule.stage_to_rank),
                "optimizer": self.optimizer, "dtype": self.dtype, "loss": self.loss,
                "seed": self.seed, "dp": self.dp}


__all__ = ["DTYPES", "RunConfig"]
