"""From per-pixel network outputs and sampled depths to world-space Gaussians.

* mean: on the ray through the pixel (shifted within the pixel by a predicted offset) at
  the sampled depth (distance along the unit ray direction);
* covariance: R_c2w R_q S S R_q^T R_c2w^T, where the scales map to
  [scale_min, scale_max] by a sigmoid and are multiplied by the depth and by 0.1 x the
  pixel footprint at depth 1 (summed over x and y) — Gaussians cover about a pixel;
  the quaternion is read (x, y, z, w);
* harmonics: the predicted coefficients times ``sh_mask`` (1 for degree 0,
  0.1 * 0.25^l for degree l), rotated from the camera to the world frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from ..gaussians import matrix_to_quaternion
from ..geometry import pixel_footprint, world_rays
from .config import GaussianAdapterConfig
from .sh_rotation import rotate_sh


def quaternion_xyzw_to_matrix(quaternions: Float[Tensor, "*batch 4"], eps: float = 1e-8) -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrix of an (x, y, z, w) quaternion of any norm (2 / |q|^2 scaling)."""
    x, y, z, w = quaternions.unbind(-1)
    s = 2 / ((quaternions * quaternions).sum(dim=-1) + eps)
    matrix = torch.stack(
        (
            1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w),
            s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w),
            s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y),
        ),
        dim=-1,
    )  # fmt: skip
    return rearrange(matrix, "... (i j) -> ... i j", i=3, j=3)


@dataclass
class AdaptedGaussians:
    """Gaussians with the leading shape of their inputs, e.g. [batch, view, ray, surface, sample]."""

    means: Float[Tensor, "*batch 3"]
    covariances: Float[Tensor, "*batch 3 3"]
    harmonics: Float[Tensor, "*batch 3 d_sh"]
    opacities: Float[Tensor, "*batch"]
    scales: Float[Tensor, "*batch 3"]  # camera frame
    rotations: Float[Tensor, "*batch 4"]  # camera frame, xyzw
    world_rotations: Float[Tensor, "*batch 4"]  # world frame, wxyz (gsplat's convention)


class GaussianAdapter(nn.Module):
    def __init__(self, cfg: GaussianAdapterConfig) -> None:
        super().__init__()
        self.cfg = cfg
        mask = torch.ones(cfg.d_sh)
        for degree in range(1, cfg.sh_degree + 1):
            mask[degree**2 : (degree + 1) ** 2] = 0.1 * 0.25**degree
        self.register_buffer("sh_mask", mask, persistent=False)

    @property
    def d_in(self) -> int:
        """Raw channels per Gaussian: 3 scales, 4 quaternion, 3 x d_sh harmonics."""
        return 7 + 3 * self.cfg.d_sh

    def forward(
        self,
        extrinsics: Float[Tensor, "batch view 4 4"],
        intrinsics: Float[Tensor, "batch view 3 3"],
        xy: Float[Tensor, "batch view ray surface 2"],
        depths: Float[Tensor, "batch view ray surface sample"],
        opacities: Float[Tensor, "batch view ray surface sample"],
        raw: Float[Tensor, "batch view ray surface channel"],
        image_shape: tuple[int, int],
        eps: float = 1e-8,
        sh_blocks: list[Tensor] | None = None,
    ) -> AdaptedGaussians:
        """``sh_blocks``: Wigner-D matrices of the views' rotations (``wigner_blocks``), if
        already computed."""
        per_view = (slice(None), slice(None), None, None, None)  # b v -> b v 1 1 1
        scales, rotations, sh = raw.split((3, 4, 3 * self.cfg.d_sh), dim=-1)

        low, high = self.cfg.gaussian_scale_min, self.cfg.gaussian_scale_max
        scales = low + (high - low) * scales.sigmoid()
        multiplier = 0.1 * pixel_footprint(intrinsics, image_shape).sum(dim=-1)  # b v
        scales = scales[..., None, :] * (depths * multiplier[per_view])[..., None]  # b v r srf spp 3

        rotations = rotations / (rotations.norm(dim=-1, keepdim=True) + eps)
        rotation = quaternion_xyzw_to_matrix(rotations)[..., None, :, :]  # b v r srf 1 3 3
        rotation_scale = rotation * scales[..., None, :]
        covariances = rotation_scale @ rotation_scale.transpose(-1, -2)
        c2w = extrinsics[..., :3, :3]
        c2w_b = c2w[per_view]
        covariances = c2w_b @ covariances @ c2w_b.transpose(-1, -2)
        covariances = 0.5 * (covariances + covariances.transpose(-1, -2))  # exactly symmetric

        origins, directions = world_rays(xy, extrinsics[:, :, None, None], intrinsics[:, :, None, None])
        means = origins[..., None, :] + directions[..., None, :] * depths[..., None]

        sh = rearrange(sh, "... (c d_sh) -> ... c d_sh", c=3) * self.sh_mask
        harmonics = rotate_sh(sh, c2w, sh_blocks)  # b v r srf 3 d_sh, one rotation per view
        spp = depths.shape[-1]
        harmonics = harmonics[..., None, :, :].expand(*harmonics.shape[:-2], spp, 3, self.cfg.d_sh)

        # The covariance's own factors in the world frame, so renderers need no eigh.
        world_rotations = matrix_to_quaternion(c2w_b @ rotation)  # b v r srf 1 4
        return AdaptedGaussians(
            means=means,
            covariances=covariances,
            harmonics=harmonics,
            opacities=opacities,
            scales=scales,
            rotations=rotations[..., None, :].expand(*scales.shape[:-1], 4),
            world_rotations=world_rotations.expand(*scales.shape[:-1], 4),
        )
