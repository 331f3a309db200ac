"""Training losses beside the rendering loss.

``cross_view_photometric_loss``: each context view's predicted depth, used to warp the
other context photos onto it, should reproduce it (the self-supervised stereo loss of
Godard et al., Monodepth, CVPR 2017: SSIM and L1 mixed 0.85 / 0.15, with the per-pixel
minimum over source views of Monodepth2). pixelSplat learns depth only through the
rendered targets, where a wrong depth in one view is partly hidden by the other view's
Gaussians; this loss asks each view's depth to agree with the other photo directly, which
is what makes the two views' Gaussians land on one surface.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.geometry import (
    pixel_centers,
    project_camera_points,
    relative_disparity_to_depth,
    transform,
    world_rays,
)


def expected_depth(
    pdf: Float[Tensor, "*batch bucket"], offsets: Float[Tensor, "*batch bucket"], near: Tensor, far: Tensor
) -> Float[Tensor, "*batch"]:
    """Depth (distance along the unit ray) at the distribution's mean relative disparity
    (buckets uniform in disparity, each at its in-bucket offset): differentiable in both."""
    buckets = pdf.shape[-1]
    index = torch.arange(buckets, device=pdf.device, dtype=pdf.dtype)
    relative = ((index + offsets) * pdf).sum(dim=-1) / (buckets * pdf.sum(dim=-1).clamp(min=1e-8))
    return relative_disparity_to_depth(relative, near, far)


def _ssim_distance(x: Float[Tensor, "n c h w"], y: Float[Tensor, "n c h w"]) -> Float[Tensor, "n c h w"]:
    """(1 - SSIM) / 2 over 3x3 windows (reflection-padded), per pixel."""
    x, y = F.pad(x, (1, 1, 1, 1), mode="reflect"), F.pad(y, (1, 1, 1, 1), mode="reflect")
    mu_x, mu_y = F.avg_pool2d(x, 3, 1), F.avg_pool2d(y, 3, 1)
    var_x = F.avg_pool2d(x * x, 3, 1) - mu_x**2
    var_y = F.avg_pool2d(y * y, 3, 1) - mu_y**2
    cov = F.avg_pool2d(x * y, 3, 1) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    ssim = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return ((1 - ssim) / 2).clamp(0, 1)


def cross_view_photometric_loss(
    images: Float[Tensor, "batch view 3 height width"],
    extrinsics: Float[Tensor, "batch view 4 4"],
    intrinsics: Float[Tensor, "batch view 3 3"],
    near: Float[Tensor, "batch view"],
    far: Float[Tensor, "batch view"],
    depth_pdf: Float[Tensor, "batch view ray surface bucket"],
    depth_offset: Float[Tensor, "batch view ray surface bucket"],
    ssim_weight: float = 0.85,
) -> Float[Tensor, ""]:
    """Mean photometric error of every context view against the other views warped onto it
    by its expected depth (first surface); pixels no other view sees are left out."""
    _b, v, _, h, w = images.shape
    if v < 2:
        return images.new_zeros(())
    depth = expected_depth(depth_pdf[..., 0, :], depth_offset[..., 0, :], near[..., None], far[..., None])
    depth = rearrange(depth, "b v (h w) -> b v h w", h=h, w=w)
    xy = pixel_centers(h, w, images.device, images.dtype)
    errors, seen = [], []
    for view in range(v):
        origins, directions = world_rays(xy, extrinsics[:, view, None, None], intrinsics[:, view, None, None])
        points = origins + directions * depth[:, view, ..., None]  # b h w 3
        target = images[:, view]
        view_errors, view_seen = [], []
        for other in range(v):
            if other == view:
                continue
            camera = transform(torch.linalg.inv(extrinsics[:, other, None, None]), points, 1.0)
            uv = project_camera_points(camera, intrinsics[:, other, None, None])
            inside = (camera[..., 2] > 0) & (uv >= 0).all(dim=-1) & (uv <= 1).all(dim=-1)
            warped = F.grid_sample(
                images[:, other], uv * 2 - 1, mode="bilinear", padding_mode="border", align_corners=False
            )
            error = ssim_weight * _ssim_distance(warped, target) + (1 - ssim_weight) * (warped - target).abs()
            error = error.mean(dim=1)  # b h w
            view_errors.append(torch.where(inside, error, torch.full_like(error, float("inf"))))
            view_seen.append(inside)
        errors.append(torch.stack(view_errors).min(dim=0).values)
        seen.append(torch.stack(view_seen).any(dim=0))
    error, mask = torch.stack(errors, dim=1), torch.stack(seen, dim=1)
    if not bool(mask.any()):
        return images.new_zeros(())
    return error[mask].mean()
