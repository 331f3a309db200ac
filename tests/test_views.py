import torch

from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config
from pixelsplat_ns.gaussians import Gaussians, build_covariance
from pixelsplat_ns.views import render_views
from tests.test_cameras import random_pose


def small_pair():
    g = torch.Generator().manual_seed(0)
    extrinsics = torch.stack([random_pose(g), random_pose(g)]).float()[None]
    extrinsics[0, 1] = extrinsics[0, 0].clone()
    extrinsics[0, 1, :3, 3] += extrinsics[0, 0, :3, 0] * 0.3  # sideways baseline
    intrinsics = torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]).expand(1, 2, 3, 3).clone()
    images = torch.rand(1, 2, 3, 64, 64, generator=g)
    return images, extrinsics, intrinsics


def test_encoder_factors_reproduce_its_covariances_and_render_like_them():
    torch.manual_seed(0)
    encoder = PixelSplatEncoder(encoder_config("tiny")).eval()
    images, extrinsics, intrinsics = small_pair()
    near, far = torch.full((1, 2), 0.3), torch.full((1, 2), 30.0)
    gaussians = encoder(images, extrinsics, intrinsics, near, far, deterministic=True).gaussians
    assert gaussians.scales is not None and gaussians.rotations is not None
    rebuilt = build_covariance(gaussians.scales, gaussians.rotations)
    torch.testing.assert_close(rebuilt, gaussians.covariances, rtol=1e-4, atol=1e-6)

    # Rendering from the stored factors equals rendering from the covariances alone.
    from_factors = render_views(gaussians.detach(), extrinsics, intrinsics, (64, 64))
    covariance_only = Gaussians(
        gaussians.means.detach(),
        gaussians.covariances.detach(),
        gaussians.harmonics.detach(),
        gaussians.opacities.detach(),
    )
    from_covariances = render_views(covariance_only, extrinsics, intrinsics, (64, 64))
    assert from_factors.shape == (1, 2, 64, 64, 3)
    torch.testing.assert_close(from_factors, from_covariances, atol=1e-4, rtol=0)
    # The context views see their own Gaussians: something is rendered.
    assert from_factors.sum() > 0
