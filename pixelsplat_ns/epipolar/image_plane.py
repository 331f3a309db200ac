"""A whole ray's epipolar segment on another camera's image plane, and samples evenly spaced
along it (Du et al.'s cross-attention renderer; pixelSplat uses ``lines.project_segments``
with a [near, far] range instead).

The ray has no depth range: its segment runs from the projection of the ray's origin (when
it is in front of the camera and inside the image; otherwise the ray's first crossing of
the image border) to the vanishing point of its direction (when inside; otherwise its last
border crossing). Samples are spaced evenly *on the image plane*, both ends included, and
each stands for the point on the ray closest to the camera ray through it.

Rays are in the camera's own frame (OpenCV axes); intrinsics are normalised so that the
image spans [0, 1]^2.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from .lines import SegmentProjection, _frame_crossings, _select_crossing, _visible

EPSILON = torch.finfo(torch.float32).eps


def project_ray_to_image(
    origins: Float[Tensor, "*#batch 3"],
    directions: Float[Tensor, "*#batch 3"],
    intrinsics: Float[Tensor, "*#batch 3 3"],
) -> SegmentProjection:
    """The image of each whole camera-space ray, from its origin's projection to its
    vanishing point, clipped to the image [0, 1]^2. ``overlaps_image`` is False for rays
    whose image misses the frame (their ends are meaningless and may be NaN or inf)."""
    origins, directions = torch.broadcast_tensors(origins, directions)
    t, xy, valid = _frame_crossings(origins, directions, intrinsics)
    first_xy, first_valid = _select_crossing(t, xy, valid, first=True)
    last_xy, last_valid = _select_crossing(t, xy, valid, first=False)

    origin_xy = _project(origins, intrinsics)
    origin_visible = _visible(origin_xy, origins[..., 2], torch.zeros_like(origins[..., 2]))
    # The vanishing point is where the ray ends up at t -> infinity: visible when the ray
    # heads away from the camera (d_z > 0) and that point is inside the frame.
    vanishing_xy = _project(directions, intrinsics)
    vanishing_visible = _visible(vanishing_xy, directions[..., 2], torch.zeros_like(directions[..., 2]))
    vanishing_visible = vanishing_visible & (directions[..., 2] > 0)

    xy_min = torch.where(origin_visible[..., None], origin_xy, first_xy)
    xy_max = torch.where(vanishing_visible[..., None], vanishing_xy, last_xy)
    overlaps = (origin_visible | first_valid) & (vanishing_visible | last_valid)
    return SegmentProjection(xy_min, xy_max, overlaps)


def _project(
    points: Float[Tensor, "*batch 3"], intrinsics: Float[Tensor, "*#batch 3 3"], epsilon: float = EPSILON
) -> Float[Tensor, "*batch 2"]:
    """Pinhole projection (as ``geometry.project_camera_points``: z + float32 eps, +-inf ->
    +-1e8), written elementwise so that a ray's result does not depend on how many rays are
    projected with it (a batched matrix product may round differently per batch size)."""
    x, y = (points[..., :2] / (points[..., 2:] + epsilon)).nan_to_num(posinf=1e8, neginf=-1e8).unbind(-1)
    k = intrinsics
    return torch.stack(
        (k[..., 0, 0] * x + k[..., 0, 1] * y + k[..., 0, 2], k[..., 1, 0] * x + k[..., 1, 1] * y + k[..., 1, 2]), dim=-1
    )


def image_plane_samples(
    xy_min: Float[Tensor, "*batch 2"], xy_max: Float[Tensor, "*batch 2"], num_samples: int
) -> Float[Tensor, "*batch sample 2"]:
    """``num_samples`` points evenly spaced on the image plane from ``xy_min`` to ``xy_max``,
    both ends included."""
    fraction = torch.linspace(0, 1, num_samples, dtype=xy_min.dtype, device=xy_min.device)[:, None]
    return xy_min[..., None, :] + fraction * (xy_max - xy_min)[..., None, :]


def closest_point_on_ray(
    origins: Float[Tensor, "*#batch 3"],
    directions: Float[Tensor, "*#batch 3"],
    other_origins: Float[Tensor, "*#batch 3"],
    other_directions: Float[Tensor, "*#batch 3"],
) -> Float[Tensor, "*batch 3"]:
    """The point of the line ``origins + t directions`` closest to the line ``other_origins
    + s other_directions``, computed in float64 (far samples make the 2x2 system badly
    conditioned) and returned in the inputs' dtype. Parallel lines give non-finite points.
    """
    dtype = origins.dtype
    o1, d1, o2, d2 = (x.double() for x in (origins, directions, other_origins, other_directions))
    offset = o1 - o2
    a = (d1 * d1).sum(-1)
    b = (d1 * d2).sum(-1)
    c = (d2 * d2).sum(-1)
    d = (d1 * offset).sum(-1)
    e = (d2 * offset).sum(-1)
    t = (b * e - c * d) / (a * c - b * b)
    return (o1 + t[..., None] * d1).to(dtype)
