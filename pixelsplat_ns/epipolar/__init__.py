"""Epipolar machinery shared by the methods that look along epipolar lines (pixelSplat's
epipolar transformer; Du et al.'s cross-attention renderer):

* ``lines``: where a ray's [near, far] segment lands in another camera's image;
* ``image_plane``: where a whole ray (origin to vanishing point) lands, samples evenly
  spaced on the image plane and the point of the ray each stands for (Du et al.);
* ``sampler``: samples along those lines and the depth along the ray each stands for;
* ``attention``: keys built from the features at the samples, one-query cross-attention;
* ``trace``: one ray's samples and attention, for inspection.
"""

from .attention import CrossAttention, EpipolarKeys
from .image_plane import closest_point_on_ray, image_plane_samples, project_ray_to_image
from .lines import SegmentProjection, project_segments
from .sampler import EpipolarSampler, EpipolarSampling, other_view_index
from .trace import EpipolarTrace, trace_ray

__all__ = [
    "CrossAttention",
    "EpipolarKeys",
    "EpipolarSampler",
    "EpipolarSampling",
    "EpipolarTrace",
    "SegmentProjection",
    "closest_point_on_ray",
    "image_plane_samples",
    "other_view_index",
    "project_ray_to_image",
    "project_segments",
    "trace_ray",
]
