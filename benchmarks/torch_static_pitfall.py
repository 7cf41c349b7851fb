"""torch.distributed.pipelining trains with wrong gradients when given static examples made under
no_grad: a reproduction that uses torch only (no pipesim code).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/torch_static_pitfall.py [--hidden 16]

For each torch schedule (2 ranks, gloo, an MLP of 4 x Linear(hidden)+ReLU cut into 2 or 4
stages) and each way of building ``PipelineStage``, one training step from the same weights;
every parameter's gradient on every rank against the same model stepped in one process:

    static     input_args/output_args/output_grads/input_grads given, the examples made the
               obvious way (a tensor, and the stage run on it under torch.no_grad())
    static-rg  the same examples with requires_grad=True (torch copies ``requires_grad`` from
               the example into the receive buffer's metadata; False means "no input gradient")
    inferred   no examples: torch infers shapes on the first step (needs numpy)

Printed per stage: max |grad - reference| / max |reference| over the stage's parameters
("none" when a parameter's .grad is None).
"""

from __future__ import annotations

import argparse
import os
import pickle
import socket
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.distributed import pipelining

# torch class, stages per rank, placement style ("loop": s -> s % ranks, "v": 0 1 | 1 0)
SCHEDULES = {
    "Schedule1F1B": (1, "loop"), "ScheduleGPipe": (1, "loop"),
    "ScheduleInterleaved1F1B": (2, "loop"), "ScheduleInterleavedZeroBubble": (1, "loop"),
    "ScheduleZBVZeroBubble": (2, "v"), "ScheduleDualPipeV": (2, "v"),
}
FORMS = ("static", "static-rg", "inferred")
RANKS, MICROBATCHES, BATCH, LAYERS = 2, 4, 8, 4


def model(hidden: int) -> nn.Sequential:
    torch.manual_seed(0)
    layers = [m for _ in range(LAYERS) for m in (nn.Linear(hidden, hidden), nn.ReLU())]
    return nn.Sequential(*layers)


def data(hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return (torch.randn(MICROBATCHES * BATCH, hidden, generator=gen),
            torch.randn(MICROBATCHES * BATCH, hidden, generator=gen))


def stage_of_rank(cls: str) -> dict[int, list[int]]:
    per, style = SCHEDULES[cls]
    stages = RANKS * per
    place = [s % RANKS if style == "loop" or s < RANKS else stages - 1 - s for s in range(stages)]
    return {r: [s for s in range(stages) if place[s] == r] for r in range(RANKS)}


def cut(full: nn.Sequential, stages: int) -> list[nn.Sequential]:
    per = len(full) // stages
    return [nn.Sequential(*full[i * per:(i + 1) * per]) for i in range(stages)]


def build_stage(module: nn.Module, s: int, stages: int, form: str, hidden: int,
                group: Any) -> pipelining.PipelineStage:
    if form == "inferred":
        return pipelining.PipelineStage(module, s, stages, torch.device("cpu"), group=group)
    example = torch.zeros(BATCH, hidden)
    with torch.no_grad():
        out = module(example)
    if form == "static-rg":
        example = example.requires_grad_(s > 0)  # stage 0's input is data: no gradient
        out = out.requires_grad_(True)
    return pipelining.PipelineStage(
        module, s, stages, torch.device("cpu"), input_args=(example,), output_args=(out,),
        output_grads=(out.detach(),), input_grads=(example.detach(),) if s > 0 else (None,),
        group=group)


def rank_main(rank: int, port: int, hidden: int, cls: str, form: str, queue: Any) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=RANKS)
    mine = stage_of_rank(cls)[rank]
    stages = RANKS * SCHEDULES[cls][0]
    pieces = cut(model(hidden), stages)
    built = [build_stage(pieces[s], s, stages, form, hidden, None) for s in mine]
    kind = getattr(pipelining, cls)
    loss_fn = nn.functional.mse_loss
    single = cls in ("Schedule1F1B", "ScheduleGPipe")  # these take one stage, the rest a list
    sched = kind(built[0] if single else built, MICROBATCHES, loss_fn=loss_fn)
    x, y = data(hidden)
    args = (x,) if 0 in mine else ()
    sched.step(*args, target=y if stages - 1 in mine else None)
    grads = {s: [None if p.grad is None else p.grad.clone() for p in pieces[s].parameters()]
             for s in mine}
    queue.put(pickle.dumps(grads))  # by value: the rank exits before the parent reads
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def run(cls: str, form: str, hidden: int) -> dict[int, list[torch.Tensor | None]]:
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=rank_main, args=(r, port, hidden, cls, form, queue))
             for r in range(RANKS)]
    for p in procs:
        p.start()
    got: dict[int, list[torch.Tensor | None]] = {}
    for _ in procs:
        got.update(pickle.loads(queue.get(timeout=120)))
    for p in procs:
        p.join(timeout=60)
        if p.exitcode != 0:
            raise RuntimeError(f"{cls} {form}: a rank exited {p.exitcode}")
    return got


def reference(hidden: int, stages: int) -> list[list[torch.Tensor]]:
    full = model(hidden)
    x, y = data(hidden)
    loss = sum(nn.functional.mse_loss(full(a), b) for a, b in
               zip(x.chunk(MICROBATCHES), y.chunk(MICROBATCHES), strict=True)) / MICROBATCHES
    loss.backward()
    return [[p.grad.clone() for p in piece.parameters()] for piece in cut(full, stages)]


def error(got: list[torch.Tensor | None], want: list[torch.Tensor]) -> str:
    if any(g is None for g in got):
        return "none"
    worst = max(float((g - w).abs().max() / w.abs().max().clamp_min(1e-30))
                for g, w in zip(got, want, strict=True) if g is not None)
    return f"{worst:.1e}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", type=int, default=16)
    p.add_argument("--schedule", action="append", choices=list(SCHEDULES))
    args = p.parse_args()
    print(f"torch {torch.__version__}, {RANKS} ranks, gloo, {LAYERS} x Linear({args.hidden})"
          f"+ReLU, {MICROBATCHES} microbatches of {BATCH}, MSE; per stage: max |g - ref| / max "
          f"|ref| (ref: one process)")
    print(f"{'schedule':30}  {'form':9}  per stage")
    for cls in args.schedule or list(SCHEDULES):
        stages = RANKS * SCHEDULES[cls][0]
        want = reference(args.hidden, stages)
        for form in FORMS:
            got = run(cls, form, args.hidden)
            cells = "  ".join(f"{s}: {error(got[s], want[s]):>7}" for s in range(stages))
            print(f"{cls:30}  {form:9}  {cells}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
