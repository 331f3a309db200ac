"""Rotating spherical-harmonic coefficients (the official code's convention).

The official encoder predicts SH coefficients in the camera frame and rotates them to
the world frame with e3nn's real Wigner-D matrices (``e3nn.o3.wigner_D`` of
``matrix_to_angles(R)``). This module builds the same matrices without e3nn: the real
basis of degree l is e3nn's (y is the polar axis, D^1(R) = R in xyz order), the matrices
come from the spin-l angular-momentum generators, and R is split into Euler angles
R = Ry(alpha) Rx(beta) Ry(gamma). Everything runs in float64.
"""

from __future__ import annotations

import math
from functools import cache

import torch
from jaxtyping import Float
from torch import Tensor


@cache
def _real_generators(degree: int) -> tuple[Tensor, Tensor]:
    """(G_x, G_y): real (2l+1)x(2l+1) generators of rotations about x and y for degree l,
    such that D(exp(theta L_k)) = exp(theta G_k) and D^1(R) = R."""
    l = degree  # noqa: E741 - the usual symbol for the degree
    m = torch.arange(-l, l + 1, dtype=torch.float64)
    # Ladder operators in the complex |l, m> basis (Condon-Shortley phases, sign as in e3nn).
    up = torch.sqrt(l * (l + 1) - m[:-1] * (m[:-1] + 1))  # |m> -> |m + 1>
    down = torch.sqrt(l * (l + 1) - m[1:] * (m[1:] - 1))  # |m> -> |m - 1>
    raising = torch.diag(-up, -1).to(torch.complex128)
    lowering = torch.diag(down, 1).to(torch.complex128)
    generator_x = 0.5 * (raising + lowering)
    generator_polar = torch.diag(1j * m.to(torch.complex128))

    # Complex -> real basis: for m < 0, (|m| + |-m| i-weighted) / sqrt 2, etc.
    basis = torch.zeros((2 * l + 1, 2 * l + 1), dtype=torch.complex128)
    s = 1 / math.sqrt(2)
    for k in range(1, l + 1):
        basis[l - k, l + k] = s
        basis[l - k, l - k] = -1j * s
        basis[l + k, l + k] = (-1) ** k * s
        basis[l + k, l - k] = 1j * (-1) ** k * s
    basis[l, l] = 1
    basis = (-1j) ** l * basis

    def to_real(generator: Tensor) -> Tensor:
        real = basis.conj().T @ generator @ basis
        assert real.imag.abs().max() < 1e-9
        return real.real.contiguous()

    return to_real(generator_x), to_real(generator_polar)


def _euler_yxy(rotations: Float[Tensor, "*batch 3 3"]) -> tuple[Tensor, Tensor, Tensor]:
    """Angles with R = Ry(alpha) Rx(beta) Ry(gamma)."""
    y_image = rotations[..., :, 1]
    y_image = y_image / y_image.norm(dim=-1, keepdim=True)
    beta = torch.acos(y_image[..., 1].clamp(-1, 1))
    alpha = torch.atan2(y_image[..., 0], y_image[..., 2])
    ca, sa = alpha.cos(), alpha.sin()
    zero = torch.zeros_like(alpha)
    # First row of (Ry(alpha) Rx(beta))^T = first column of Ry(alpha) Rx(beta) = Ry(alpha) e_x.
    first_axis = torch.stack((ca, zero, -sa), dim=-1)
    remainder_row0 = (first_axis[..., :, None] * rotations).sum(dim=-2)  # e_x^T (Ry Rx)^T R
    gamma = torch.atan2(remainder_row0[..., 2], remainder_row0[..., 0])
    return alpha, beta, gamma


def wigner_d(degree: int, rotations: Float[Tensor, "*batch 3 3"]) -> Float[Tensor, "*batch n n"]:
    """Real Wigner-D matrices of ``degree`` for rotation matrices (float64)."""
    rotations = rotations.to(torch.float64)
    alpha, beta, gamma = _euler_yxy(rotations)
    g_x, g_y = (g.to(rotations.device) for g in _real_generators(degree))
    exp = torch.linalg.matrix_exp
    return exp(alpha[..., None, None] * g_y) @ exp(beta[..., None, None] * g_x) @ exp(gamma[..., None, None] * g_y)


def wigner_blocks(rotations: Float[Tensor, "*batch 3 3"], max_degree: int, dtype: torch.dtype) -> list[Tensor]:
    """[D^0, ..., D^max_degree] for ``rotations``, cast to ``dtype``."""
    return [wigner_d(degree, rotations).to(dtype) for degree in range(max_degree + 1)]


def rotate_sh(
    coefficients: Float[Tensor, "*batch *rest d_sh"],
    rotations: Float[Tensor, "*batch 3 3"] | None = None,
    blocks: list[Tensor] | None = None,
) -> Float[Tensor, "*batch *rest d_sh"]:
    """Rotate SH coefficients (last axis: degrees 0..L, (L + 1)^2 entries) by ``rotations``
    (or by precomputed ``blocks`` from ``wigner_blocks``).

    The leading dimensions of ``coefficients`` are those of the rotations (e.g. one
    rotation per view); all further dimensions share their rotation.
    """
    d_sh = coefficients.shape[-1]
    num_degrees = math.isqrt(d_sh)
    if num_degrees**2 != d_sh:
        raise ValueError(f"{d_sh} SH coefficients is not a square number")
    if blocks is None:
        if rotations is None:
            raise ValueError("rotate_sh needs rotations or blocks")
        blocks = wigner_blocks(rotations, num_degrees - 1, coefficients.dtype)
    batch = blocks[0].shape[:-2]
    flat = coefficients.reshape(*batch, -1, d_sh)
    rotated = [
        flat[..., degree**2 : (degree + 1) ** 2] @ blocks[degree].transpose(-1, -2) for degree in range(num_degrees)
    ]
    return torch.cat(rotated, dim=-1).reshape(coefficients.shape)
