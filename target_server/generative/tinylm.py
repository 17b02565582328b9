"""tinylm: a small decoder-only transformer over bytes, with seeded weights and a KV cache.

Prompts are UTF-8 bytes (vocabulary 256: no tokenizer to download, one token per byte). Output
tokens are bytes too, drawn from printable ASCII and newline only, so every token is one character and any
cut of the stream is valid text. There is no end-of-sequence token: a generation runs to its
`max_tokens` unless a stop string ends it.

The cache holds one row per sequence slot. Decoding sequences occupy rows 0..n-1 with no holes
(`move` fills a hole), so a decode step attends over a view of the cache, never a gathered copy;
the cost of a step is real compute that grows with the batch and with the sequences' lengths, as
a real LLM server's does.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

VOCAB = 256
SEED = 20240
OUTPUT_BYTES = (10, *range(32, 127))  # newline and printable ASCII
# added to the logits: the bytes the model may not produce can never be drawn
_UNPRODUCIBLE = torch.full((VOCAB,), float("-inf")).index_fill_(0, torch.tensor(OUTPUT_BYTES), 0.0)


@dataclass(frozen=True)
class Size:
    d_model: int = 384
    layers: int = 4
    heads: int = 6
    context: int = 2048

    @property
    def head_dim(self) -> int:
        return self.d_model // self.heads


class Block(nn.Module):
    def __init__(self, size: Size) -> None:
        super().__init__()
        d = size.d_model
        self.heads, self.head_dim = size.heads, size.head_dim
        self.ln1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.ln2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, 4 * d)
        self.fc2 = nn.Linear(4 * d, d)

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows, t, d) -> q, k, v as (rows, heads, t, head_dim)."""
        rows, t, _ = x.shape
        qkv = self.qkv(self.ln1(x)).view(rows, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1], qkv[2]

    def finish(self, x: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        rows, _, t, _ = attended.shape
        x = x + self.proj(attended.transpose(1, 2).reshape(rows, t, -1))
        return x + self.fc2(F.gelu(self.fc1(self.ln2(x)), approximate="tanh"))


def attend(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Masked attention as two matmuls: on CPU with one query per row (decode) this ran in half the
    time of scaled_dot_product_attention's flash kernel (torch 2.x, 32 rows over 400 positions)."""
    scores = (q @ keys.transpose(-1, -2)) * (q.shape[-1] ** -0.5)
    return torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1) @ values


class KVCache:
    """Keys and values of every layer for `slots` sequences of up to `context` positions.

    Allocated empty, not zeroed, so memory follows use; but a batched decode step reads every row
    up to the longest row's length, and a weight of 0 times an uninitialised NaN is NaN. So each
    row remembers how far its positions hold numbers (`clean`), and `readable` zeroes the rest up
    to what a step reads: each position is zeroed at most once per row.
    """

    def __init__(self, size: Size, slots: int) -> None:
        shape = (size.layers, slots, size.heads, size.context, size.head_dim)
        self.k = torch.empty(shape)
        self.v = torch.empty(shape)
        self.clean = [0] * slots

    def written(self, row: int, start: int, end: int) -> None:
        if start <= self.clean[row]:
            self.clean[row] = max(self.clean[row], end)

    def readable(self, rows: int, reach: int) -> None:
        for row in range(rows):
            if self.clean[row] < reach:
                self.k[:, row, :, self.clean[row]:reach] = 0
                self.v[:, row, :, self.clean[row]:reach] = 0
                self.clean[row] = reach

    def move(self, source: int, target: int, length: int) -> None:
        self.k[:, target, :, :length] = self.k[:, source, :, :length]
        self.v[:, target, :, :length] = self.v[:, source, :, :length]
        self.clean[target] = max(self.clean[target], length)


class TinyLM(nn.Module):
    def __init__(self, size: Size = Size()) -> None:
        super().__init__()
        self.size = size
        self.embed = nn.Embedding(VOCAB, size.d_model)
        self.position = nn.Embedding(size.context, size.d_model)
        self.blocks = nn.ModuleList(Block(size) for _ in range(size.layers))
        self.norm = nn.LayerNorm(size.d_model)
        self.head = nn.Linear(size.d_model, VOCAB, bias=False)

    def stack(self) -> list[Block]:
        """The blocks, typed (iterating a ModuleList yields plain Modules)."""
        return [block for block in self.blocks if isinstance(block, Block)]

    def seed_weights(self, seed: int = SEED) -> TinyLM:
        """Deterministic weights from a private generator (the global RNG stays untouched)."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if "ln" in name or name.startswith("norm"):
                    continue
                fan_in = p.shape[-1] if p.dim() > 1 else p.shape[0]
                p.uniform_(-1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in), generator=gen)
            self.embed.weight.mul_(math.sqrt(self.size.d_model))  # unit-scale inputs
        return self

    def prefill(self, cache: KVCache, row: int, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """Run prompt tokens at positions start.. of `row`, filling its cache; the logits of the last."""
        t = tokens.shape[0]
        end = start + t
        x = (self.embed(tokens) + self.position.weight[start:end]).unsqueeze(0)
        # query i (position start+i) sees keys 0..start+i
        visible = torch.arange(end).unsqueeze(0) <= torch.arange(start, end).unsqueeze(1)
        cache.written(row, start, end)
        for layer, block in enumerate(self.stack()):
            q, k, v = block.split(x)
            cache.k[layer, row, :, start:end] = k[0]
            cache.v[layer, row, :, start:end] = v[0]
            keys, values = cache.k[layer, row:row + 1, :, :end], cache.v[layer, row:row + 1, :, :end]
            x = block.finish(x, attend(q, keys, values, visible))
        return self.head(self.norm(x[0, -1])) + _UNPRODUCIBLE

    def decode(self, cache: KVCache, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """One step of rows 0..n-1: token i at position lengths[i]; logits (n, VOCAB)."""
        n = tokens.shape[0]
        reach = int(lengths.max()) + 1
        x = (self.embed(tokens) + self.position(lengths)).unsqueeze(1)
        rows = torch.arange(n)
        visible = (torch.arange(reach).unsqueeze(0) <= lengths.unsqueeze(1)).view(n, 1, 1, reach)
        for row, length in enumerate(lengths.tolist()):
            cache.written(row, length, length + 1)
        cache.readable(n, reach)
        for layer, block in enumerate(self.stack()):
            q, k, v = block.split(x)
            cache.k[layer, rows, :, lengths] = k[:, :, 0]
            cache.v[layer, rows, :, lengths] = v[:, :, 0]
            keys, values = cache.k[layer, :n, :, :reach], cache.v[layer, :n, :, :reach]
            x = block.finish(x, attend(q, keys, values, visible))
        return self.head(self.norm(x[:, 0])) + _UNPRODUCIBLE


class CachedModel:
    """tinylm with a cache of `slots` rows: the Model the strategies drive (engine.Model)."""

    def __init__(self, module: TinyLM, slots: int) -> None:
        self.module = module
        self.cache = KVCache(module.size, slots)

    def prefill(self, row: int, tokens: torch.Tensor, start: int) -> torch.Tensor:
        return self.module.prefill(self.cache, row, tokens, start)

    def decode(self, tokens: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.module.decode(self.cache, tokens, lengths)

    def move(self, source: int, target: int, length: int) -> None:
        self.cache.move(source, target, length)


def output_text(token: int) -> str:
    """The character an output token stands for (always one: output tokens are ASCII bytes)."""
    return chr(token)
