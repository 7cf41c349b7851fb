"""Train a Hugging Face ``transformers`` GPT-2 through pipesim, on the text pipesim ships.

    pip install -e ".[torch,examples]"               # transformers, pinned beside torch
    python examples/hf_gpt2.py                       # 2 ranks, 1f1b, 40 steps: seconds
    python examples/hf_gpt2.py --schedule zb-h1 --steps 200 --layers 6 --hidden 128
    python examples/hf_gpt2.py --ranks 4 --schedule interleaved-1f1b --layers 8
    torchrun --nproc-per-node 2 examples/hf_gpt2.py --schedule gpipe

Nothing is downloaded: the model is ``GPT2LMHeadModel(GPT2Config(...))`` with random weights, the
vocabulary is the characters of ``pipesim/data/village.txt`` (as ``--model gpt`` reads it). The
HF model is cut into layers that a balance can place on stages, each a thin adapter around the
HF module itself (the parameters are the HF model's own tensors)::

    layer 0        Embedding  wte(ids) + wpe(positions), dropout       ids [b, T] -> x [b, T, h]
    layers 1..L    Block      transformer.h[i], called with a causal mask  [b, T, h] -> [b, T, h]
    layer L+1      Head       ln_f, then lm_head                         -> logits [b, T, V]

Legend: b sequences per microbatch, T tokens (``--seq-len``), h ``--hidden``, L ``--layers``
(GPT-2 blocks), V the text's characters.

GPT-2 ties lm_head's weight to wte's. A tie cannot span ranks (the two tensors live in two
processes), so the config sets ``tie_word_embeddings=False``: lm_head is its own matrix.
HF GPT-2 computes its attention and MLP with ``Conv1D`` rather than ``nn.Linear``, so under the
zero-bubble schedules only lm_head's weight gradient is deferred to W; the rest is done in I.
tests/runtime/test_hf_gpt2.py checks that every gradient equals the unpipelined HF model's.
"""

from __future__ import annotations

import argparse
import os
from collections import OrderedDict

import torch
from torch import nn
from torch.nn import functional
from transformers import GPT2Config, GPT2LMHeadModel

import pipesim
from pipesim.models.gpt import corpus, vocabulary


class Embedding(nn.Module):
    """Token plus position embedding, as GPT2Model.forward does it. ids [b, T] -> x [b, T, h]."""

    def __init__(self, model: GPT2LMHeadModel) -> None:
        super().__init__()
        self.wte: nn.Module = model.transformer.wte
        self.wpe: nn.Module = model.transformer.wpe
        self.drop: nn.Module = model.transformer.drop

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)  # [T]
        return self.drop(self.wte(ids) + self.wpe(positions))


class Block(nn.Module):
    """One GPT2Block. GPT2Model builds the causal mask once and hands it to every block; a
    block alone gets none (and eager attention would then look ahead), so this adapter builds
    the additive mask itself: 0 on and below the diagonal, the dtype's minimum above it."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = x.shape[1]
        future = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)  # [T, T]
        mask = torch.zeros(t, t, dtype=x.dtype, device=x.device)
        mask = mask.masked_fill(future, torch.finfo(x.dtype).min)[None, None]  # [1, 1, T, T]
        out = self.block(x, attention_mask=mask)
        hidden: torch.Tensor = out[0] if isinstance(out, tuple) else out  # 4.x: a tuple
        return hidden


class Head(nn.Module):
    """Final LayerNorm and the LM head. x [b, T, h] -> logits [b, T, V]."""

    def __init__(self, model: GPT2LMHeadModel) -> None:
        super().__init__()
        self.ln_f: nn.Module = model.transformer.ln_f
        self.lm_head: nn.Module = model.lm_head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.ln_f(x))


def gpt2(layers: int, hidden: int, heads: int, seq_len: int) -> GPT2LMHeadModel:
    """A random-init HF GPT-2 over the shipped text's characters, dropout off, lm_head untied."""
    config = GPT2Config(vocab_size=len(vocabulary()), n_positions=seq_len, n_embd=hidden,
                        n_layer=layers, n_head=heads, tie_word_embeddings=False,
                        embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0,
                        bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(config)


def cut(model: GPT2LMHeadModel) -> nn.Sequential:
    """The HF model as pipesim layers: embed, h0 .. h{L-1}, head (sharing the HF tensors)."""
    blocks = [(f"h{i}", Block(b)) for i, b in enumerate(model.transformer.h)]
    return nn.Sequential(OrderedDict([("embed", Embedding(model)), *blocks,
                                      ("head", Head(model))]))


def hf_names(layers: nn.Sequential, model: GPT2LMHeadModel) -> dict[str, str]:
    """pipesim's parameter names ("h0.block.ln_1.weight") -> the HF model's
    ("transformer.h.0.ln_1.weight"), matched by tensor identity."""
    theirs = {id(p): n for n, p in model.named_parameters()}
    return {n: theirs[id(p)] for n, p in layers.named_parameters()}


def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean next-character cross-entropy. logits [b, T, V], targets [b, T]."""
    return functional.cross_entropy(logits.flatten(0, 1), targets.flatten())


def batch(step: int, size: int, seq_len: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` random windows of the text, the same on every rank: ids [size, T] and the next
    ids [size, T]."""
    data = corpus()
    gen = torch.Generator().manual_seed(seed * 1_000_003 + step)
    index = torch.randint(0, len(data) - seq_len - 1, (size, 1), generator=gen) \
        + torch.arange(seq_len)  # [size, T]
    return data[index], data[index + 1]


def train(rank: int, world: int, args: argparse.Namespace) -> list[float]:
    """Every rank builds the same model; the Pipeline keeps this rank's stages. Returns the
    per-step losses on the rank holding the last stage (it prints them), else []."""
    torch.manual_seed(args.seed)
    model = gpt2(args.layers, args.hidden, args.heads, args.seq_len)
    pipe = pipesim.Pipeline(cut(model), args.schedule, microbatches=args.microbatches,
                            loss_fn=loss_fn, virtual_stages=args.virtual_stages)
    opt = torch.optim.AdamW(pipe.parameters(), lr=args.lr)
    if rank == 0:
        size = sum(p.numel() for p in model.parameters())
        print(f"HF GPT-2: {args.layers} blocks, hidden {args.hidden}, {size:,} parameters; "
              f"{pipe.schedule.name} on {world} ranks, balance {list(pipe.balance)}, "
              f"{args.microbatches} microbatches of {args.batch_size} x {args.seq_len} tokens",
              flush=True)
    losses = []
    for step in range(args.steps):
        x, y = batch(step, args.microbatches * args.batch_size, args.seq_len, args.seed)
        loss = pipe.step(x, y)  # the batch's mean loss on the last stage's rank, else None
        opt.step()
        opt.zero_grad()
        if loss is not None:
            losses.append(loss)
            print(f"step {step + 1:4d}  loss {loss:.4f}", flush=True)
    return losses


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Train a Hugging Face GPT-2 with pipesim.")
    p.add_argument("--schedule", default="1f1b", help=f"one of {', '.join(pipesim.SCHEDULES)}")
    p.add_argument("--ranks", type=int, default=2, help="processes (ignored under torchrun)")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--microbatches", "-m", type=int, default=4)
    p.add_argument("--virtual-stages", "-v", type=int, default=None,
                   help="stages per rank for interleaved and V schedules (their default: 2)")
    p.add_argument("--batch-size", "-b", type=int, default=8, help="sequences per microbatch")
    p.add_argument("--seq-len", type=int, default=32)
    p.add_argument("--layers", type=int, default=4, help="GPT-2 blocks")
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main() -> None:
    args = parse()
    if "RANK" in os.environ and "WORLD_SIZE" in os.environ:  # started by torchrun
        rank, world = pipesim.init()
        train(rank, world, args)
    else:
        pipesim.launch(train, args.ranks, args)


if __name__ == "__main__":
    main()
