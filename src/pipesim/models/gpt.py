"""A small GPT (character level) as a layer list, trained on a text the package ships.

Layer list for ``--layers L`` (L >= 3): ``L - 2`` transformer blocks between an embedding and a
head, so a balance cuts it like any other model::

    layer 0        Embed   token + learned position embedding   ids [b, T] -> x [b, T, h]
    layers 1..L-2  Block   pre-LN causal self-attention + GELU MLP   [b, T, h] -> [b, T, h]
    layer L-1      Head    final LayerNorm + Linear to the vocabulary   -> logits [b, T, V]

Legend: b sequences per microbatch (``--batch-size``), T tokens per sequence (``seq_len``),
h hidden size (``--hidden-size``), V vocabulary (characters of the text), heads divide h.
Every matrix is an ``nn.Linear`` so the runtime's SplitLinear can defer its weight gradient.

Config: the run config's ``hidden_size``, ``layers``, ``batch_size``, ``seed``, ``dtype`` and,
when present, ``seq_len`` (default 64) and ``heads`` (default ``gpt_heads(h)``).
Data: random windows of ``data/village.txt`` (40 KB of generated English-like sentences),
chosen by a generator seeded from (seed, step): the same on every rank.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from importlib import resources

import torch
from torch import nn
from torch.nn import functional

from pipesim.config import RunConfig
from pipesim.models.spec import Batch, LossFn, ModelSpec, torch_dtype

DEFAULT_SEQ_LEN = 64  # tokens per sequence
DEFAULT_LAYERS = 6  # embedding + 4 blocks + head: the nanoGPT-sized default
TEXT = "village.txt"


def gpt_heads(hidden: int) -> int:
    """Default head count: head size 16 where it divides, else the largest divisor <= h/16."""
    for heads in range(max(1, hidden // 16), 0, -1):
        if hidden % heads == 0:
            return heads
    return 1


@dataclass(frozen=True)
class GPTShape:
    """The sizes a GPT is built from (read off a run config by ``gpt_shape``)."""

    vocab: int
    hidden: int
    blocks: int
    heads: int
    seq_len: int


def gpt_shape(cfg: RunConfig) -> GPTShape:
    """Sizes from a run config; ValueError names the flag that is wrong."""
    layers = cfg.num_layers
    if layers < 3:
        raise ValueError(f"--model gpt: --layers counts the embedding, the transformer blocks "
                         f"and the head, so it needs >= 3 (1 block); got {layers}")
    hidden = cfg.hidden_size
    heads = getattr(cfg, "heads", None) or gpt_heads(hidden)
    if hidden % heads:
        raise ValueError(f"--model gpt: --hidden-size {hidden} is not divisible by "
                         f"{heads} heads")
    seq_len = getattr(cfg, "seq_len", None) or DEFAULT_SEQ_LEN
    if seq_len + 1 >= len(corpus()):
        raise ValueError(f"--model gpt: sequence length {seq_len} is longer than the text")
    return GPTShape(len(vocabulary()), hidden, layers - 2, heads, seq_len)


# ----------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=1)
def text() -> str:
    """The shipped training text (package data ``pipesim/data/village.txt``)."""
    return resources.files("pipesim").joinpath("data", TEXT).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=1)
def vocabulary() -> str:
    """Every character of the text, sorted: token id i is ``vocabulary()[i]``."""
    return "".join(sorted(set(text())))


@functools.lru_cache(maxsize=1)
def corpus() -> torch.Tensor:
    """The text as int64 token ids [N]."""
    index = {c: i for i, c in enumerate(vocabulary())}
    return torch.tensor([index[c] for c in text()], dtype=torch.int64)


def decode(ids: torch.Tensor) -> str:
    return "".join(vocabulary()[int(i)] for i in ids.reshape(-1))


def gpt_batch(cfg: RunConfig, step: int) -> Batch:
    """m microbatches (every data-parallel replica's) of b windows of T tokens: inputs ids
    [b, T], targets the next ids [b, T]."""
    shape = gpt_shape(cfg)
    data = corpus()
    m, b, t = cfg.global_microbatches, cfg.batch_size, shape.seq_len  # m over all replicas
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
    starts = torch.randint(0, len(data) - t - 1, (m * b, 1), generator=gen)
    index = starts + torch.arange(t)  # [m*b, T]
    x, y = data[index], data[index + 1]
    return list(x.chunk(m)), list(y.chunk(m))


# ----------------------------------------------------------------------------- layers


class Embed(nn.Module):
    """Token plus learned position embedding. ids [b, T] -> x [b, T, h]."""

    def __init__(self, vocab: int, hidden: int, seq_len: int) -> None:
        super().__init__()
        self.token = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(seq_len, hidden)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[-1], device=ids.device)
        return self.token(ids) + self.position(positions)  # type: ignore[no-any-return]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention. x [b, T, h] -> [b, T, h]."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.proj = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, h = x.shape
        q, k, v = self.qkv(x).split(h, dim=-1)  # each [b, T, h]
        # [b, T, h] -> [b, heads, T, h / heads]
        q, k, v = (z.view(b, t, self.heads, h // self.heads).transpose(1, 2) for z in (q, k, v))
        y = functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, t, h))  # type: ignore[no-any-return]


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x)). [b, T, h]."""

    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = CausalSelfAttention(hidden, heads)
        self.ln2 = nn.LayerNorm(hidden)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(),
                                 nn.Linear(4 * hidden, hidden))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))  # type: ignore[no-any-return]


class Head(nn.Module):
    """Final LayerNorm and the projection to the vocabulary. [b, T, h] -> logits [b, T, V]."""

    def __init__(self, hidden: int, vocab: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(hidden)
        self.out = nn.Linear(hidden, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.ln(x))  # type: ignore[no-any-return]


def build_gpt(shape: GPTShape, seed: int, dtype: torch.dtype = torch.float32) -> list[nn.Module]:
    """The layer list, initialised from ``seed`` (GPT-2 style: N(0, 0.02), residual projections
    scaled by 1/sqrt(2 x blocks)) without touching the global random state."""
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        h = shape.hidden
        layers: list[nn.Module] = [Embed(shape.vocab, h, shape.seq_len)]
        layers += [Block(h, shape.heads) for _ in range(shape.blocks)]
        layers.append(Head(h, shape.vocab))
        for layer in layers:
            _init(layer, shape.blocks)
    finally:
        torch.random.set_rng_state(gen_state)
    return [layer.to(dtype) for layer in layers]


def _init(layer: nn.Module, blocks: int) -> None:
    residual_std = 0.02 / math.sqrt(2 * blocks)
    for name, module in layer.named_modules():
        if isinstance(module, nn.Linear | nn.Embedding):
            is_residual = name.endswith("proj") or name.endswith("mlp.2")
            nn.init.normal_(module.weight, 0.0, residual_std if is_residual else 0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)


def _gpt_layers(cfg: RunConfig) -> list[nn.Module]:
    return build_gpt(gpt_shape(cfg), cfg.seed, torch_dtype(cfg))


def gpt_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over every token: logits [b, T, V], targets [b, T]."""
    return functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


def _gpt_loss(cfg: RunConfig) -> LossFn:
    return gpt_loss


GPT = ModelSpec("gpt", _gpt_layers, gpt_batch, _gpt_loss,
                "a small character-level GPT on a shipped text; --layers = blocks + 2")

__all__ = ["DEFAULT_LAYERS", "DEFAULT_SEQ_LEN", "GPT", "GPTShape", "build_gpt", "gpt_batch",
           "gpt_heads", "gpt_loss", "gpt_shape"]
