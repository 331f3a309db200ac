"""Where a ray's [near, far] segment lands in another camera's image.

For each ray (given in the other camera's frame), the segment's projection is clipped to
the image frame [0, 1]^2: its ends are the projections of the near and far points when
those are visible, otherwise the ray's first / last crossing of the frame's edges. This
reproduces the official ``project_rays`` case analysis, including which tests decide
"visible" (inside the frame up to 1e-6, in front of the camera, positive ray parameter).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from ..geometry import project_camera_points, transform


@dataclass
class SegmentProjection:
    xy_min: Float[Tensor, "*batch 2"]  # image point of the segment's near end
    xy_max: Float[Tensor, "*batch 2"]  # image point of the segment's far end
    overlaps_image: Bool[Tensor, "*batch"]  # False: the xy values are meaningless


def _visible(
    xy: Float[Tensor, "*batch 2"], z: Float[Tensor, "*batch"], t: Float[Tensor, "*batch"], epsilon: float = 1e-6
) -> Bool[Tensor, "*batch"]:
    in_frame = ((xy >= -epsilon) & (xy <= 1 + epsilon)).all(dim=-1)
    return in_frame & (z > -epsilon) & (t > -epsilon)


def _frame_crossings(
    origins: Float[Tensor, "*batch 3"],
    directions: Float[Tensor, "*batch 3"],
    intrinsics: Float[Tensor, "*#batch 3 3"],
) -> tuple[Float[Tensor, " 4 *batch"], Float[Tensor, "4 *batch 2"], Bool[Tensor, " 4 *batch"]]:
    """Ray parameter, image point and visibility where the ray's image crosses the lines
    x = 0, x = 1, y = 0 and y = 1 (camera-space rays; skew is ignored, as officially)."""
    ts, xys, valids = [], [], []
    for axis in (0, 1):
        other = 1 - axis
        f_same, f_other = intrinsics[..., axis, axis], intrinsics[..., other, other]
        c_same, c_other = intrinsics[..., axis, 2], intrinsics[..., other, 2]
        o_same, o_other, o_z = origins[..., axis], origins[..., other], origins[..., 2]
        d_same, d_other, d_z = directions[..., axis], directions[..., other], directions[..., 2]
        for value in (0.0, 1.0):
            c = (value - c_same) / f_same
            # Solve (o + t d)_same = c (o + t d)_z for t; then the other image coordinate
            # at that point (both fractions may be infinite: those rays are not visible).
            t = (c * o_z - o_same) / (d_same - c * d_z)
            numerator = o_other * (c * d_z - d_same) + d_other * (o_same - c * o_z)
            coordinate = c_other + f_other * numerator / (d_z * o_same - d_same * o_z)
            xy = [torch.full_like(coordinate, value)]
            xy.insert(other, coordinate)
            xy = torch.stack(xy, dim=-1)
            z = o_z + t * d_z
            ts.append(t)
            xys.append(xy)
            valids.append(_visible(xy, z, t))
    return torch.stack(ts), torch.stack(xys), torch.stack(valids)


def _select_crossing(
    t: Float[Tensor, " 4 *batch"], xy: Float[Tensor, "4 *batch 2"], valid: Bool[Tensor, " 4 *batch"], first: bool
) -> tuple[Float[Tensor, "*batch 2"], Bool[Tensor, "*batch"]]:
    """The visible crossing with the smallest (first) or largest t; index 0 when none is visible."""
    t = torch.where(valid, t, torch.inf if first else -torch.inf)
    index = (t.argmin if first else t.argmax)(dim=0, keepdim=True)
    chosen_xy = xy.gather(0, index[..., None].expand(1, *xy.shape[1:]))[0]
    return chosen_xy, valid.gather(0, index)[0]


def _point_projection(
    points: Float[Tensor, "*batch 3"], t: Float[Tensor, "*#batch"], intrinsics: Float[Tensor, "*#batch 3 3"]
) -> tuple[Float[Tensor, "*batch 2"], Bool[Tensor, "*batch"]]:
    xy = project_camera_points(points, intrinsics)
    return xy, _visible(xy, points[..., 2], t.broadcast_to(points.shape[:-1]))


def project_segments(
    origins: Float[Tensor, "*#batch 3"],
    directions: Float[Tensor, "*#batch 3"],
    extrinsics: Float[Tensor, "*#batch 4 4"],
    intrinsics: Float[Tensor, "*#batch 3 3"],
    near: Float[Tensor, "*#batch"],
    far: Float[Tensor, "*#batch"],
) -> SegmentProjection:
    """Project the world-space ray segments [near, far] into the cameras ``extrinsics`` /
    ``intrinsics`` (camera-to-world, normalised intrinsics)."""
    world_to_camera = torch.linalg.inv(extrinsics)
    origins = transform(world_to_camera, origins, 1.0)
    directions = transform(world_to_camera, directions, 0.0)
    origins, directions = torch.broadcast_tensors(origins, directions)

    t, xy, valid = _frame_crossings(origins, directions, intrinsics)
    first_xy, first_valid = _select_crossing(t, xy, valid, first=True)
    last_xy, last_valid = _select_crossing(t, xy, valid, first=False)

    near_xy, near_valid = _point_projection(origins + near[..., None] * directions, near, intrinsics)
    far_xy, far_valid = _point_projection(origins + far[..., None] * directions, far, intrinsics)

    xy_min = torch.where(near_valid[..., None], near_xy, first_xy)
    xy_max = torch.where(far_valid[..., None], far_xy, last_xy)
    overlaps = (near_valid | first_valid) & (far_valid | last_valid)
    return SegmentProjection(xy_min, xy_max, overlaps)
