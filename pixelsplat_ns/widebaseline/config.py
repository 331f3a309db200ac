"""Configuration of Du et al.'s cross-attention wide-baseline renderer (CVPR 2023).

One flat, tyro-friendly dataclass: the image encoder's sizes (a DPT-Hybrid: BiT ResNet,
joint two-view ViT, DPT reassembly and fusion, plus ``conv_map``) and the renderer's widths.
``WideBaselineConfig.official()`` (equal to the defaults) is the published RealEstate10K model,
whose checkpoint keys and shapes it reproduces; ``WideBaselineConfig.small()`` keeps the
structure at a size that trains on a CPU.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any


@dataclass
class WideBaselineConfig:
    """Sizes of the wide-baseline model. Defaults: the official model (n_view 2, 256x256)."""

    image_size: int = 256
    """Side of the square context images the model is trained on. The encoder itself takes any multiple
    of 32 (the positional embedding is resized to the token grid, image side / 16)."""
    num_views: int = 2
    """Context views, attended to jointly by the ViT (the official model supports exactly 2)."""

    # Image encoder: BiT ResNet (stem conv 7x7/2 + max-pool 3x3/2, then three bottleneck stages at strides 4, 8, 16).
    resnet_stem_width: int = 64
    resnet_depths: tuple[int, int, int] = (3, 4, 9)
    """Bottleneck blocks per stage."""
    resnet_widths: tuple[int, int, int] = (256, 512, 1024)
    """Output channels per stage (bottleneck width: a quarter of these)."""
    resnet_groups: int = 32
    """GroupNorm groups of every ResNet norm."""

    # Image encoder: joint two-view ViT on the 1/16 ResNet features.
    vit_dim: int = 768
    vit_depth: int = 12
    vit_heads: int = 12
    vit_mlp: int = 3072
    vit_pos_embed_grid: int = 24
    """Side of the stored positional-embedding grid (bilinearly resized to the token grid)."""
    vit_hooks: tuple[int, int] = (8, 11)
    """ViT blocks (0-based) whose outputs the DPT reassembles (the last also gives the 1/32 map)."""

    # Image encoder: DPT reassembly / fusion, and the full-resolution conv_map.
    dpt_features: int = 256
    """Channels of the fused maps z0 (1/4) and z1 (1/2)."""
    conv_map_channels: int = 64
    """Channels of z2, a 7x7 conv on the normalised image at full resolution."""

    # Renderer (epipolar sampling and two rounds of cross-attention; used by the renderer, not the encoder).
    num_samples: int = 64
    """Samples per epipolar segment and context view."""
    sample_hidden_channels: int = 576
    """Hidden width of the per-sample encoding MLP (query_encode_latent)."""
    sample_channels: int = 288
    """Per-image sample encoding (query_encode_latent_2); the two images' encodings are concatenated."""
    value_channels: int = 288
    """Attention values (latent_value); the decoder's latent is two of these."""
    key_channels: int = 128
    """Keys, embedded queries and the encoded round-1 feature (key_map, query_embed, encode_latent, ...)."""
    phi_hidden: int = 128
    """Hidden width of the ResnetFC decoder phi."""
    phi_blocks: int = 3
    """Residual blocks of phi."""

    @property
    def patch_size(self) -> int:
        """Pixels per ViT token: the ResNet's output stride."""
        return 16

    @property
    def token_grid(self) -> int:
        """Side of each view's token grid."""
        return self.image_size // self.patch_size

    @property
    def feature_channels(self) -> int:
        """Channels of z0, z1 and z2 together (576 official)."""
        return 2 * self.dpt_features + self.conv_map_channels

    @property
    def geometry_channels(self) -> int:
        """Per-sample geometric query input: ray (3), zeros (3), query direction (3), tanh distances (4), origin (3)."""
        return 16

    @classmethod
    def official(cls) -> WideBaselineConfig:
        """The published model (ViT-B, ResNet-50 stages 3/4/9, DPT features 256, 64 samples)."""
        return cls()

    @classmethod
    def small(cls) -> WideBaselineConfig:
        """The same structure, CPU-trainable: 128x128 images, one bottleneck per stage, ViT 192/4/3,
        DPT features 64, conv_map 16 (144 feature channels), 32 samples and the renderer's widths at a
        quarter of the official ones. A two-view encode takes about 40 ms on two CPU cores."""
        return cls(
            image_size=128,
            resnet_stem_width=32,
            resnet_depths=(1, 1, 1),
            resnet_widths=(64, 128, 256),
            resnet_groups=8,
            vit_dim=192,
            vit_depth=4,
            vit_heads=3,
            vit_mlp=768,
            vit_pos_embed_grid=12,
            vit_hooks=(2, 3),
            dpt_features=64,
            conv_map_channels=16,
            num_samples=32,
            sample_hidden_channels=144,
            sample_channels=72,
            value_channels=72,
            key_channels=32,
            phi_hidden=32,
            phi_blocks=3,
        )

    def to_dict(self) -> dict[str, Any]:
        """Plain values (tuples as lists), for checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> WideBaselineConfig:
        """Inverse of ``to_dict`` (missing fields take their defaults; unknown ones are refused)."""
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(values) - set(known)
        if unknown:
            raise ValueError(f"unknown WideBaselineConfig fields: {', '.join(sorted(unknown))}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
