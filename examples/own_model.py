"""Your own model, data, loss and optimizer through pipesim's engine.

    python examples/own_model.py                               # forks 2 ranks here
    torchrun --nproc-per-node 2 examples/own_model.py          # or one process per rank
    python examples/own_model.py --schedule 1f1b --steps 40 --html run.html
"""

import argparse
import os

import torch
from torch import nn

import pipesim


def train(rank: int, world_size: int, schedule: str, steps: int, html: str | None) -> float | None:
    torch.manual_seed(0)  # every rank builds the same model
    model = nn.Sequential(*[nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.LayerNorm(32))
                            for _ in range(4)], nn.Linear(32, 1))
    pipe = pipesim.Pipeline(model, schedule, microbatches=8, loss_fn=nn.functional.mse_loss)
    opt = torch.optim.AdamW(pipe.parameters(), lr=3e-3)
    data, w = torch.Generator().manual_seed(1), torch.randn(32, 1) / 32**0.5
    loss = None
    for step in range(steps):
        x = torch.randn(64, 32, generator=data)
        loss = pipe.step(x, torch.tanh(x @ w))  # the mean loss on the last stage's rank, else None
        opt.step()
        opt.zero_grad()
        if loss is not None and (step % 10 == 0 or step == steps - 1):
            print(f"step {step + 1:3d}  loss {loss:.4f}", flush=True)
    timeline = pipe.timeline()  # every rank calls it; rank 0 gets the last step, measured
    if timeline is not None and html:
        pipesim.write_html(timeline, html)
    return loss


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedule", default="zb-h1")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--html", default=None, help="write the last step's timeline here")
    args = parser.parse_args()
    if "RANK" in os.environ:  # under torchrun: this process is one rank
        rank, world_size = pipesim.init()
        train(rank, world_size, args.schedule, args.steps, args.html)
    else:
        losses = pipesim.launch(train, 2, args.schedule, args.steps, args.html)
        print(f"final loss {losses[-1]:.4f} (each rank returned: {losses})")
