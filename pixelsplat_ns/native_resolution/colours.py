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

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int64
from torch import Tensor

from pixelsplat_ns.gaussians import SH_C1
from pixelsplat_ns.geometry import project_camera_points, transform
from pixelsplat_ns.rendering.sh import SH_C0

from .free_space import in_free_space


def _sample(image: Float[Tensor, "3 height width"], xy: Float[Tensor, "n 2"]) -> Float[Tensor, "n 3"]:
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
    other_colours = colours.clone()
    own_direction = torch.empty_like(means)
    other_direction = torch.empty_like(means)
    for view in range(2):
        mine, other = source_views == view, 1 - view
        points = means[mine]
        xy = project_camera_points(transform(torch.linalg.inv(extrinsics[other]), points, 1.0), intrinsics[other])
        seen = in_free_space(points, depths[other], extrinsics[other], intrinsics[other], 1 + occlusion_margin)
        sampled = _sample(images[other], xy.clamp(0, 1))
        other_colours[mine] = torch.where(seen[:, None], sampled, colours[mine])
        own_direction[mine] = F.normalize(points - extrinsics[view, :3, 3], dim=-1)
        other_direction[mine] = F.normalize(points - extrinsics[other, :3, 3], dim=-1)

    # colour(d) = mean + G . d with G = (a - b) delta / (|delta|^2 + epsilon), delta = d_own - d_other:
    # colour(d_own) = a and colour(d_other) = b up to epsilon, linear in between.
    delta = own_direction - other_direction
    weights = delta / (delta.square().sum(-1, keepdim=True) + epsilon)
    gradient = (colours - other_colours)[:, :, None] * weights[:, None]  # [n rgb xyz]
    mean = (colours + other_colours) / 2 - (gradient * ((own_direction + other_direction) / 2)[:, None]).sum(-1)
    # Official basis: B0 = C0, (B1, B2, B3) = C1 (-x, y, -z); colour = 0.5 + sum c_k B_k.
    linear = gradient * gradient.new_tensor((-1.0, 1.0, -1.0)) / SH_C1
    return torch.cat((((mean - 0.5) / SH_C0)[..., None], linear), dim=-1)
