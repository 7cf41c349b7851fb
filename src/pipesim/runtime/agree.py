"""What every rank must agree on before it sends a tensor: errors, model structure, one clock.

A mistake seen by one rank (a batch that does not divide, a stage returning a string, a model
that differs) must end *every* rank with the same message, not leave the others waiting for a
message that never comes. So checks run locally, then one small all-gather makes every rank
raise the first error any rank found (``raise_if_any``).
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Sequence

import torch
import torch.distributed as dist
from torch import nn

_MSG_BYTES = 480  # an error's text travels as this many UTF-8 bytes


class PipelineError(ValueError):
    """A mistake in how a Pipeline was built or fed; raised on every rank with one message."""


def _encode(message: str | None, device: torch.device) -> torch.Tensor:
    buf = torch.zeros(_MSG_BYTES + 1, dtype=torch.uint8)
    if message is not None:
        data = message.encode()[:_MSG_BYTES]
        buf[0] = 1
        buf[1:1 + len(data)] = torch.tensor(list(data), dtype=torch.uint8)
    return buf.to(device)


def raise_if_any(error: str | None, device: torch.device,
                 group: dist.ProcessGroup | None = None) -> None:
    """Collective: every rank raises PipelineError if any rank of ``group`` passed an error."""
    mine = _encode(error, device)
    size = dist.get_world_size(group)
    everyone = [torch.zeros_like(mine) for _ in range(size)]
    dist.all_gather(everyone, mine, group=group)
    for rank, buf in enumerate(everyone):
        data = buf.cpu()
        if int(data[0]):
            text = bytes(data[1:].tolist()).rstrip(b"\0").decode(errors="replace")
            global_rank = dist.get_global_rank(group, rank) if group is not None else rank
            raise PipelineError(f"rank {global_rank}: {text}")


def all_ints(values: Sequence[int], device: torch.device) -> list[list[int]]:
    """Collective: every rank's ``values`` (same length everywhere), in rank order."""
    mine = torch.tensor(list(values), dtype=torch.int64, device=device)
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    return [[int(v) for v in t.cpu().tolist()] for t in everyone]


def crc(parts: Iterable[object]) -> int:
    """A checksum of ``parts``' text, the same in every process (unlike ``hash``)."""
    return zlib.crc32("\x1f".join(map(str, parts)).encode())


def structure(names: Sequence[str], layers: Sequence[nn.Module]) -> list[str]:
    """What must be equal on every rank: each layer's name, class and tensors' shapes/dtypes."""
    out = []
    for name, layer in zip(names, layers, strict=True):
        tensors = [f"{n}:{tuple(t.shape)}:{t.dtype}" for n, t in layer.state_dict().items()]
        out.append(f"{name}={type(layer).__qualname__}[{','.join(tensors)}]")
    return out


def shared_origin(device: torch.device) -> float:
    """Time zero of every rank's clock: rank 0's, when all ranks share one machine's monotonic
    clock (perf_counter); else each rank's own, taken right after a barrier."""
    dist.barrier()
    mine = torch.tensor([time.perf_counter(), float(boot_id())], dtype=torch.float64,
                        device=device)
    everyone = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(everyone, mine)
    boots = {float(t[1]) for t in everyone}
    if len(boots) == 1 and -1.0 not in boots:
        return float(everyone[0][0])
    return float(mine[0])


def boot_id() -> int:
    """This machine's boot id as an integer: equal ids share one monotonic clock."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as fh:
            return int(fh.read().strip().replace("-", "")[:15], 16)
    except (OSError, ValueError):
        return -1


__all__ = ["PipelineError", "all_ints", "boot_id", "crc", "raise_if_any", "shared_origin",
           "structure"]
