"""Dropping Gaussians no camera can see, before they become splatfacto's parameters."""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from pixelsplat_ns.gaussians import Gaussians

# gsplat skips a Gaussian's contribution to a pixel below this alpha, so a Gaussian whose
# opacity is under it never shows anywhere.
MIN_VISIBLE_OPACITY = 1.0 / 255.0


def visible_mask(
    opacities: Float[Tensor, " gaussian"], depths: Float[Tensor, " gaussian"], near: Float[Tensor, " gaussian"]
) -> Bool[Tensor, " gaussian"]:
    """Gaussians that can show: opacity at least gsplat's 1/255 and in front of their own
    camera's near plane (``depths`` along their rays, finite)."""
    return (opacities >= MIN_VISIBLE_OPACITY) & torch.isfinite(depths) & (depths >= near)


def keep_gaussians(gaussians: Gaussians, keep: Bool[Tensor, "batch gaussian"]) -> Gaussians:
    """The Gaussians where ``keep`` holds (batch of one: counts differ between elements)."""
    if gaussians.means.shape[0] != 1:
        raise ValueError(
            f"pruning keeps different counts per batch element; give a batch of 1, got {gaussians.means.shape[0]}"
        )
    mask = keep[0]

    def select(value: Tensor | None) -> Tensor | None:
        return None if value is None else value[:, mask]

    return Gaussians(
        means=gaussians.means[:, mask],
        covariances=gaussians.covariances[:, mask],
        harmonics=gaussians.harmonics[:, mask],
        opacities=gaussians.opacities[:, mask],
        scales=select(gaussians.scales),
        rotations=select(gaussians.rotations),
    )
