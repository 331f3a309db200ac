"""Render encoder Gaussians into pixelSplat-convention cameras (training, evaluation)."""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.cameras import denormalize_intrinsics, opencv_c2w_to_viewmat
from pixelsplat_ns.gaussians import Gaussians, official_to_gsplat_sh
from pixelsplat_ns.rendering import rasterize


def render_views(
    gaussians: Gaussians,
    extrinsics: Float[Tensor, "batch view 4 4"],
    intrinsics: Float[Tensor, "batch view 3 3"],
    image_shape: tuple[int, int],
) -> Float[Tensor, "batch view h w 3"]:
    """Render each batch element's Gaussians into its views (OpenCV camera-to-world,
    normalised intrinsics, black background), colours clamped to [0, 1]."""
    h, w = image_shape
    scales, rotations = gaussians.scales_and_rotations()
    renders = []
    for b in range(gaussians.means.shape[0]):
        colors = official_to_gsplat_sh(gaussians.harmonics[b])  # [n, k, 3]
        image, _, _ = rasterize(
            means=gaussians.means[b],
            quats=rotations[b],
            scales=scales[b],
            opacities=gaussians.opacities[b],
            colors=colors,
            viewmats=opencv_c2w_to_viewmat(extrinsics[b]),
            Ks=denormalize_intrinsics(intrinsics[b], w, h),
            width=w,
            height=h,
            sh_degree=math.isqrt(colors.shape[-2]) - 1,
        )
        renders.append(image.clamp(0, 1))
    return torch.stack(renders)
