"""From the encoder's per-pixel predictions to the Gaussians users meet: one per pixel of
the context photos at their own resolution (up to a cap), pruned of what cannot be seen.

    views = prepare_context(..., gaussian_long_side=960)
    native = native_resolution_gaussians(encoder(...), views)
"""

from .gaussians import NativeGaussians, encoder_positions, most_opaque_sample, native_resolution_gaussians
from .pruning import MIN_VISIBLE_OPACITY, keep_gaussians, visible_mask
from .upsampling import joint_bilateral_upsample

__all__ = [
    "MIN_VISIBLE_OPACITY",
    "NativeGaussians",
    "encoder_positions",
    "joint_bilateral_upsample",
    "keep_gaussians",
    "most_opaque_sample",
    "native_resolution_gaussians",
    "visible_mask",
]
