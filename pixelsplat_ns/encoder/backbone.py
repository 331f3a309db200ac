"""Image backbones: per-pixel features at full resolution.

* ``DinoBackbone`` (official): DINO ViT (``dino``) + DINO ResNet-50 (``resnet_backbone``).
  ViT patch tokens are repeated over their pixels, the class token over the image, each
  after its own MLP; ResNet stem and stage outputs are projected by 1x1 convs, upsampled
  bilinearly (align_corners=True) and summed. No ImageNet normalisation (images in [0, 1]).
* ``ResnetBackbone``: the ResNet part alone (instance norm), used by the tiny preset.

Modules and parameters are named as in the official checkpoints. Weights are never
downloaded: they come from checkpoints.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from .config import BackboneConfig
from .placeholders import UnusedWeights
from .resnet import ResNet, batch_norm, instance_norm

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
# Full-resolution feature sums (ResNet pyramid + ViT tokens)
# --------------------------------------------------------------------------------------


class FullResolutionFeatures(nn.Module):
    """Features that are a sum of terms at full resolution, then (outside) ReLU + Linear.

    Terms: low-resolution maps (``levels``) upsampled bilinearly (align_corners=True), and
    ``patch_terms`` constant over patches. ``forward`` builds the whole [n, d_out, h, w]
    map. (At inference, ``encoder.inference.backbone`` builds it in bands of rows from the
    same terms, projecting each band at once, so the wide map never exists in memory.)
    """

    d_out: int

    def patch_terms(self, images: Tensor) -> list[Tensor]:
        """Terms constant over patches, shaped [n, d_out, h/p, 1, w/p, 1]."""
        return []

    def levels(self, images: Tensor) -> list[list[tuple[Tensor, nn.Conv2d]]]:
        """Groups of (feature map, 1x1 projection to d_out) sharing a resolution: each
        group is projected and summed, then upsampled once."""
        raise NotImplementedError

    def forward(self, images: Float[Tensor, "n 3 h w"]) -> Float[Tensor, "n d_out h w"]:
        n, _, h, w = images.shape
        features = 0
        for group in self.levels(images):
            for stage, projection in group:
                features = features + F.interpolate(projection(stage), (h, w), mode="bilinear", align_corners=True)
        for term in self.patch_terms(images):
            p = h // term.shape[2]
            features = features + term.expand(-1, -1, -1, p, -1, p).reshape(n, self.d_out, h, w)
        return features


class ResnetBackbone(FullResolutionFeatures):
    """Stem (conv1 + norm + ReLU, no max-pool: the official code never pools) and stages
    1..num_layers-1 of a ResNet; each output is projected to ``d_out`` by a 1x1 conv,
    upsampled bilinearly (align_corners=True) to the input size and summed."""

    def __init__(self, model: str, num_layers: int, d_out: int, dino: bool, keep_unused: bool = False) -> None:
        super().__init__()
        self.num_layers = num_layers
        self.d_out = d_out
        # DINO's ResNet-50 is torchvision's (batch norm); the plain backbone uses instance norm.
        self.model = ResNet(model, batch_norm if dino else instance_norm, 4 if keep_unused else num_layers - 1)
        if keep_unused:  # stages the features never read: keys for checkpoints, no memory
            for index in range(num_layers, 5):
                setattr(self.model, f"layer{index}", UnusedWeights(getattr(self.model, f"layer{index}")))
        self.projections = nn.ModuleDict()
        for index in range(1, num_layers):
            self.projections[f"layer{index}"] = nn.Conv2d(self.model.stage_channels[index], d_out, 1)
        self.projections["layer0"] = nn.Conv2d(self.model.stage_channels[0], d_out, 1)

    @property
    def patch_size(self) -> int:
        return 1

    def levels(self, images: Tensor) -> list[list[tuple[Tensor, nn.Conv2d]]]:
        stages = self.model.stages(images, self.num_layers - 1)
        groups: dict[tuple[int, int], list[tuple[Tensor, nn.Conv2d]]] = {}
        for index, stage in enumerate(stages):
            groups.setdefault(tuple(stage.shape[-2:]), []).append((stage, self.projections[f"layer{index}"]))
        return list(groups.values())


class DinoBackbone(FullResolutionFeatures):
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

    def patch_terms(self, images: Tensor) -> list[Tensor]:
        """ViT patch tokens (repeated over their pixels) plus the class token (over the image)."""
        _n, _, h, w = images.shape
        p = self.patch_size
        tokens = self.dino(images)
        global_token = self.global_token_mlp(tokens[:, 0])
        local_tokens = rearrange(self.local_token_mlp(tokens[:, 1:]), "n (h w) c -> n c h () w ()", h=h // p, w=w // p)
        return [local_tokens + global_token[:, :, None, None, None, None]]

    def levels(self, images: Tensor) -> list[list[tuple[Tensor, nn.Conv2d]]]:
        return self.resnet_backbone.levels(images)


def build_backbone(cfg: BackboneConfig) -> FullResolutionFeatures:
    """Images [n, 3, h, w] in [0, 1] -> features [n, d_out, h, w]; ``patch_size``: h and w
    must be multiples of it."""
    if cfg.name == "dino":
        if not cfg.model.startswith("dino_vit"):
            raise ValueError(f"the dino backbone needs a dino_vit* model, got {cfg.model!r}")
        return DinoBackbone(cfg)
    if cfg.model.startswith("dino"):
        raise ValueError(f"the resnet backbone needs a ResNet model, got {cfg.model!r}")
    return ResnetBackbone(cfg.model, cfg.resnet_layers, cfg.d_out, dino=False)
