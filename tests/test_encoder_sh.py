"""Wigner-D matrices used to rotate predicted SH coefficients into the world frame."""

from __future__ import annotations

import pytest
import torch

from pixelsplat_ns.encoder.sh_rotation import rotate_sh, wigner_d


def random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(n, 3, 3, generator=generator, dtype=torch.float64))
    q = q * torch.sign(torch.diagonal(r, dim1=-2, dim2=-1))[..., None, :]
    return q * torch.linalg.det(q)[..., None, None]  # det +1


def test_degree_one_is_the_rotation_itself():
    rotations = random_rotations(8)
    torch.testing.assert_close(wigner_d(1, rotations), rotations)


@pytest.mark.parametrize("degree", range(5))
def test_representation_properties(degree):
    a, b = random_rotations(6, 1), random_rotations(6, 2)
    eye = torch.eye(2 * degree + 1, dtype=torch.float64)
    d_a, d_b = wigner_d(degree, a), wigner_d(degree, b)
    torch.testing.assert_close(wigner_d(degree, a @ b), d_a @ d_b)
    torch.testing.assert_close(d_a @ d_a.transpose(-1, -2), eye.expand_as(d_a))
    torch.testing.assert_close(wigner_d(degree, torch.eye(3, dtype=torch.float64)), eye)


def test_special_rotations_are_handled():
    """Rotations at the Euler-angle singularities (beta = 0 or pi)."""
    special = torch.stack(
        [torch.diag(torch.tensor(d, dtype=torch.float64)) for d in ([1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1])]
    )
    for degree in range(5):
        d = wigner_d(degree, special)
        torch.testing.assert_close(d @ d.transpose(-1, -2), torch.eye(2 * degree + 1, dtype=torch.float64).expand_as(d))
        torch.testing.assert_close(wigner_d(degree, special @ special), d @ d)


def test_matches_e3nn():
    o3 = pytest.importorskip("e3nn.o3")
    rotations = random_rotations(10, 3)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # e3nn builds its generators in the default dtype
    try:
        for degree in range(5):
            alpha, beta, gamma = o3.matrix_to_angles(rotations)
            torch.testing.assert_close(wigner_d(degree, rotations), o3.wigner_D(degree, alpha, beta, gamma))
    finally:
        torch.set_default_dtype(previous)


def test_rotate_sh_per_view_blocks():
    rotations = random_rotations(2, 4).float()  # one per "view"
    coefficients = torch.randn(2, 5, 3, 25)
    rotated = rotate_sh(coefficients, rotations)
    assert rotated.shape == coefficients.shape
    # degree 0 unchanged, degree 1 rotated like a vector, norms of each band preserved
    torch.testing.assert_close(rotated[..., 0], coefficients[..., 0])
    torch.testing.assert_close(rotated[..., 1:4], torch.einsum("vij,vncj->vnci", rotations, coefficients[..., 1:4]))
    for degree in range(5):
        band = slice(degree**2, (degree + 1) ** 2)
        torch.testing.assert_close(rotated[..., band].norm(dim=-1), coefficients[..., band].norm(dim=-1))
    with pytest.raises(ValueError, match="not a square number"):
        rotate_sh(torch.randn(2, 3, 8), rotations)
