import os

import torch
from torch import nn

import pipesim


def train(rank: int, world_size: int) -> float | None:
    torch.manual_seed(0)  # every rank builds the same model; each keeps only its own stages
    model = nn.Sequential(*[nn.Sequential(nn.Linear(32, 32), nn.GELU(), nn.LayerNorm(32))
                            for _ in range(4)], nn.Linear(32, 1))
    pipe = pipesim.Pipeline(model, "zb-h1", microbatches=8, loss_fn=nn.functional.mse_loss)
    opt = torch.optim.AdamW(pipe.parameters(), lr=3e-3)
    data, w = torch.Generator().manual_seed(1), torch.randn(32, 1) / 32**0.5
    for step in range(30):
        x = torch.randn(64, 32, generator=data)
        loss = pipe.step(x, torch.tanh(x @ w))  # the batch's mean loss on the last stage's rank
        opt.step()
        opt.zero_grad()
        if loss is not None and step % 10 == 9:
            print(f"step {step + 1}: loss {loss:.4f}")
    timeline = pipe.timeline()  # every rank calls it; rank 0 gets the last step, measured
    if timeline is not None:
        pipesim.write_html(timeline, "own_model.html")
    return loss


if __name__ == "__main__":
    if "RANK" in os.environ:  # torchrun started this process as one rank
        train(*pipesim.init())
    else:  # fork the ranks here
        print(pipesim.launch(train, world_size=2))
