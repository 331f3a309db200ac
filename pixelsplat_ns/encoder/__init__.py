"""The pixelSplat encoder (CVPR 2024): posed context images -> 3D Gaussians in one pass.

    from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config
    encoder = PixelSplatEncoder(encoder_config("tiny"))      # or "official"
    out = encoder(images, extrinsics, intrinsics, near, far, deterministic=True)
    out.gaussians, out.depth_pdf, out.depths, out.sampling, out.attention
"""

from .config import (
    BackboneConfig,
    EncoderConfig,
    EpipolarConfig,
    GaussianAdapterConfig,
    OpacityMappingConfig,
    SelfAttentionConfig,
    config_from_dict,
    config_to_dict,
    encoder_config,
)
from .encoder import EncoderOutput, PixelSplatEncoder
from .epipolar.sampler import EpipolarSampler, EpipolarSampling

__all__ = [
    "BackboneConfig",
    "EncoderConfig",
    "EncoderOutput",
    "EpipolarConfig",
    "EpipolarSampler",
    "EpipolarSampling",
    "GaussianAdapterConfig",
    "OpacityMappingConfig",
    "PixelSplatEncoder",
    "SelfAttentionConfig",
    "config_from_dict",
    "config_to_dict",
    "encoder_config",
]
