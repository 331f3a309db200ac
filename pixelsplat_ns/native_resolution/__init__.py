"""From the encoder's per-pixel predictions to the Gaussians users meet: one per pixel of
the context photos at their own resolution (up to a cap), pruned of what cannot be seen.

    views = prepare_context(..., gaussian_long_side=960)
    native = native_resolution_gaussians(encoder(...), views)
"""

from .backdrop import backdrop_gaussians
from .colours import two_view_harmonics
from .context_colours import correct_context_colours, render_context_cameras
from .free_space import in_free_space
from .gaussians import NativeGaussians, encoder_positions, most_opaque_sample, native_resolution_gaussians
from .pruning import MIN_VISIBLE_OPACITY, keep_gaussians, visible_mask
from .stereo import depth_disagreement, refine_depths, sweep_depths
from .upsampling import joint_bilateral_upsample

__all__ = [
    "MIN_VISIBLE_OPACITY",
    "NativeGaussians",
    "backdrop_gaussians",
    "correct_context_colours",
    "depth_disagreement",
    "encoder_positions",
    "in_free_space",
    "joint_bilateral_upsample",
    "keep_gaussians",
    "most_opaque_sample",
    "native_resolution_gaussians",
    "refine_depths",
    "render_context_cameras",
    "sweep_depths",
    "two_view_harmonics",
    "visible_mask",
]
