"""Camera geometry in pixelSplat's conventions.

OpenCV camera-to-world extrinsics (camera looks along +z), intrinsics normalised so that
the image spans [0, 1] x [0, 1] (pixel centres at (i + 0.5) / size). "Depth" along a ray
means distance along the *unit* ray direction, as in the official code.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import torch
from einops import einsum
from jaxtyping import Float
from torch import Tensor


def pixel_centers(
    height: int, width: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32
) -> Float[Tensor, "height width 2"]:
    """Normalised (x, y) coordinates of pixel centres, (col + 0.5) / width, (row + 0.5) / height."""
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_x, grid_y), dim=-1)


def camera_directions(
    xy: Float[Tensor, "*#batch 2"], intrinsics: Float[Tensor, "*#batch 3 3"]
) -> Float[Tensor, "*batch 3"]:
    """Unit camera-space ray directions through normalised image points."""
    homogeneous = torch.cat((xy, torch.ones_like(xy[..., :1])), dim=-1)
    directions = einsum(intrinsics.inverse(), homogeneous, "... i j, ... j -> ... i")
    return directions / directions.norm(dim=-1, keepdim=True)


def transform(
    matrices: Float[Tensor, "*#batch 4 4"], vectors: Float[Tensor, "*#batch 3"], w: float
) -> Float[Tensor, "*batch 3"]:
    """Apply 4x4 transforms to points (w = 1) or directions (w = 0).

    Homogeneous 4x4 products (rather than R v + t) keep the arithmetic — and float32
    rounding — identical to the official code, whose epipolar depths are sensitive to it.
    """
    homogeneous = torch.cat((vectors, torch.full_like(vectors[..., :1], w)), dim=-1)
    return einsum(matrices, homogeneous, "... i j, ... j -> ... i")[..., :3]


def world_rays(
    xy: Float[Tensor, "*#batch 2"],
    extrinsics: Float[Tensor, "*#batch 4 4"],
    intrinsics: Float[Tensor, "*#batch 3 3"],
) -> tuple[Float[Tensor, "*batch 3"], Float[Tensor, "*batch 3"]]:
    """(origins, unit directions) of the world-space rays through normalised image points."""
    directions = transform(extrinsics, camera_directions(xy, intrinsics), 0.0)
    origins = extrinsics[..., :3, 3].broadcast_to(directions.shape)
    return origins, directions


def project_camera_points(
    points: Float[Tensor, "*#batch 3"],
    intrinsics: Float[Tensor, "*#batch 3 3"],
    epsilon: float = torch.finfo(torch.float32).eps,
    infinity: float = 1e8,
) -> Float[Tensor, "*batch 2"]:
    """Pinhole projection of camera-space points to normalised image coordinates."""
    points = points / (points[..., 2:] + epsilon)
    points = points.nan_to_num(posinf=infinity, neginf=-infinity)
    return einsum(intrinsics, points, "... i j, ... j -> ... i")[..., :2]


def relative_disparity_to_depth(
    relative_disparity: Float[Tensor, "*#batch"],
    near: Float[Tensor, "*#batch"],
    far: Float[Tensor, "*#batch"],
    eps: float = 1e-10,
) -> Float[Tensor, "*batch"]:
    """0 -> near, 1 -> far, linear in disparity in between."""
    disparity_near = 1 / (near + eps)
    disparity_far = 1 / (far + eps)
    return 1 / ((1 - relative_disparity) * (disparity_near - disparity_far) + disparity_far + eps)


def depth_to_relative_disparity(
    depth: Float[Tensor, "*#batch"],
    near: Float[Tensor, "*#batch"],
    far: Float[Tensor, "*#batch"],
    eps: float = 1e-10,
) -> Float[Tensor, "*batch"]:
    """Inverse of ``relative_disparity_to_depth``."""
    disparity_near = 1 / (near + eps)
    disparity_far = 1 / (far + eps)
    disparity = 1 / (depth + eps)
    return 1 - (disparity - disparity_far) / (disparity_near - disparity_far + eps)


def pixel_footprint(
    intrinsics: Float[Tensor, "*#batch 3 3"], image_shape: tuple[int, int]
) -> Float[Tensor, "*#batch 2"]:
    """Width and height of one pixel at depth 1 (camera units), per axis."""
    h, w = image_shape
    pixel_size = torch.tensor((1 / w, 1 / h), dtype=intrinsics.dtype, device=intrinsics.device)
    return einsum(intrinsics[..., :2, :2].inverse(), pixel_size, "... i j, j -> ... i")


def ray_distance_to_closest_point(
    origins: Float[Tensor, "*#batch 3"],
    directions: Float[Tensor, "*#batch 3"],
    other_origins: Float[Tensor, "*#batch 3"],
    other_directions: Float[Tensor, "*#batch 3"],
    parallel_eps: float = 1e-5,
    infinity: float = 1e10,
) -> Float[Tensor, "*batch"]:
    """Distance from ``origins`` to the point closest (least squares) to both rays.

    Rays with nearly parallel unit directions (cosine > 1 - parallel_eps) get a point at
    ``infinity`` in every coordinate. This is the official epipolar depth computation,
    kept operation for operation (normal equations, ``torch.linalg.lstsq``): for distant
    samples the 3x3 system is badly conditioned, so its float32 rounding is part of what
    trained official weights saw.
    """
    shape = torch.broadcast_shapes(origins.shape, directions.shape, other_origins.shape, other_directions.shape)
    ray_origins = torch.stack((origins.broadcast_to(shape), other_origins.broadcast_to(shape)))
    ray_directions = torch.stack((directions.broadcast_to(shape), other_directions.broadcast_to(shape)))
    parallel = einsum(ray_directions[0], ray_directions[1], "... xyz, ... xyz -> ...") > 1 - parallel_eps

    flat_origins = ray_origins.reshape(2, -1, 3)
    flat_directions = ray_directions.reshape(2, -1, 3)
    eye = torch.eye(3, dtype=origins.dtype, device=origins.device)
    n = einsum(flat_directions, flat_directions, "r b i, r b j -> r b i j") - eye
    lhs = n.sum(dim=0)
    rhs = einsum(n, flat_origins, "r b i j, r b j -> r b i").sum(dim=0)
    # Parallel rays: a harmless system in place of the singular one (result replaced below).
    flat_parallel = parallel.reshape(-1)
    lhs = torch.where(flat_parallel[:, None, None], eye, lhs)
    point = _lstsq(lhs, rhs).reshape(shape)
    point = torch.where(parallel[..., None], torch.full_like(point, infinity), point)
    return (point - origins).norm(dim=-1)


_POOL: ThreadPoolExecutor | None = None


def _lstsq(lhs: Float[Tensor, "n 3 3"], rhs: Float[Tensor, "n 3"]) -> Float[Tensor, "n 3"]:
    """``torch.linalg.lstsq`` on many small systems. PyTorch solves them one after the
    other on one core; split the batch over threads (same per-system results)."""
    workers = torch.get_num_threads()
    if workers <= 1 or lhs.shape[0] < 8192 or lhs.device.type != "cpu":
        return torch.linalg.lstsq(lhs, rhs).solution
    global _POOL
    if _POOL is None or _POOL._max_workers < workers:
        _POOL = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pixelsplat-lstsq")
    parts = _POOL.map(
        lambda pair: torch.linalg.lstsq(*pair).solution, zip(lhs.chunk(workers), rhs.chunk(workers), strict=True)
    )
    return torch.cat(list(parts))
