"""Render whole target views of an example with the wide-baseline network (evaluation,
validation while pretraining, benchmarks): the pixelSplat-format example in, images out."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.cameras import WideBaselineViews, rays_to_network_frame, widebaseline_examples
from pixelsplat_ns.geometry import pixel_centers, world_rays


def example_views(
    network: torch.nn.Module,
    context_images: Float[Tensor, "batch view 3 h w"],
    context_c2w: Float[Tensor, "batch view 4 4"],
    context_intrinsics: Float[Tensor, "batch view 3 3"],
    target_c2w: Float[Tensor, "batch target 4 4"],
    baseline: float | None = 1.0,
) -> tuple[WideBaselineViews, Float[Tensor, "batch target 4 4"]]:
    """An example's context views in the network's conventions, and its target cameras (OpenCV
    camera-to-world) moved into the same scaled world."""
    views = widebaseline_examples(context_images, context_c2w, context_intrinsics, network.cfg.image_size, baseline)
    c2w = target_c2w.clone()
    c2w[..., :3, 3] = rays_to_network_frame(c2w[..., :3, 3], views.scene_scale[:, None, None])
    return views, c2w


def render_example_targets(
    network: torch.nn.Module,
    context_images: Float[Tensor, "batch view 3 h w"],
    context_c2w: Float[Tensor, "batch view 4 4"],
    context_intrinsics: Float[Tensor, "batch view 3 3"],
    target_c2w: Float[Tensor, "batch target 4 4"],
    target_intrinsics: Float[Tensor, "batch target 3 3"],
    image_shape: tuple[int, int],
    baseline: float | None = 1.0,
    chunk: int = 2048,
    features: list[Tensor] | None = None,
) -> Float[Tensor, "batch target h w 3"]:
    """Every pixel of every target view, in [0, 1] (pixelSplat's example conventions: OpenCV
    camera-to-world, normalised intrinsics). ``chunk`` rays are rendered at a time; the
    context views are encoded once (or ``features`` are used)."""
    views, c2w = example_views(network, context_images, context_c2w, context_intrinsics, target_c2w, baseline)
    z = network.encode(views.images, views.c2w) if features is None else features
    h, w = image_shape
    xy = pixel_centers(h, w, device=c2w.device)
    origins, directions = world_rays(xy[None, None], c2w[:, :, None, None], target_intrinsics[:, :, None, None])
    origins, directions = origins.flatten(1, 3), directions.flatten(1, 3)
    rgb = torch.cat(
        [
            network.render(z, views.c2w, views.intrinsics, origins[:, i : i + chunk], directions[:, i : i + chunk]).rgb
            for i in range(0, origins.shape[1], chunk)
        ],
        dim=1,
    )
    b, t = target_c2w.shape[:2]
    return ((rgb + 1) / 2).clamp(0, 1).reshape(b, t, h, w, 3)
