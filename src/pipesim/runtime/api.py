"""What a user's script calls to start ranks: ``launch`` (fork here) and ``init`` (torchrun).

    def train(rank, world_size):
        pipe = pipesim.Pipeline(model, "1f1b", microbatches=4, loss_fn=loss_fn)
        ...
    results = pipesim.launch(train, world_size=2)   # each rank's return value, in rank order

Under torchrun, call ``pipesim.init()`` first thing in the script instead.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from pipesim.checks import is_positive_int
from pipesim.processes.launch import (
    LaunchOptions,
    RankFailedError,
    init_torchrun,
    launch_all,
    under_torchrun,
)
from pipesim.runtime.agree import PipelineError


class _Call:
    """Picklable ``fn(rank, world_size, *args)`` (spawn, for nccl, pickles the worker)."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args

    def prepare(self) -> None:
        import torch._dynamo  # noqa: F401  any optimizer imports it: once, before forking

    def __call__(self, rank: int, world: int) -> Any:
        return self.fn(rank, world, *self.args)


def _backend(backend: str | None, world: int) -> str:
    if backend is None:
        usable = torch.cuda.is_available() and torch.cuda.device_count() >= world
        return "nccl" if usable else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend {backend!r}; valid: gloo, nccl")
    return backend


def launch(fn: Callable[..., Any], world_size: int, *args: Any, backend: str | None = None,
           threads: int = 1, stall_timeout: float = 60.0, timeout: float = 600.0) -> list[Any]:
    """Run ``fn(rank, world_size, *args)`` on ``world_size`` forked processes of this machine.

    Loopback rendezvous on a free port, ``threads`` torch threads per rank, the stall watchdog,
    Ctrl-C and a failing rank end every rank (nothing is left running). Returns each rank's
    return value in rank order; raises PipelineError (a mistake every rank agreed on) or
    RankFailedError naming the first rank that failed and its error.
    """
    if not is_positive_int(world_size):
        raise ValueError(f"world_size must be an integer >= 1, got {world_size!r}")
    if under_torchrun():
        raise RuntimeError("pipesim.launch forks ranks on this machine; under torchrun call "
                           "pipesim.init() and run the training function directly")
    opts = LaunchOptions(backend=_backend(backend, world_size), threads=threads,
                         timeout=timeout, stall_timeout=stall_timeout)
    try:
        return launch_all(_Call(fn, args), world_size, opts)
    except RankFailedError as err:
        if err.kind == "PipelineError":
            raise PipelineError(err.error) from None
        raise


def init(backend: str | None = None, threads: int = 1, stall_timeout: float = 60.0,
         timeout: float = 600.0) -> tuple[int, int]:
    """Join a torchrun job (env:// rendezvous): returns (rank, world size). One torch thread
    per rank unless told; a rank that stalls ``stall_timeout`` seconds ends itself."""
    import os
    world = int(os.environ.get("WORLD_SIZE", "1"))
    opts = LaunchOptions(backend=_backend(backend, world), threads=threads, timeout=timeout,
                         stall_timeout=stall_timeout)
    return init_torchrun(opts)


__all__ = ["init", "launch"]
