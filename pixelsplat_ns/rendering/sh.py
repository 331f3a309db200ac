"""Real spherical harmonics, evaluated exactly as gsplat 1.4.0 evaluates them.

gsplat uses the closed forms of Sloan, *Efficient Spherical Harmonic Evaluation*
(JCGT 2013) for degrees 0-4, with its own sign/ordering convention: basis ``k`` of
band ``l`` sits at index ``l * l + k``. The constants below are the (truncated) values
gsplat's CUDA kernel uses, so colours agree to float rounding.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

__all__ = ["MAX_SH_DEGREE", "SH_C0", "eval_sh", "num_sh_bases", "sh_basis"]

MAX_SH_DEGREE = 4

# Band 0 (the constant colour = 0.5 + SH_C0 * coefficient, also in the official renderer) and band 1.
SH_C0 = 0.2820947917738781
_Y1 = 0.48860251190292
# Band 2.
_Y2_XY = 0.5462742152960395  # times 2xy and x^2 - y^2
_Y2_Z = 1.092548430592079  # times -z x and -z y
_Y2_ZZ_A, _Y2_ZZ_B = 0.9461746957575601, 0.3153915652525201
# Band 3.
_Y3_CS = 0.5900435899266435  # times -(cos/sin 2 phi terms)
_Y3_Z = 1.445305721320277
_Y3_ZZ_A, _Y3_ZZ_B = 2.285228997322329, 0.4570457994644658
_Y3_ZZZ_A, _Y3_ZZZ_B = 1.865881662950577, 1.119528997770346
# Band 4.
_Y4_CS = 0.6258357354491763
_Y4_Z = 1.770130769779931
_Y4_ZZ_A, _Y4_ZZ_B = 3.31161143515146, 0.47308734787878
_Y4_ZZZ_A, _Y4_ZZZ_B = 4.683325804901025, 2.007139630671868
_Y4_REC_A, _Y4_REC_B = 1.984313483298443, 1.006230589874905


def num_sh_bases(degree: int) -> int:
    """Number of SH coefficients of a degree-``degree`` expansion, ``(degree + 1) ** 2``."""
    return (degree + 1) ** 2


def sh_basis(degree: int, unit_dirs: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch K"]:
    """The ``K = (degree + 1) ** 2`` gsplat SH basis functions at unit directions."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in [0, {MAX_SH_DEGREE}], got {degree}")
    x, y, z = unit_dirs.unbind(-1)
    bases: list[Tensor] = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        bases += [-_Y1 * y, _Y1 * z, -_Y1 * x]
    if degree >= 2:
        zz = z * z
        cos1, sin1 = x * x - y * y, 2.0 * x * y  # r^2 cos(2 phi), r^2 sin(2 phi)
        neg_z = -_Y2_Z * z
        b6 = _Y2_ZZ_A * zz - _Y2_ZZ_B
        bases += [_Y2_XY * sin1, neg_z * y, b6, neg_z * x, _Y2_XY * cos1]
    if degree >= 3:
        cos2, sin2 = x * cos1 - y * sin1, x * sin1 + y * cos1  # r^3 cos/sin(3 phi)
        band3_zz = _Y3_ZZ_B - _Y3_ZZ_A * zz
        band3_z = _Y3_Z * z
        b12 = z * (_Y3_ZZZ_A * zz - _Y3_ZZZ_B)
        bases += [
            -_Y3_CS * sin2,
            band3_z * sin1,
            band3_zz * y,
            b12,
            band3_zz * x,
            band3_z * cos1,
            -_Y3_CS * cos2,
        ]
    if degree >= 4:
        cos3, sin3 = x * cos2 - y * sin2, x * sin2 + y * cos2
        band4_zzz = z * (_Y4_ZZZ_B - _Y4_ZZZ_A * zz)
        band4_zz = _Y4_ZZ_A * zz - _Y4_ZZ_B
        band4_z = -_Y4_Z * z
        b20 = _Y4_REC_A * z * b12 - _Y4_REC_B * b6
        bases += [
            _Y4_CS * sin3,
            band4_z * sin2,
            band4_zz * sin1,
            band4_zzz * y,
            b20,
            band4_zzz * x,
            band4_zz * cos1,
            band4_z * cos2,
            _Y4_CS * cos3,
        ]
    return torch.stack(bases, dim=-1)


def eval_sh(
    degree: int,
    dirs: Float[Tensor, "*batch 3"],
    coeffs: Float[Tensor, "*batch K 3"],
) -> Float[Tensor, "*batch 3"]:
    """Evaluate SH colours like gsplat's ``spherical_harmonics``.

    Args:
        degree: SH degree to use (0-4); only the first ``(degree + 1) ** 2`` of the ``K``
            coefficients are read.
        dirs: viewing directions (any non-zero length; normalised here). [..., 3]
        coeffs: SH coefficients in gsplat's layout. [..., K, 3]

    Returns:
        Raw SH value per channel (no ``+ 0.5`` offset, no clamping). [..., 3]
    """
    k = num_sh_bases(degree)
    if coeffs.shape[-2] < k:
        raise ValueError(f"degree {degree} needs {k} SH coefficients, got {coeffs.shape[-2]}")
    if degree == 0:
        return SH_C0 * coeffs[..., 0, :]
    unit = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, unit)
    return torch.einsum("...k,...kc->...c", basis, coeffs[..., :k, :])
