"""Transformer building blocks: sinusoidal encodings, pre-norm self-attention blocks.

Module and parameter names follow the official checkpoints (``layers.N.0.norm``,
``layers.N.0.fn.to_qkv`` ...). Attention runs through ``F.scaled_dot_product_attention``.
The cross-attention over epipolar samples is ``pixelsplat_ns.epipolar.attention``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


class PositionalEncoding(nn.Module):
    """sin / cos of 2 pi 2^k x for k < num_octaves, for values x in [0, 1] (no parameters)."""

    def __init__(self, num_octaves: int) -> None:
        super().__init__()
        self.num_octaves = num_octaves
        frequencies = 2 * torch.pi * 2 ** torch.arange(num_octaves, dtype=torch.float32)
        self.register_buffer("frequencies", frequencies.repeat_interleave(2), persistent=False)
        self.register_buffer("phases", torch.tensor([0.0, 0.5 * torch.pi]).repeat(num_octaves), persistent=False)

    def forward(self, values: Float[Tensor, "*batch dim"]) -> Float[Tensor, "*batch encoded"]:
        # Layout per input dimension: (octave, sin/cos), like the official encoding.
        angles = values[..., None] * self.frequencies + self.phases
        return torch.sin(angles).flatten(-2)

    def d_out(self, dim: int) -> int:
        return 2 * self.num_octaves * dim


class PreNorm(nn.Module):
    """fn(LayerNorm(x), ...): the norm applies to the first input only."""

    def __init__(self, dim: int, fn: nn.Module) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.fn = fn

    def forward(self, x: Tensor, *args, **kwargs) -> Tensor:
        return self.fn(self.norm(x), *args, **kwargs)


class FeedForward(nn.Module):
    def __init__(self, dim: int, hidden_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden_dim, dim), nn.Dropout(dropout)
        )

    def forward(self, x: Float[Tensor, "*batch dim"]) -> Float[Tensor, "*batch dim"]:
        return self.net(x)


def _output_projection(inner: int, dim: int, heads: int, d_head: int, dropout: float) -> nn.Module:
    if heads == 1 and d_head == dim:
        return nn.Identity()
    return nn.Sequential(nn.Linear(inner, dim), nn.Dropout(dropout))


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, d_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.to_qkv = nn.Linear(dim, 3 * heads * d_head, bias=False)
        self.to_out = _output_projection(heads * d_head, dim, heads, d_head, dropout)

    def forward(self, x: Float[Tensor, "batch token dim"]) -> Float[Tensor, "batch token dim"]:
        q, k, v = rearrange(self.to_qkv(x), "b n (three h d) -> three b h n d", three=3, h=self.heads)
        dropout = self.dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout)
        return self.to_out(rearrange(out, "b h n d -> b n (h d)"))


class Transformer(nn.Module):
    """Pre-norm self-attention transformer: x += attn(LN x); x += ff(LN x)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        heads: int,
        d_head: int,
        d_mlp: int,
        dropout: float = 0.0,
        feed_forward: Callable[[int, int, float], nn.Module] = FeedForward,
    ) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, SelfAttention(dim, heads, d_head, dropout)),
                    PreNorm(dim, feed_forward(dim, d_mlp, dropout)),
                ]
            )
            for _ in range(depth)
        )

    def forward(self, x: Float[Tensor, "batch token dim"]) -> Float[Tensor, "batch token dim"]:
        for attention, feed_forward in self.layers:
            x = attention(x) + x
            x = feed_forward(x) + x
        return x
