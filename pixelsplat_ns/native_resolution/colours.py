"""View-dependent colours from both context photos.

A native Gaussian takes its colour from its own pixel, so rendered from the *other* context
camera it shows the wrong colour wherever the two views' depths disagree, and those Gaussians
cover that camera's photo. Each Gaussian the other camera sees (in its image, not behind the
surface it sees) is instead given the colour that photo shows where it projects, as seen from
that camera's direction: a degree-1 spherical harmonic that returns its own pixel's colour
towards its own camera and the other photo's towards the other camera (exactly, up to a small
regulariser for nearly parallel directions), and their blend in between. Rendered from either
context camera, every visible Gaussian then carries that camera's photo.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float, Int64
from torch import Tensor

from pixelsplat_ns.gaussians import SH_C1
from pixelsplat_ns.geometry import project_camera_points, transform
from pixelsplat_ns.rendering.sh import SH_C0

from .free_space import in_free_space


def sample_image(image: Float[Tensor, "3 height width"], xy: Float[Tensor, "n 2"]) -> Float[Tensor, "n 3"]:
    """Bilinear colour at normalised image points (pixel-centre convention)."""
    grid = (2 * xy - 1).to(image.dtype)[None, :, None, :]
    return F.grid_sample(image[None], grid, mode="bilinear", padding_mode="border", align_corners=False)[0, :, :, 0].T


def two_view_harmonics(
    means: Float[Tensor, "gaussian 3"],
    source_views: Int64[Tensor, " gaussian"],
    colours: Float[Tensor, "gaussian 3"],
    images: Float[Tensor, "2 3 height width"],
    depths: Float[Tensor, "2 height width"],
    extrinsics: Float[Tensor, "2 4 4"],
    intrinsics: Float[Tensor, "2 3 3"],
    occlusion_margin: float = 0.05,
    epsilon: float = 1e-4,
) -> Float[Tensor, "gaussian 3 4"]:
    """Degree-1 SH coefficients (the official basis, world frame) that give each Gaussian its
    own colour seen from its camera and the other photo's colour seen from the other camera.

    ``depths``: each view's surface (distance along the ray of every pixel of ``images``); a
    Gaussian farther from the other camera than ``1 + occlusion_margin`` times the farthest
    surface of the 3x3 pixels it projects to is hidden there and keeps its own colour from
    every direction. ``epsilon`` regularises the directional term for directions closer than
    about sqrt(epsilon) radians (far points): they take the two colours' mean there. Beyond the
    two cameras the colour keeps changing linearly (clamped at 0 by the renderer): far outside
    the pair, a Gaussian whose two photos disagree drifts past both colours.
    """
    seen_by_other = other_view(means, source_views, images, depths, extrinsics, intrinsics, occlusion_margin)
    other_colours = torch.where(seen_by_other.seen[:, None], seen_by_other.colours, colours)
    return harmonics_from_two_colours(
        colours, other_colours, seen_by_other.own_directions, seen_by_other.other_directions, epsilon
    )


@dataclass
class OtherView:
    """How the other context camera of a pair sees each Gaussian."""

    colours: Float[Tensor, "gaussian 3"]
    """The other photo's colour where the Gaussian projects (bilinear)."""
    seen: Bool[Tensor, " gaussian"]
    """Whether the other camera sees it (in its image, not behind the surface it shows there)."""
    xy: Float[Tensor, "gaussian 2"]
    """Where it projects in the other camera (normalised image coordinates)."""
    own_directions: Float[Tensor, "gaussian 3"]
    """Unit direction from its own camera to it."""
    other_directions: Float[Tensor, "gaussian 3"]
    """Unit direction from the other camera to it."""


def other_view(
    means: Float[Tensor, "gaussian 3"],
    source_views: Int64[Tensor, " gaussian"],
    images: Float[Tensor, "2 3 height width"],
    depths: Float[Tensor, "2 height width"],
    extrinsics: Float[Tensor, "2 4 4"],
    intrinsics: Float[Tensor, "2 3 3"],
    occlusion_margin: float = 0.05,
) -> OtherView:
    """Each Gaussian (from context view ``source_views``) as the other camera of the pair sees
    it (``two_view_harmonics`` documents the arguments)."""
    result = OtherView(
        colours=means.new_zeros(means.shape),
        seen=torch.zeros(means.shape[0], dtype=torch.bool, device=means.device),
        xy=means.new_zeros(means.shape[0], 2),
        own_directions=torch.empty_like(means),
        other_directions=torch.empty_like(means),
    )
    for view in range(2):
        mine, other = source_views == view, 1 - view
        points = means[mine]
        xy = project_camera_points(transform(torch.linalg.inv(extrinsics[other]), points, 1.0), intrinsics[other])
        result.xy[mine] = xy
        result.seen[mine] = in_free_space(
            points, depths[other], extrinsics[other], intrinsics[other], 1 + occlusion_margin
        )
        result.colours[mine] = sample_image(images[other], xy.clamp(0, 1))
        result.own_directions[mine] = F.normalize(points - extrinsics[view, :3, 3], dim=-1)
        result.other_directions[mine] = F.normalize(points - extrinsics[other, :3, 3], dim=-1)
    return result


def harmonics_from_two_colours(
    colours: Float[Tensor, "gaussian 3"],
    other_colours: Float[Tensor, "gaussian 3"],
    own_directions: Float[Tensor, "gaussian 3"],
    other_directions: Float[Tensor, "gaussian 3"],
    epsilon: float = 1e-4,
) -> Float[Tensor, "gaussian 3 4"]:
    """Degree-1 SH coefficients (official basis) that show ``colours`` towards
    ``own_directions`` and ``other_colours`` towards ``other_directions`` (``epsilon``: see
    ``two_view_harmonics``)."""
    # colour(d) = mean + G . d with G = (a - b) delta / (|delta|^2 + epsilon), delta = d_own - d_other:
    # colour(d_own) = a and colour(d_other) = b up to epsilon, linear in between.
    delta = own_directions - other_directions
    weights = delta / (delta.square().sum(-1, keepdim=True) + epsilon)
    gradient = (colours - other_colours)[:, :, None] * weights[:, None]  # [n rgb xyz]
    mean = (colours + other_colours) / 2 - (gradient * ((own_directions + other_directions) / 2)[:, None]).sum(-1)
    # Official basis: B0 = C0, (B1, B2, B3) = C1 (-x, y, -z); colour = 0.5 + sum c_k B_k.
    linear = gradient * gradient.new_tensor((-1.0, 1.0, -1.0)) / SH_C1
    return torch.cat((((mean - 0.5) / SH_C0)[..., None], linear), dim=-1)
