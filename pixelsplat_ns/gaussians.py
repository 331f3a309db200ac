"""The Gaussians the encoder predicts, and the conversions to what renderers store.

The encoder speaks pixelSplat's language: world-frame means, full 3x3 covariances,
spherical-harmonic coefficients laid out ``[..., 3 (rgb), d_sh]`` in the *official
pixelSplat renderer's* SH basis, and opacities in (0, 1). gsplat and splatfacto store
log-scales, wxyz quaternions, SH coefficients ``[..., K, 3]`` in gsplat's basis and
logit opacities. Everything that converts between the two lives here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.rendering.projection import quaternion_to_matrix
from pixelsplat_ns.rendering.sh import SH_C0, sh_basis


@dataclass
class Gaussians:
    """A batch of 3D Gaussians as the pixelSplat encoder predicts them (world frame)."""

    means: Float[Tensor, "batch gaussian 3"]
    covariances: Float[Tensor, "batch gaussian 3 3"]
    harmonics: Float[Tensor, "batch gaussian 3 d_sh"]  # official SH basis
    opacities: Float[Tensor, "batch gaussian"]
    # The factors of the covariances (world frame, wxyz), when the producer knows them:
    # renderers then need no eigen-decomposition, whose gradient is unstable for
    # near-isotropic Gaussians. Optional: official fixtures and checkpoints hold only
    # covariances.
    scales: Float[Tensor, "batch gaussian 3"] | None = None
    rotations: Float[Tensor, "batch gaussian 4"] | None = None

    def __post_init__(self) -> None:
        b, n, _ = self.means.shape
        if self.covariances.shape != (b, n, 3, 3):
            raise ValueError(f"covariances have shape {tuple(self.covariances.shape)}, expected {(b, n, 3, 3)}")
        if self.harmonics.shape[:3] != (b, n, 3):
            raise ValueError(f"harmonics have shape {tuple(self.harmonics.shape)}, expected ({b}, {n}, 3, d_sh)")
        if self.opacities.shape != (b, n):
            raise ValueError(f"opacities have shape {tuple(self.opacities.shape)}, expected {(b, n)}")

    @property
    def sh_degree(self) -> int:
        return math.isqrt(self.harmonics.shape[-1]) - 1

    def detach(self) -> "Gaussians":
        return Gaussians(
            self.means.detach(),
            self.covariances.detach(),
            self.harmonics.detach(),
            self.opacities.detach(),
            None if self.scales is None else self.scales.detach(),
            None if self.rotations is None else self.rotations.detach(),
        )

    def scales_and_rotations(self) -> tuple[Float[Tensor, "batch gaussian 3"], Float[Tensor, "batch gaussian 4"]]:
        """(scales, wxyz quaternions) of the covariances: the stored factors when known,
        else an eigen-decomposition (fine for rendering, not for gradients)."""
        if self.scales is not None and self.rotations is not None:
            return self.scales, self.rotations
        return covariance_to_scales_quaternions(self.covariances)


def concatenate_gaussians(*parts: Gaussians) -> Gaussians:
    """The Gaussians of every part, in order. Harmonics are padded with zeros to the highest
    SH degree among them (a higher band set to zero leaves the colours unchanged)."""
    d_sh = max(part.harmonics.shape[-1] for part in parts)
    harmonics = [torch.nn.functional.pad(part.harmonics, (0, d_sh - part.harmonics.shape[-1])) for part in parts]
    factors = [part.scales_and_rotations() for part in parts]
    return Gaussians(
        means=torch.cat([part.means for part in parts], dim=1),
        covariances=torch.cat([part.covariances for part in parts], dim=1),
        harmonics=torch.cat(harmonics, dim=1),
        opacities=torch.cat([part.opacities for part in parts], dim=1),
        scales=torch.cat([scales for scales, _ in factors], dim=1),
        rotations=torch.cat([rotations for _, rotations in factors], dim=1),
    )


# --------------------------------------------------------------------------------------
# Rotations and covariances
# --------------------------------------------------------------------------------------


def matrix_to_quaternion(matrix: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch 4"]:
    """Rotation matrix (det +1) -> unit wxyz quaternion with w >= 0.

    Uses the numerically stable branch selection: the largest of the four candidate
    quaternion components is computed from the diagonal, the others from off-diagonals.
    """
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    candidates = torch.stack(
        (1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22), dim=-1
    )
    root = candidates.clamp_min(1e-12).sqrt()  # 2 * |component|
    # Rows: quaternion (w, x, y, z) built assuming component i is the largest.
    q_from = torch.stack(
        (
            torch.stack(
                (
                    root[..., 0] ** 2,
                    m[..., 2, 1] - m[..., 1, 2],
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] - m[..., 0, 1],
                ),
                -1,
            ),
            torch.stack(
                (
                    m[..., 2, 1] - m[..., 1, 2],
                    root[..., 1] ** 2,
                    m[..., 1, 0] + m[..., 0, 1],
                    m[..., 0, 2] + m[..., 2, 0],
                ),
                -1,
            ),
            torch.stack(
                (
                    m[..., 0, 2] - m[..., 2, 0],
                    m[..., 1, 0] + m[..., 0, 1],
                    root[..., 2] ** 2,
                    m[..., 2, 1] + m[..., 1, 2],
                ),
                -1,
            ),
            torch.stack(
                (
                    m[..., 1, 0] - m[..., 0, 1],
                    m[..., 2, 0] + m[..., 0, 2],
                    m[..., 2, 1] + m[..., 1, 2],
                    root[..., 3] ** 2,
                ),
                -1,
            ),
        ),
        dim=-2,
    ) / (2 * root[..., :, None])
    best = candidates.argmax(dim=-1)
    q = torch.gather(q_from, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def build_covariance(
    scales: Float[Tensor, "*batch 3"], quaternions: Float[Tensor, "*batch 4"]
) -> Float[Tensor, "*batch 3 3"]:
    """R S S^T R^T from scales and wxyz quaternions (gsplat's convention)."""
    rotation = quaternion_to_matrix(quaternions)
    rs = rotation * scales[..., None, :]
    return rs @ rs.transpose(-1, -2)


def covariance_to_scales_quaternions(
    covariances: Float[Tensor, "*batch 3 3"], min_scale: float = 1e-10
) -> tuple[Float[Tensor, "*batch 3"], Float[Tensor, "*batch 4"]]:
    """Decompose symmetric PSD covariances into (scales, wxyz quaternions).

    ``build_covariance(*covariance_to_scales_quaternions(c))`` reproduces ``c``. The
    eigen-decomposition runs in float64 because covariances of distant, thin Gaussians
    have eigenvalues many orders of magnitude apart.
    """
    c64 = covariances.double()
    c64 = 0.5 * (c64 + c64.transpose(-1, -2))
    eigenvalues, eigenvectors = torch.linalg.eigh(c64)
    # eigh may return a reflection; flip one axis so the basis is a proper rotation.
    det = torch.linalg.det(eigenvectors)
    eigenvectors = torch.cat((eigenvectors[..., :2], eigenvectors[..., 2:] * det[..., None, None].sign()), dim=-1)
    scales = eigenvalues.clamp_min(min_scale**2).sqrt()
    quaternions = matrix_to_quaternion(eigenvectors)
    return scales.to(covariances.dtype), quaternions.to(covariances.dtype)


# --------------------------------------------------------------------------------------
# Spherical harmonics: official pixelSplat basis -> gsplat basis
# --------------------------------------------------------------------------------------

# The official renderer's constants for bands 1-3 (band 0's, SH_C0, is gsplat's too). Its
# basis orders and signs the axes unlike gsplat's (rendering/sh.py).
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def official_sh_basis(directions: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 16"]:
    """The official pixelSplat renderer's 16 SH basis functions (degrees 0-3).

    Transcribed from the basis documented with the parity fixtures: the renderer the
    official checkpoints were trained with orders and signs its axes differently from
    gsplat, so its coefficients are not gsplat coefficients.
    """
    x, y, z = directions.unbind(-1)
    xx, yy, zz = x * x, y * y, z * z
    one = torch.ones_like(x)
    return torch.stack(
        (
            SH_C0 * one,
            -SH_C1 * x,
            SH_C1 * y,
            -SH_C1 * z,
            SH_C2[0] * z * x,
            SH_C2[1] * x * y,
            SH_C2[2] * (2 * yy - zz - xx),
            SH_C2[3] * z * y,
            SH_C2[4] * (zz - xx),
            SH_C3[0] * x * (3 * zz - xx),
            SH_C3[1] * z * x * y,
            SH_C3[2] * x * (4 * yy - zz - xx),
            SH_C3[3] * y * (2 * yy - 3 * zz - 3 * xx),
            SH_C3[4] * z * (4 * yy - zz - xx),
            SH_C3[5] * z * (zz - xx),
            SH_C3[6] * z * (zz - 3 * xx),
        ),
        dim=-1,
    )


@cache
def _official_to_gsplat_matrix() -> Tensor:
    """M (16 x 16, float64) with official_basis(d) = gsplat_basis(d) @ M for all unit d.

    Every official function is a polynomial of degree <= 3, so it lies in the space
    gsplat's basis spans (SH of degree <= 3 on the sphere) and M is exact; it is found by
    least squares on a fixed set of directions and then snapped to the clean entries it
    must have. It maps band to band, except for official function 14, z(zz - xx), which
    also has a degree-1 part; and the 16 official functions span only 15 dimensions, so M
    is singular: official coefficients cannot be recovered from gsplat ones.
    """
    generator = torch.Generator().manual_seed(0)
    d = torch.randn(512, 3, generator=generator, dtype=torch.float64)
    d = d / d.norm(dim=-1, keepdim=True)
    solution = torch.linalg.lstsq(sh_basis(3, d), official_sh_basis(d)).solution
    solution[solution.abs() < 1e-9] = 0.0
    return solution


def official_to_gsplat_sh(
    harmonics: Float[Tensor, "*batch 3 d_sh"], max_degree: int = 3
) -> Float[Tensor, "*batch k 3"]:
    """Convert official pixelSplat SH coefficients to gsplat's basis and layout.

    The official degree-4 band is dropped: the official renderer ignores it, so dropping it
    keeps the colours it produced. Bands of gsplat's basis above ``max_degree`` are dropped
    after the conversion, not before: the official basis is not band-limited per index
    (its function 14, z(zz - xx), has a degree-1 part), and truncating gsplat's orthonormal
    basis keeps the closest colours of that degree. Output layout is gsplat's
    ``[..., K, 3]`` with ``K = (degree + 1) ** 2``.
    """
    d_sh = harmonics.shape[-1]
    full = (min(math.isqrt(d_sh) - 1, 3) + 1) ** 2
    k = (min(math.isqrt(d_sh) - 1, max_degree, 3) + 1) ** 2
    matrix = _official_to_gsplat_matrix()[:k, :full].to(harmonics)
    # c_official . B_official = c_official . (M^T B_gsplat)  =>  c_gsplat = M c_official
    converted = torch.einsum("ij,...cj->...ic", matrix, harmonics[..., :full])
    return converted
