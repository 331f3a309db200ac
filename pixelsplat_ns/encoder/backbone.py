"""Image backbones: per-pixel features at full resolution.

* ``DinoBackbone`` (official): DINO ViT (``dino``) + DINO ResNet-50 (``resnet_backbone``).
  ViT patch tokens are repeated over their pixels, the class token over the image, each
  after its own MLP; ResNet stem and stage outputs are projected by 1x1 convs, upsampled
  bilinearly (align_corners=True) and summed. No ImageNet normalisation (images in [0, 1]).
* ``ResnetBackbone``: the ResNet part alone (torchvision ResNet with instance norm), used
  by the tiny preset.

Modules and parameters are named as in the official checkpoints. Weights are never
downloaded: they come from checkpoints.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.nn.functional as F
import torchvision
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from .config import BackboneConfig

# --------------------------------------------------------------------------------------
# DINO vision transformer (same parameter layout as facebookresearch/dino)
# --------------------------------------------------------------------------------------

VIT_SIZES = {"s": (384, 6), "b": (768, 12)}  # embed dim, heads


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(3, dim, patch_size, patch_size)

    def forward(self, images: Float[Tensor, "n 3 h w"]) -> Float[Tensor, "n token dim"]:
        return rearrange(self.proj(images), "n c h w -> n (h w) c")


class VitAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Float[Tensor, "n token dim"]) -> Float[Tensor, "n token dim"]:
        q, k, v = rearrange(self.qkv(x), "n t (three h d) -> three n h t d", three=3, h=self.heads)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(rearrange(out, "n h t d -> n t (h d)"))


class VitMlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class VitBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = VitAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = VitMlp(dim, 4 * dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DinoVit(nn.Module):
    """DINO ViT without head: ``forward`` returns the final-normed tokens [cls, patches...]
    (what DINO's ``get_intermediate_layers(x)[0]`` returns)."""

    def __init__(self, patch_size: int, size: str = "b", depth: int = 12, train_size: int = 224) -> None:
        super().__init__()
        dim, heads = VIT_SIZES[size]
        self.dim = dim
        self.patch_size = patch_size
        self.patch_embed = PatchEmbed(patch_size, dim)
        grid = train_size // patch_size
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, grid * grid + 1, dim))
        self.blocks = nn.ModuleList(VitBlock(dim, heads) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)

    def position_embedding(self, rows: int, cols: int) -> Float[Tensor, "1 token dim"]:
        """The learned embedding, resampled bicubically to a rows x cols patch grid exactly as
        DINO does (scale factors (rows + 0.1) / n, (cols + 0.1) / n; identity when unchanged)."""
        n_trained = self.pos_embed.shape[1] - 1
        if rows * cols == n_trained and rows == cols:
            return self.pos_embed
        side = int(math.sqrt(n_trained))
        grid = rearrange(self.pos_embed[:, 1:], "1 (h w) c -> 1 c h w", h=side, w=side)
        grid = F.interpolate(
            grid, scale_factor=((rows + 0.1) / side, (cols + 0.1) / side), mode="bicubic", align_corners=False
        )
        if grid.shape[-2:] != (rows, cols):
            raise RuntimeError(f"position embedding resampled to {tuple(grid.shape[-2:])}, expected {(rows, cols)}")
        return torch.cat((self.pos_embed[:, :1], rearrange(grid, "1 c h w -> 1 (h w) c")), dim=1)

    def forward(self, images: Float[Tensor, "n 3 h w"]) -> Float[Tensor, "n token dim"]:
        n, _, h, w = images.shape
        tokens = self.patch_embed(images)
        tokens = torch.cat((self.cls_token.expand(n, -1, -1), tokens), dim=1)
        tokens = tokens + self.position_embedding(h // self.patch_size, w // self.patch_size)
        for block in self.blocks:
            tokens = block(tokens)
        return self.norm(tokens)


# --------------------------------------------------------------------------------------
# ResNet feature pyramid summed at full resolution
# --------------------------------------------------------------------------------------


def _bottleneck_width(stage: nn.Sequential) -> int:
    last = stage[-1]
    return (last.conv3 if hasattr(last, "conv3") else last.conv2).out_channels


class ResnetBackbone(nn.Module):
    """Stem (conv1 + norm + ReLU, no max-pool: the official code never pools) and stages
    1..num_layers-1 of a torchvision ResNet; each output is projected to ``d_out`` by a
    1x1 conv, upsampled to the input size and summed."""

    def __init__(self, model: str, num_layers: int, d_out: int, dino: bool, keep_unused: bool = False) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.d_out = d_out
        if dino:  # DINO's ResNet-50: torchvision's, batch norm, fc removed
            self.model = torchvision.models.resnet50(weights=None)
        else:
            norm = functools.partial(nn.InstanceNorm2d, affine=False, track_running_stats=False)
            self.model = getattr(torchvision.models, model)(weights=None, norm_layer=norm)
        self.model.fc = nn.Identity()
        if not keep_unused:  # stages the features never use
            for index in range(num_layers, 5):
                delattr(self.model, f"layer{index}")
        self.projections = nn.ModuleDict()
        for index in range(1, num_layers):
            width = _bottleneck_width(getattr(self.model, f"layer{index}"))
            self.projections[f"layer{index}"] = nn.Conv2d(width, d_out, 1)
        self.projections["layer0"] = nn.Conv2d(self.model.conv1.out_channels, d_out, 1)

    @property
    def patch_size(self) -> int:
        return 1

    def pyramid(self, images: Float[Tensor, "n 3 h w"]) -> list[Float[Tensor, "n d_out _ _"]]:
        """The projected (not yet upsampled) feature maps, finest first."""
        x = self.model.relu(self.model.bn1(self.model.conv1(images)))
        levels = [self.projections["layer0"](x)]
        for index in range(1, self.num_layers):
            x = getattr(self.model, f"layer{index}")(x)
            levels.append(self.projections[f"layer{index}"](x))
        return levels

    def forward(self, images: Float[Tensor, "n 3 h w"]) -> Float[Tensor, "n d_out h w"]:
        size = images.shape[-2:]
        levels = self.pyramid(images)
        if torch.is_grad_enabled():
            return sum(F.interpolate(level, size, mode="bilinear", align_corners=True) for level in levels)
        # Inference: accumulate in place, upsampling a few channels at a time.
        out = levels[0].new_zeros((images.shape[0], self.d_out, *size))
        chunk = 128
        for level in levels:
            for start in range(0, self.d_out, chunk):
                part = level[:, start : start + chunk]
                out[:, start : start + chunk] += F.interpolate(part, size, mode="bilinear", align_corners=True)
        return out


class DinoBackbone(nn.Module):
    def __init__(self, cfg: BackboneConfig) -> None:
        super().__init__()
        name = cfg.model.removeprefix("dino_vit")
        size, patch = name[0], int(name[1:])
        self.dino = DinoVit(patch, size)
        self.resnet_backbone = ResnetBackbone("resnet50", cfg.resnet_layers, cfg.d_out, dino=True, keep_unused=True)
        dim = self.dino.dim
        self.global_token_mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, cfg.d_out))
        self.local_token_mlp = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, cfg.d_out))
        self.d_out = cfg.d_out
        self.patch_size = patch

    def forward(self, images: Float[Tensor, "n 3 h w"]) -> Float[Tensor, "n d_out h w"]:
        n, _, h, w = images.shape
        p = self.patch_size
        tokens = self.dino(images)
        global_token = self.global_token_mlp(tokens[:, 0])
        local_tokens = rearrange(self.local_token_mlp(tokens[:, 1:]), "n (h w) c -> n c h () w ()", h=h // p, w=w // p)
        tokens = local_tokens + global_token[:, :, None, None, None, None]  # n c h/p 1 w/p 1
        features = self.resnet_backbone(images)
        if torch.is_grad_enabled():
            return features + tokens.expand(-1, -1, -1, p, -1, p).reshape(n, self.d_out, h, w)
        # Inference: broadcast-add into the ResNet features without a full-size copy.
        features.view(n, self.d_out, h // p, p, w // p, p).add_(tokens)
        return features


def build_backbone(cfg: BackboneConfig) -> nn.Module:
    """A module mapping images [n, 3, h, w] in [0, 1] to features [n, d_out, h, w], with
    ``d_out`` and ``patch_size`` (h and w must be multiples of it) attributes."""
    if cfg.name == "dino":
        if not cfg.model.startswith("dino_vit"):
            raise ValueError(f"the dino backbone needs a dino_vit* model, got {cfg.model!r}")
        return DinoBackbone(cfg)
    if cfg.model.startswith("dino"):
        raise ValueError(f"the resnet backbone needs a torchvision resnet model, got {cfg.model!r}")
    return ResnetBackbone(cfg.model, cfg.resnet_layers, cfg.d_out, dino=False)
