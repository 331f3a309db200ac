"""EWA projection of 3D Gaussians to pixels, with gsplat 1.4.0's conventions.

This mirrors ``fully_fused_projection`` (pinhole camera, classic mode, ``packed=False``):

* world -> camera with the OpenCV world-to-camera ``viewmats``;
* culled (``radii == 0``) when ``depth < near_plane`` or ``depth > far_plane``;
* the Jacobian uses the camera-space position clamped to 1.3x the field of view
  (``x / z`` limited to ``[-cx / fx - 0.3 w / (2 fx), (w - cx) / fx + 0.3 w / (2 fx)]``),
  while the projected mean uses the unclamped position; the intrinsics' skew is ignored;
* ``eps2d`` is added to the diagonal of the 2D covariance (no compensation);
* ``radius = ceil(3 sqrt(b + sqrt(max(0.01, b^2 - det))))`` with ``b`` half the trace;
  culled when ``radius <= radius_clip`` or the ``radius`` square misses the image.

Everything is differentiable with autograd. Entries of culled Gaussians are zero in
``means2d``, ``conics`` and ``cov2d`` (gsplat leaves them unspecified), so they carry no
gradient and no NaNs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

__all__ = ["Projection", "project_gaussians", "quat_scale_to_matrix", "quaternion_to_matrix"]


@dataclass
class Projection:
    """Per camera and Gaussian projection results (``C`` cameras, ``N`` Gaussians)."""

    radii: Int[Tensor, "C N"]  # int32 pixel radius, 0 = culled
    means2d: Float[Tensor, "C N 2"]  # projected centres, pixels
    depths: Float[Tensor, "C N"]  # camera-space z
    conics: Float[Tensor, "C N 3"]  # inverse dilated 2D covariance (xx, xy, yy)
    cov2d: Float[Tensor, "C N 3"]  # dilated 2D covariance (xx, xy, yy)
    valid: Bool[Tensor, "C N"]  # radii > 0


def quaternion_to_matrix(quats: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """wxyz quaternion (any norm) -> rotation matrix, as gsplat interprets ``quats``."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    return torch.stack(
        (
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ),
        dim=-1,
    ).unflatten(-1, (3, 3))


def quat_scale_to_matrix(
    quats: Float[Tensor, "*batch 4"], scales: Float[Tensor, "*batch 3"]
) -> Float[Tensor, "*batch 3 3"]:
    """``R(q) diag(s)``, a square root of the covariance ``R S S^T R^T`` (wxyz quats, any norm)."""
    return quaternion_to_matrix(quats) * scales[..., None, :]


def project_gaussians(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
) -> Projection:
    """Project Gaussians into every camera (see the module docstring for the rules)."""
    rot_cam = viewmats[:, :3, :3]  # [C, 3, 3]
    t_cam = viewmats[:, :3, 3]  # [C, 3]
    means_c = torch.einsum("cij,nj->cni", rot_cam, means) + t_cam[:, None, :]  # [C, N, 3]
    x, y, z = means_c.unbind(-1)
    depth_ok = (z >= near_plane) & (z <= far_plane)
    rz = 1.0 / torch.where(depth_ok, z, torch.ones_like(z))  # reciprocal depth

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    half_tan_x, half_tan_y = 0.3 * (0.5 * width / fx), 0.3 * (0.5 * height / fy)
    # x / z and y / z clamped to 1.3x the field of view (for the Jacobian only)
    ux = torch.minimum(torch.maximum(x * rz, -(cx / fx + half_tan_x)), (width - cx) / fx + half_tan_x)
    uy = torch.minimum(torch.maximum(y * rz, -(cy / fy + half_tan_y)), (height - cy) / fy + half_tan_y)

    # Sigma_2d = J W Sigma W^T J^T = (J W M)(J W M)^T with M = R diag(s); the rows of J W M
    # are fx/z (row0 - ux row2) and fy/z (row1 - uy row2) of A = W M.
    a = torch.einsum("cij,njk->cnik", rot_cam, quat_scale_to_matrix(quats, scales))  # [C, N, 3, 3]
    row_x = (fx * rz)[..., None] * (a[..., 0, :] - ux[..., None] * a[..., 2, :])
    row_y = (fy * rz)[..., None] * (a[..., 1, :] - uy[..., None] * a[..., 2, :])
    cov_xx = (row_x * row_x).sum(-1) + eps2d
    cov_xy = (row_x * row_y).sum(-1)
    cov_yy = (row_y * row_y).sum(-1) + eps2d
    det = cov_xx * cov_yy - cov_xy * cov_xy

    means2d = torch.stack((fx * x * rz + cx, fy * y * rz + cy), dim=-1)
    with torch.no_grad():
        half_trace = 0.5 * (cov_xx + cov_yy)
        v1 = half_trace + torch.sqrt(torch.clamp(half_trace * half_trace - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))
        mx, my = means2d.unbind(-1)
        valid = (
            depth_ok
            & (det > 0)
            & (radius > radius_clip)
            & (mx + radius > 0)
            & (mx - radius < width)
            & (my + radius > 0)
            & (my - radius < height)
        )
        radii = torch.where(valid, radius, torch.zeros_like(radius)).to(torch.int32)

    inv_det = 1.0 / torch.where(valid, det, torch.ones_like(det))
    zero = torch.zeros((), dtype=means.dtype, device=means.device)
    conics = torch.where(valid[..., None], torch.stack((cov_yy, -cov_xy, cov_xx), -1) * inv_det[..., None], zero)
    cov2d = torch.where(valid[..., None], torch.stack((cov_xx, cov_xy, cov_yy), -1), zero)
    means2d = torch.where(valid[..., None], means2d, zero)
    return Projection(radii=radii, means2d=means2d, depths=z, conics=conics, cov2d=cov2d, valid=valid)
