"""The pixelSplat encoder (CVPR 2024): posed context images -> 3D Gaussians in one pass::

    from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config
    encoder = PixelSplatEncoder(encoder_config("tiny"))      # or "official"
    out = encoder(images, extrinsics, intrinsics, near, far, deterministic=True)
    out.gaussians, out.depth_pdf, out.depths, out.sampling, out.attention

    # one pixel's epipolar samples, attention, depth distribution and Gaussians
    trace = trace_pixel(encoder(..., return_attention=True), extrinsics, intrinsics, near, far, (h, w), view, row, col)

The modules here define the network (what is computed; training and gradients run it as
is). For fast inference, prepare a built encoder once its weights are final:
``encoder.inference.prepare_for_inference(encoder)``, or
``pixelsplat_ns.weights.load_encoder(..., for_inference=True)``.
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
from .trace import PixelTrace, trace_pixel

__all__ = [
    "BackboneConfig",
    "EncoderConfig",
    "EncoderOutput",
    "EpipolarConfig",
    "GaussianAdapterConfig",
    "OpacityMappingConfig",
    "PixelSplatEncoder",
    "PixelTrace",
    "SelfAttentionConfig",
    "config_from_dict",
    "config_to_dict",
    "encoder_config",
    "trace_pixel",
]
