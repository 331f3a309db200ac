"""A backdrop for the sharp native-resolution Gaussians.

Native Gaussians are small (a fraction of their pixel's footprint), so that each context
camera gets its photo back; a novel camera sees gaps between them wherever a surface is
stretched or uncovered. The encoder's own Gaussians (one per encoder pixel, several pixels
wide) fill those gaps: each is moved back along its own camera's ray, which leaves how its
camera sees it unchanged in direction, to ``factor`` times its depth and then farther until the
other context photos do not see through it (it lies behind their surfaces by that factor).
Behind every native surface, a backdrop Gaussian shows only through gaps.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.cameras import ContextViews
from pixelsplat_ns.gaussians import Gaussians

from .free_space import in_free_space


def backdrop_gaussians(
    gaussians: Gaussians,
    views: ContextViews,
    surfaces: Float[Tensor, "batch view height width"],
    factor: float = 2.0,
    steps: int = 48,
    reach: float = 10.0,
) -> Gaussians:
    """The encoder's Gaussians (ordered by view; batch of one), each moved back along its own
    camera's ray to the first of ``steps`` geometric steps from ``factor`` to ``reach * factor``
    times its distance at which it is ``factor`` times farther than the nearest surface around
    where it lands in every other context camera (``surfaces``: distance along the ray on the
    native grid, ``views.full_intrinsics``), or to ``factor`` times when there is none (measured:
    better novel views than the farthest step, the same at the context cameras). Shapes and
    colours are kept: moved back, a backdrop Gaussian covers less of the image, which the gaps
    it fills need."""
    if factor < 1:
        raise ValueError(f"a backdrop lies behind the surfaces: factor must be at least 1, got {factor}")
    if gaussians.means.shape[0] != 1 or views.full_intrinsics is None:
        raise ValueError("backdrop_gaussians takes a batch of one with native-resolution views")
    num_views = views.extrinsics.shape[1]
    per_view = gaussians.means.shape[1] // num_views
    multipliers = torch.logspace(0, math.log10(reach), steps, device=gaussians.means.device) * factor
    means = gaussians.means.clone()
    for view in range(num_views):
        block = slice(view * per_view, (view + 1) * per_view)
        origin = views.extrinsics[0, view, :3, 3]
        offset = gaussians.means[0, block] - origin
        candidates = origin + offset[:, None] * multipliers[:, None]  # [n steps 3]
        blocked = torch.zeros(candidates.shape[:2], dtype=torch.bool, device=candidates.device)
        # The other cameras only (checking its own too lowered novel views: 16.11 against 16.14 dB on
        # fern and castle-p19 pairs): its own camera sees it at factor times the depth of its pixel.
        for camera in (camera for camera in range(num_views) if camera != view):
            blocked |= in_free_space(
                candidates, surfaces[0, camera], views.extrinsics[0, camera], views.full_intrinsics[0, camera], factor,
                "nearest",
            )  # fmt: skip
        free = ~blocked
        chosen = torch.where(free.any(dim=1), multipliers[free.float().argmax(dim=1)], factor)
        means[0, block] = origin + offset * chosen[:, None]
    return dataclasses.replace(gaussians, means=means)
