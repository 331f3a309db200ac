"""Epipolar sampling: for every ray of every view, points along its epipolar line in each
other view and the depth along the ray each point stands for (the features there are read
by ``attention.EpipolarKeys``)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int64
from torch import Tensor, nn

from ..geometry import pixel_centers, ray_distance_to_closest_point, world_rays
from .lines import project_segments


def other_view_index(num_views: int) -> Int64[Tensor, "view other_view"]:
    """Row v lists the views other than v, in increasing order."""
    views = torch.arange(num_views)
    return torch.stack([views[views != v] for v in range(num_views)]) if num_views > 1 else views[:, None][:, :0]


@dataclass
class EpipolarSampling:
    """Geometry of the epipolar samples (at the transformer's resolution).

    Rays are the pixel centres of the downscaled feature map, row-major. ``xy_*`` are
    normalised image coordinates in the *other* view ``other_views[v, k]``. Samples of
    rays whose segment misses the other image (``valid`` False) sit at (0, 0) and carry
    zero features.
    """

    xy_ray: Float[Tensor, "batch view ray 2"]
    origins: Float[Tensor, "batch view ray 3"]
    directions: Float[Tensor, "batch view ray 3"]
    xy_sample: Float[Tensor, "batch view other_view ray sample 2"]
    xy_sample_near: Float[Tensor, "batch view other_view ray sample 2"]
    xy_sample_far: Float[Tensor, "batch view other_view ray sample 2"]
    valid: Bool[Tensor, "batch view other_view ray"]
    other_views: Int64[Tensor, "view other_view"]
    depths: Float[Tensor, "batch view other_view ray sample"] | None = None
    """Distance along the ray of each sample's 3D point, clipped to [near, far]."""
    shape: tuple[int, int] = (0, 0)
    """(height, width) of the ray grid."""

    def collect(self, values: Tensor) -> Tensor:
        """[batch, view, ...] -> [batch, view, other_view, ...] following ``other_views``."""
        return values[:, self.other_views]


class EpipolarSampler(nn.Module):
    def __init__(self, num_samples: int) -> None:
        super().__init__()
        self.num_samples = num_samples

    def forward(
        self,
        shape: tuple[int, int],
        extrinsics: Float[Tensor, "batch view 4 4"],
        intrinsics: Float[Tensor, "batch view 3 3"],
        near: Float[Tensor, "batch view"],
        far: Float[Tensor, "batch view"],
    ) -> EpipolarSampling:
        b, v = extrinsics.shape[:2]
        h, w = shape
        device = extrinsics.device
        others = other_view_index(v).to(device)

        dtype = extrinsics.dtype
        xy_ray = pixel_centers(h, w, device, dtype).reshape(-1, 2)
        origins, directions = world_rays(xy_ray, extrinsics[:, :, None], intrinsics[:, :, None])

        def collect(values: Tensor) -> Tensor:
            return values[:, others]

        segment = project_segments(
            origins[:, :, None],
            directions[:, :, None],
            collect(extrinsics)[:, :, :, None],
            collect(intrinsics)[:, :, :, None],
            near[:, :, None, None],
            far[:, :, None, None],
        )
        valid = segment.overlaps_image
        xy_min = segment.xy_min.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0) * valid[..., None]
        xy_max = segment.xy_max.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0) * valid[..., None]
        xy_min, xy_max = xy_min[..., None, :], xy_max[..., None, :]

        s = self.num_samples
        fraction = ((torch.arange(s, device=device, dtype=dtype) + 0.5) / s)[:, None]
        half_step = 0.5 / s

        return EpipolarSampling(
            xy_ray=xy_ray.expand(b, v, -1, -1),
            origins=origins,
            directions=directions,
            xy_sample=xy_min + fraction * (xy_max - xy_min),
            xy_sample_near=xy_min + (fraction - half_step) * (xy_max - xy_min),
            xy_sample_far=xy_min + (fraction + half_step) * (xy_max - xy_min),
            valid=valid,
            other_views=others,
            shape=(h, w),
        )

    @staticmethod
    def sample_depths(
        sampling: EpipolarSampling,
        extrinsics: Float[Tensor, "batch view 4 4"],
        intrinsics: Float[Tensor, "batch view 3 3"],
        near: Float[Tensor, "batch view"],
        far: Float[Tensor, "batch view"],
    ) -> Float[Tensor, "batch view other_view ray sample"]:
        """Distance along each ray to the 3D point its samples stand for: the point closest to
        both the ray and the other view's ray through the sample, clipped to [near, far]."""
        other_origins, other_directions = world_rays(
            sampling.xy_sample,
            sampling.collect(extrinsics)[:, :, :, None, None],
            sampling.collect(intrinsics)[:, :, :, None, None],
        )
        depths = ray_distance_to_closest_point(
            sampling.origins[:, :, None, :, None],
            sampling.directions[:, :, None, :, None],
            other_origins,
            other_directions,
        )
        bound = (slice(None), slice(None), None, None, None)
        return depths.maximum(near[bound]).minimum(far[bound])
