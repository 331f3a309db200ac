"""Encoder configuration: plain nested dataclasses (tyro-friendly) and two presets.

``EncoderConfig()`` with its defaults *is* the published pixelSplat encoder (the
``re10k`` / ``acid`` experiments); ``encoder_config("tiny")`` shrinks it for tests and
CPU experiments. Configurations round-trip through plain dicts (``config_to_dict`` /
``config_from_dict``) so checkpoints can carry them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal


@dataclass
class BackboneConfig:
    """Per-pixel image features.

    ``dino``: DINO ViT (``model``, e.g. ``dino_vitb8``) plus a DINO ResNet-50 whose
    stem and first ``resnet_layers - 1`` stages are projected to ``d_out`` channels.
    ``resnet``: a torchvision ResNet (``model``) with instance norm, the stem and first
    ``resnet_layers - 1`` stages projected to ``d_out`` channels.
    """

    name: Literal["dino", "resnet"] = "dino"
    model: Literal["dino_vits16", "dino_vits8", "dino_vitb16", "dino_vitb8", "resnet18", "resnet34", "resnet50"] = (
        "dino_vitb8"
    )
    d_out: int = 512
    resnet_layers: int = 4
    """Feature levels taken from the ResNet: the stem plus stages 1..resnet_layers-1."""

    @property
    def vit_patch_size(self) -> int:
        return int(self.model.split("vit")[1][1:]) if self.name == "dino" else 1


@dataclass
class SelfAttentionConfig:
    """The per-image self-attention that fills the feed-forward slot of each epipolar layer."""

    patch_size: int = 4
    num_octaves: int = 10
    num_layers: int = 2
    num_heads: int = 4
    d_token: int = 128
    d_dot: int = 128
    d_mlp: int = 256


@dataclass
class EpipolarConfig:
    self_attention: SelfAttentionConfig = field(default_factory=SelfAttentionConfig)
    num_octaves: int = 10
    """Octaves of the positional encoding of each sample's depth (0 disables it)."""
    num_layers: int = 2
    num_heads: int = 4
    num_samples: int = 32
    """Samples per epipolar line."""
    d_dot: int = 128
    d_mlp: int = 256
    downscale: int = 4
    """The transformer runs on features downscaled by this factor (strided conv)."""


@dataclass
class GaussianAdapterConfig:
    gaussian_scale_min: float = 0.5
    gaussian_scale_max: float = 15.0
    sh_degree: int = 4

    @property
    def d_sh(self) -> int:
        return (self.sh_degree + 1) ** 2


@dataclass
class OpacityMappingConfig:
    """opacity = 0.5 (1 - (1 - p)^e + p^(1/e)), e = 2^x, x ramping initial -> final over warm_up steps."""

    initial: float = 0.0
    final: float = 0.0
    warm_up: int = 1


@dataclass
class EncoderConfig:
    d_feature: int = 128
    num_depth_buckets: int = 32
    """Buckets of the per-pixel depth distribution, uniform in disparity between near and far."""
    num_surfaces: int = 1
    gaussians_per_pixel: int = 3
    """Depth samples per pixel and surface when not deterministic (deterministic: top-1).
    Opacities are divided by this number in both modes, as in the official code."""
    near_disparity: float = 3.0
    """The near plane rule the encoder was trained with (``cameras.official_near_far``); inference uses it."""
    train_image_shape: tuple[int, int] | None = None
    """(height, width) of the examples it was trained on, when known: inference feeds context images at that
    scale (short side equal), since learned features are scale-dependent. Set by ``pixelsplat-pretrain``."""
    use_epipolar_transformer: bool = True
    use_transmittance: bool = False
    num_views: int = 2
    """Context views the model is built for (> 2 adds per-view embeddings)."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    epipolar: EpipolarConfig = field(default_factory=EpipolarConfig)
    gaussian_adapter: GaussianAdapterConfig = field(default_factory=GaussianAdapterConfig)
    opacity_mapping: OpacityMappingConfig = field(default_factory=OpacityMappingConfig)

    @property
    def image_multiple(self) -> int:
        """Image heights and widths must be multiples of this."""
        multiple = self.backbone.vit_patch_size
        if self.use_epipolar_transformer:
            multiple = math.lcm(multiple, self.epipolar.downscale * self.epipolar.self_attention.patch_size)
        return multiple


PRESETS = ("official", "tiny")


def encoder_config(preset: str = "official") -> EncoderConfig:
    """``official``: the published architecture (ViT-B/8 + ResNet-50, d_feature 128).
    ``tiny``: same structure, ResNet-18 stem + 2 stages, d_feature 64, one epipolar
    layer with 16 samples, SH degree 2 — a 2x256x256 forward in about a second on a CPU."""
    if preset == "official":
        return EncoderConfig()
    if preset == "tiny":
        return EncoderConfig(
            d_feature=64,
            num_depth_buckets=32,
            backbone=BackboneConfig(name="resnet", model="resnet18", d_out=64, resnet_layers=3),
            epipolar=EpipolarConfig(
                self_attention=SelfAttentionConfig(
                    patch_size=2, num_octaves=6, num_layers=1, num_heads=2, d_token=64, d_dot=32, d_mlp=128
                ),
                num_octaves=10,
                num_layers=1,
                num_heads=2,
                num_samples=16,
                d_dot=32,
                d_mlp=128,
                downscale=4,
            ),
            gaussian_adapter=GaussianAdapterConfig(sh_degree=2),
        )
    raise ValueError(f"unknown encoder preset {preset!r}: choose one of {', '.join(PRESETS)}")


def config_to_dict(config: EncoderConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def _from_dict(cls: type, values: dict[str, Any]) -> Any:
    kwargs = {}
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    for name, value in values.items():
        default = known[name].default_factory if known[name].default_factory is not dataclasses.MISSING else None
        nested = type(default()) if default is not None else None
        if nested is not None and dataclasses.is_dataclass(nested) and isinstance(value, dict):
            value = _from_dict(nested, value)
        kwargs[name] = value
    return cls(**kwargs)


def config_from_dict(values: dict[str, Any]) -> EncoderConfig:
    """Inverse of ``config_to_dict`` (missing fields take their defaults)."""
    return _from_dict(EncoderConfig, values)
