"""Per-context-frame geometry of the cross-attention renderer's query rays.

Every quantity is computed in each context camera's own frame from the world ray
transformed by inv(c2w_k), as the official code does (it expresses the query camera in each
context frame). Nothing here is learned; ``renderer.py`` reads features at the samples.

Legend: b batch, v context view (two), r ray, s sample along the epipolar line.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Bool, Float
from torch import Tensor

from ..cameras import (
    widebaseline_grid_to_pixels,
    widebaseline_grid_to_plane,
    widebaseline_normalize_intrinsics,
    widebaseline_pixels_to_grid,
    widebaseline_plane_to_grid,
)
from ..epipolar.image_plane import closest_point_on_ray, image_plane_samples, project_ray_to_image

# Distance given to samples whose 3D point is not finite (rays parallel to the query ray).
FAR_DISTANCE = 1e6


@dataclass
class RayGeometry:
    """Where each query ray's samples lie in each context view, and what they stand for."""

    origins: Float[Tensor, "b v r 3"]
    """Query ray origins in context frame v."""
    directions: Float[Tensor, "b v r 3"]
    """Unit query ray directions in context frame v."""
    coords: Float[Tensor, "b v r 9"]
    """(d, o x d, o) of the query ray in context frame v (the decoder's input)."""
    xy_min: Float[Tensor, "b v r 2"]
    """Near end of the epipolar segment on context v's [0, 1]^2 image plane."""
    xy_max: Float[Tensor, "b v r 2"]
    """Far end of the epipolar segment (vanishing point or last border crossing)."""
    valid: Bool[Tensor, "b v r"]
    """The ray's epipolar segment crosses context image v."""
    sample_grid: Float[Tensor, "b v r s 2"]
    """Samples in grid_sample units of context v (the official ``pixel_val``)."""
    sample_xy: Float[Tensor, "b v r s 2"]
    """Samples in pixels of context v (x = column, integer pixel centres, as the intrinsics)."""
    sample_directions: Float[Tensor, "b v r s 3"]
    """Unit direction of context camera v's ray through each sample, in frame v."""
    points_local: Float[Tensor, "b v r s 3"]
    """Point of the query ray closest to each sample's camera ray, in frame v."""
    distances: Float[Tensor, "b v r s"]
    """Distance from the query origin to that point (non-finite -> ``FAR_DISTANCE``)."""
    points_in_other: Float[Tensor, "b v r s 3"]
    """The same points in the frame of the other context view."""
    other_grid: Float[Tensor, "b v r s 2"]
    """The same points projected into the other context image (grid units, align_corners=True)."""
    local_geometry: Float[Tensor, "b v r s 16"]
    """The geometric query input: sample ray (3), zeros (3), query direction (3),
    tanh(t / 10^i) for i = 0..3 (4), query origin (3)."""


def apply_transform(
    matrices: Float[Tensor, "*#batch 4 4"], vectors: Float[Tensor, "*#batch 3"], w: float
) -> Float[Tensor, "*batch 3"]:
    """4x4 transforms of points (w = 1) or directions (w = 0), elementwise: a ray's result
    does not depend on how many rays are rendered with it (a batched matrix product may
    round differently per batch size, which the ill-conditioned sample points amplify)."""
    x, y, z = vectors.unbind(-1)
    m = matrices
    rows = [m[..., i, 0] * x + m[..., i, 1] * y + m[..., i, 2] * z + m[..., i, 3] * w for i in range(3)]
    return torch.stack(rows, dim=-1)


def other_view(values: Tensor) -> Tensor:
    """[b, v, ...] -> the same values of the other of the two context views."""
    return values.flip(1)


def ray_geometry(
    context_c2w: Float[Tensor, "b v 4 4"],
    context_intrinsics: Float[Tensor, "b v 3 3"],
    origins: Float[Tensor, "b r 3"],
    directions: Float[Tensor, "b r 3"],
    image_size: int,
    num_samples: int,
) -> RayGeometry:
    """The epipolar samples of the world rays (``origins``, unit ``directions``) in both
    context views (OpenCV cam2world; intrinsics in integer-centre pixels of the square
    ``image_size`` image) and the per-sample geometry the renderer's attention uses."""
    if context_c2w.shape[1] != 2:
        raise ValueError(f"the cross-attention renderer takes two context views, got {context_c2w.shape[1]}")
    world_to_camera = torch.linalg.inv(context_c2w)[:, :, None]  # b v 1 4 4
    o = apply_transform(world_to_camera, origins[:, None], 1.0)
    d = apply_transform(world_to_camera, directions[:, None], 0.0)
    coords = torch.cat((d, torch.cross(o, d, dim=-1), o), dim=-1)

    k = context_intrinsics[:, :, None]  # b v 1 3 3
    segment = project_ray_to_image(o, d, widebaseline_normalize_intrinsics(k, image_size))
    # Rays that miss the image get ends at the image centre (non-finite -> 0 in grid units).
    grid_min = widebaseline_plane_to_grid(segment.xy_min).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    grid_max = widebaseline_plane_to_grid(segment.xy_max).nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)
    grid = image_plane_samples(grid_min, grid_max, num_samples)  # b v r s 2
    sample_xy = widebaseline_grid_to_plane(grid) * image_size  # the inverse of normalising K by the side

    # Each sample's camera ray, through the sample unprojected in the align_corners=True
    # convention (as officially; the features are read half a pixel away).
    pixels = widebaseline_grid_to_pixels(grid, image_size)
    k = k[:, :, :, None]  # b v 1 1 3 3
    ray = torch.stack(
        (
            (pixels[..., 0] - k[..., 0, 2]) / k[..., 0, 0],
            (pixels[..., 1] - k[..., 1, 2]) / k[..., 1, 1],
            torch.ones_like(pixels[..., 0]),
        ),
        dim=-1,
    )
    points = closest_point_on_ray(o[..., None, :], d[..., None, :], torch.zeros_like(ray), ray)
    distances = (points - o[..., None, :]).norm(dim=-1)
    distances = torch.where(distances.isfinite(), distances, FAR_DISTANCE)

    # Into the other context's frame and image.
    relative = torch.linalg.inv(other_view(context_c2w)) @ context_c2w  # b v 4 4
    points_in_other = apply_transform(relative[:, :, None, None], points, 1.0)
    k_other = other_view(context_intrinsics)[:, :, None, None]
    projected = apply_transform(F.pad(k_other, (0, 1, 0, 1)), points_in_other, 0.0)
    other_pixels = projected[..., :2] / (projected[..., 2:] + 1e-12)
    other_grid = widebaseline_pixels_to_grid(other_pixels, image_size)

    unit_ray = ray / ray.norm(dim=-1, keepdim=True)
    scales = torch.tensor([1.0, 10.0, 100.0, 1000.0], dtype=distances.dtype, device=distances.device)
    s = num_samples
    local = torch.cat(
        (
            unit_ray,
            torch.zeros_like(unit_ray),
            rearrange(d, "b v r c -> b v r 1 c").expand(-1, -1, -1, s, -1),
            torch.tanh(distances[..., None] / scales),
            rearrange(o, "b v r c -> b v r 1 c").expand(-1, -1, -1, s, -1),
        ),
        dim=-1,
    )
    return RayGeometry(
        origins=o,
        directions=d,
        coords=coords,
        xy_min=segment.xy_min,
        xy_max=segment.xy_max,
        valid=segment.overlaps_image,
        sample_grid=grid,
        sample_xy=sample_xy,
        sample_directions=unit_ray,
        points_local=points,
        distances=distances,
        points_in_other=points_in_other,
        other_grid=other_grid,
        local_geometry=local,
    )


def pixel_rays(
    uv: Float[Tensor, "*batch 2"], c2w: Float[Tensor, "*#batch 4 4"], intrinsics: Float[Tensor, "*#batch 3 3"]
) -> tuple[Float[Tensor, "*batch 3"], Float[Tensor, "*batch 3"]]:
    """World rays (origins, unit directions) through pixels ``uv`` (x = column, integer pixel
    centres, as the intrinsics) of OpenCV cameras: normalise(R ((u - cx) / fx, (v - cy) / fy, 1))."""
    camera = torch.stack(
        (
            (uv[..., 0] - intrinsics[..., 0, 2]) / intrinsics[..., 0, 0],
            (uv[..., 1] - intrinsics[..., 1, 2]) / intrinsics[..., 1, 1],
            torch.ones_like(uv[..., 0]),
        ),
        dim=-1,
    )
    directions = apply_transform(c2w, camera, 0.0)
    directions = directions / directions.norm(dim=-1, keepdim=True)
    return c2w[..., :3, 3].broadcast_to(directions.shape), directions
