"""Joint two-view hybrid ViT: BiT ResNet tokens of both views, one sequence, pose-embedded.

Each view becomes a cls token plus its 1/16 ResNet features projected to tokens. Every
token gets the (resized) positional embedding, shared by the views, and a pose embedding
of its view's camera relative to view 0 (Linear of the flattened inv(c2w_0) c2w_v, so the
identity for view 0). The views' tokens are concatenated into one sequence, so the pre-norm
blocks attend jointly across views. Parameter names follow timm 0.5.4's hybrid
``VisionTransformer`` (``patch_embed.backbone``, ``blocks.N.attn.qkv`` ...); ``norm``,
``head`` and ``pos_embed_second`` are stored by the official model but unused, and kept
here only so that its checkpoint loads strictly.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from jaxtyping import Float
from torch import Tensor, nn

from .config import WideBaselineConfig
from .resnet_bit import ResNetBiT


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Float[Tensor, "b n d"]) -> Float[Tensor, "b n d"]:
        q, k, v = rearrange(self.qkv(x), "b n (three h e) -> three b h n e", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "b h n e -> b n (h e)"))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Float[Tensor, "b n d"]) -> Float[Tensor, "b n d"]:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm ViT block: x += attn(LN x); x += mlp(LN x) (LayerNorm eps 1e-6, exact GELU)."""

    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, mlp)

    def forward(self, x: Float[Tensor, "b n d"]) -> Float[Tensor, "b n d"]:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class HybridEmbed(nn.Module):
    """ResNet features -> tokens by a 1x1 conv; also returns every ResNet stage (the DPT uses the first two)."""

    def __init__(self, cfg: WideBaselineConfig) -> None:
        super().__init__()
        self.backbone = ResNetBiT(cfg.resnet_stem_width, cfg.resnet_depths, cfg.resnet_widths, cfg.resnet_groups)
        self.proj = nn.Conv2d(cfg.resnet_widths[-1], cfg.vit_dim, 1)

    def forward(
        self, x: Float[Tensor, "b 3 h w"]
    ) -> tuple[Float[Tensor, "b gh gw d"], list[Float[Tensor, "b c hs ws"]]]:
        stages = self.backbone(x)
        return rearrange(self.proj(stages[-1]), "b d gh gw -> b gh gw d"), stages


def resize_pos_embed(pos_embed: Float[Tensor, "1 n d"], grid: tuple[int, int]) -> Float[Tensor, "1 m d"]:
    """Keep the cls entry, resize the square grid part bilinearly (align_corners False, no antialias)."""
    cls, square = pos_embed[:, :1], pos_embed[0, 1:]
    side = math.isqrt(square.shape[0])
    square = rearrange(square, "(h w) d -> 1 d h w", h=side, w=side)
    if (side, side) != grid:
        square = F.interpolate(square, size=grid, mode="bilinear", align_corners=False)
    return torch.cat([cls, rearrange(square, "1 d h w -> 1 (h w) d")], dim=1)


def relative_poses(c2w: Float[Tensor, "b v 4 4"]) -> Float[Tensor, "b v 16"]:
    """Row-major inv(c2w_0) c2w_v: each camera in view 0's frame (the identity for view 0)."""
    relative = torch.linalg.inv(c2w[:, :1]) @ c2w
    return rearrange(relative, "b v i j -> b v (i j)")


class JointViT(nn.Module):
    """The hybrid ViT run on all views as one token sequence (``forward`` returns the hooked blocks' outputs)."""

    def __init__(self, cfg: WideBaselineConfig) -> None:
        super().__init__()
        self.hooks = tuple(cfg.vit_hooks)
        dim, grid = cfg.vit_dim, cfg.vit_pos_embed_grid
        self.cls_token = nn.Parameter(0.02 * torch.randn(1, 1, dim))
        self.pos_embed = nn.Parameter(0.02 * torch.randn(1, 1 + grid * grid, dim))
        self.pos_embed_second = nn.Parameter(torch.zeros(1, 1 + grid * grid, dim))  # stored, unused
        self.patch_embed = HybridEmbed(cfg)
        self.blocks = nn.ModuleList(Block(dim, cfg.vit_heads, cfg.vit_mlp) for _ in range(cfg.vit_depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)  # stored, unused: its output is thrown away officially
        self.pose_embed = nn.Linear(16, dim)
        self.head = nn.Linear(dim, 1000)  # stored, unused (the ImageNet classifier)

    def forward(
        self, images: Float[Tensor, "b v 3 h w"], c2w: Float[Tensor, "b v 4 4"]
    ) -> tuple[list[Float[Tensor, "(b v) c hs ws"]], list[Float[Tensor, "b v n d"]]]:
        """Normalised images and OpenCV cam2world -> (ResNet stage outputs, tokens after each hooked block).

        Tokens come per view: n = 1 + gh * gw, the cls token first, then the patches row-major.
        """
        b, v = images.shape[:2]
        patches, stages = self.patch_embed(rearrange(images, "b v c h w -> (b v) c h w"))
        gh, gw = patches.shape[1:3]
        tokens = rearrange(patches, "(b v) gh gw d -> b v (gh gw) d", b=b, v=v)
        cls = repeat(self.cls_token, "1 1 d -> b v 1 d", b=b, v=v)
        tokens = torch.cat([cls, tokens], dim=2) + resize_pos_embed(self.pos_embed, (gh, gw))
        pose = self.pose_embed(relative_poses(c2w).to(tokens.dtype))
        tokens = tokens + rearrange(pose, "b v d -> b v 1 d")

        x = rearrange(tokens, "b v n d -> b (v n) d")
        hooked = []
        for index, block in enumerate(self.blocks[: max(self.hooks) + 1]):
            x = block(x)
            if index in self.hooks:
                hooked.append(rearrange(x, "b (v n) d -> b v n d", v=v))
        return stages, hooked
