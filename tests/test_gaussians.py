import torch

from pixelsplat_ns.gaussians import (
    build_covariance,
    covariance_to_scales_quaternions,
    matrix_to_quaternion,
    official_sh_basis,
    official_to_gsplat_sh,
)
from pixelsplat_ns.rendering.projection import quaternion_to_matrix
from pixelsplat_ns.rendering.sh import sh_basis
from tests.conftest import FIXTURES, require


def test_quaternion_matrix_round_trip():
    q = torch.randn(1000, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    q = q / q.norm(dim=-1, keepdim=True)
    q = torch.where(q[:, :1] < 0, -q, q)
    torch.testing.assert_close(matrix_to_quaternion(quaternion_to_matrix(q)), q)


def test_covariance_round_trip_including_thin_gaussians():
    g = torch.Generator().manual_seed(1)
    scales = torch.rand(2000, 3, generator=g, dtype=torch.float64) * 2 + 1e-4
    scales[:10, 2] = 1e-6  # nearly flat Gaussians
    quats = torch.randn(2000, 4, generator=g, dtype=torch.float64)
    covariance = build_covariance(scales, quats)
    assert torch.allclose(covariance, covariance.transpose(-1, -2))
    recovered_scales, recovered_quats = covariance_to_scales_quaternions(covariance)
    torch.testing.assert_close(build_covariance(recovered_scales, recovered_quats), covariance, rtol=1e-9, atol=1e-12)
    # Scales come back sorted per Gaussian but as the same multiset.
    torch.testing.assert_close(recovered_scales.sort(dim=-1).values, scales.sort(dim=-1).values)


def test_official_sh_conversion_reproduces_official_colours():
    fixture = torch.load(require(FIXTURES / "sh_basis.pt"), weights_only=False)
    coefficients, directions = fixture["coefficients"], fixture["directions"]
    # Official colours through gsplat's basis: convert coefficients, evaluate gsplat's SH.
    converted = official_to_gsplat_sh(coefficients.double())  # [n, 16, 3]
    basis = sh_basis(3, directions.double() / directions.double().norm(dim=-1, keepdim=True))
    color_before_clamp = 0.5 + torch.einsum("nk,nkc->nc", basis, converted)
    torch.testing.assert_close(color_before_clamp.float(), fixture["color_before_clamp"], atol=1e-5, rtol=0)
    torch.testing.assert_close(color_before_clamp.clamp_min(0).float(), fixture["color"], atol=1e-5, rtol=0)


def test_official_basis_is_what_the_fixture_used():
    fixture = torch.load(require(FIXTURES / "sh_basis.pt"), weights_only=False)
    d = fixture["directions"].double()
    d = d / d.norm(dim=-1, keepdim=True)
    colour = 0.5 + torch.einsum("nk,nck->nc", official_sh_basis(d), fixture["coefficients"].double()[..., :16])
    torch.testing.assert_close(colour.float(), fixture["color_before_clamp"], atol=1e-5, rtol=0)


def test_sh_conversion_matches_gsplat_evaluation_for_lower_degrees():
    from gsplat.cuda._torch_impl import _spherical_harmonics

    g = torch.Generator().manual_seed(2)
    for degree in (0, 1, 2, 3):
        k = (degree + 1) ** 2
        coefficients = torch.randn(64, 3, k, generator=g, dtype=torch.float64)
        d = torch.randn(64, 3, generator=g, dtype=torch.float64)
        d = d / d.norm(dim=-1, keepdim=True)
        expected = torch.einsum("nk,nck->nc", official_sh_basis(d)[:, :k], coefficients)
        converted = official_to_gsplat_sh(coefficients)
        assert converted.shape == (64, k, 3)
        actual = _spherical_harmonics(degree, d, converted)
        torch.testing.assert_close(actual, expected)
