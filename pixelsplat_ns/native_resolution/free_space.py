"""Free space: a context photo shows that the space between its camera and the surface it
sees is empty. Whatever lies there covers that photo when its camera renders the scene again.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from pixelsplat_ns.geometry import project_camera_points, transform


def surface_at(
    points: Float[Tensor, "*batch 3"],
    depths: Float[Tensor, "height width"],
    extrinsics: Float[Tensor, "4 4"],
    intrinsics: Float[Tensor, "3 3"],
) -> tuple[Float[Tensor, " *batch"], Float[Tensor, " *batch"], Bool[Tensor, " *batch"]]:
    """(each point's distance from the camera, the surface ``depths`` holds at the pixel it
    projects to, whether it is in front of the camera and inside its image)."""
    height, width = depths.shape
    camera_points = transform(torch.linalg.inv(extrinsics), points, 1.0)
    xy = project_camera_points(camera_points, intrinsics)
    col, row = (xy[..., 0] * width).floor(), (xy[..., 1] * height).floor()
    inside = (camera_points[..., 2] > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    surface = depths[row.clamp(0, height - 1).long(), col.clamp(0, width - 1).long()]
    return camera_points.norm(dim=-1), surface, inside


def in_free_space(
    points: Float[Tensor, "*batch 3"],
    depths: Float[Tensor, "height width"],
    extrinsics: Float[Tensor, "4 4"],
    intrinsics: Float[Tensor, "3 3"],
    factor: float = 1.0,
    neighbourhood: Literal["farthest", "nearest"] = "farthest",
) -> Bool[Tensor, " *batch"]:
    """Points the camera's photo sees through: in front of the camera, inside its image, and
    nearer than ``factor`` times its surface (``depths``: distance along the ray of every pixel of
    the grid the normalised ``intrinsics`` describe; ``extrinsics`` camera-to-world) at the pixel
    they project to, taken as the farthest (or the nearest) surface of the 3x3 pixels around it:
    at a foreground object's outline, "farthest" counts a point just behind it as in front of
    the background there, "nearest" as behind the object."""
    sign = 1.0 if neighbourhood == "farthest" else -1.0
    surfaces = sign * F.max_pool2d(sign * depths[None, None], kernel_size=3, stride=1, padding=1)[0, 0]
    distance, surface, inside = surface_at(points, surfaces, extrinsics, intrinsics)
    return inside & (distance < factor * surface)
