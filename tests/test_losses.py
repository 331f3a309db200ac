"""The cross-view photometric loss: lowest at the true depth, and it reaches the depth distribution."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pixelsplat_ns.geometry import camera_directions, depth_to_relative_disparity, pixel_centers
from pixelsplat_ns.losses import cross_view_photometric_loss, expected_depth

SIZE, BUCKETS, PLANE_Z, NEAR, FAR = 48, 64, 4.0, 0.5, 100.0
INTRINSICS = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])  # normalised, 53 degrees


def _plane_pair() -> tuple[torch.Tensor, ...]:
    """Two cameras one unit apart along x looking at a textured plane z = PLANE_Z: view 0 is
    view 1's photo shifted by the plane's disparity (exact: the plane is fronto-parallel)."""
    generator = torch.Generator().manual_seed(0)
    texture = F.interpolate(torch.rand(1, 3, 12, 12, generator=generator), size=(SIZE, SIZE), mode="bicubic").clamp(
        0, 1
    )
    intrinsics = INTRINSICS
    # A point at normalised x in view 0 is at x - fx * baseline / z in view 1 (camera 1 at +x).
    shift = intrinsics[0, 0] * 1.0 / PLANE_Z
    xy = pixel_centers(SIZE, SIZE)
    grid = torch.stack((xy[..., 0] - shift, xy[..., 1]), dim=-1) * 2 - 1
    view0 = F.grid_sample(texture, grid[None], mode="bilinear", padding_mode="border", align_corners=False)
    images = torch.stack((view0[0], texture[0]))[None]  # 1 2 3 h w
    extrinsics = torch.eye(4).repeat(1, 2, 1, 1)
    extrinsics[0, 1, 0, 3] = 1.0
    return images, extrinsics, intrinsics.expand(1, 2, 3, 3), torch.full((1, 2), NEAR), torch.full((1, 2), FAR)


def _distribution(z: float) -> tuple[torch.Tensor, torch.Tensor]:
    """A depth distribution certain of the plane z = ``z`` at every pixel of both views."""
    directions = camera_directions(pixel_centers(SIZE, SIZE), INTRINSICS)
    along_ray = z / directions[..., 2]  # distance along the unit ray to the plane
    relative = depth_to_relative_disparity(along_ray, torch.tensor(NEAR), torch.tensor(FAR)).flatten() * BUCKETS
    index = relative.floor().long().clamp(0, BUCKETS - 1)
    pdf = F.one_hot(index, BUCKETS).float()
    offsets = (relative - index)[:, None].expand(-1, BUCKETS)
    shape = (1, 2, SIZE * SIZE, 1, BUCKETS)
    return pdf[None, None, :, None].expand(shape), offsets[None, None, :, None].expand(shape)


def test_expected_depth_reads_the_bucket_and_its_offset():
    pdf, offsets = _distribution(PLANE_Z)
    depth = expected_depth(pdf[0, 0, :, 0], offsets[0, 0, :, 0], torch.tensor(NEAR), torch.tensor(FAR))
    directions = camera_directions(pixel_centers(SIZE, SIZE), INTRINSICS).reshape(-1, 3)
    torch.testing.assert_close(depth * directions[:, 2], torch.full_like(depth, PLANE_Z), rtol=1e-4, atol=1e-4)


def test_loss_is_lowest_at_the_true_depth_and_reaches_the_distribution():
    images, extrinsics, intrinsics, near, far = _plane_pair()
    losses = {}
    for z in (2.0, 3.0, PLANE_Z, 6.0, 10.0):
        pdf, offsets = _distribution(z)
        losses[z] = float(cross_view_photometric_loss(images, extrinsics, intrinsics, near, far, pdf, offsets))
    assert min(losses, key=losses.get) == PLANE_Z, losses
    assert losses[PLANE_Z] < 0.02 and min(v for z, v in losses.items() if z != PLANE_Z) > 3 * losses[PLANE_Z], losses

    # Gradients reach the logits through the expected depth.
    pdf, offsets = _distribution(3.0)
    logits = (8 * pdf).clone().requires_grad_(True)  # near the wrong plane, not certain of it
    loss = cross_view_photometric_loss(images, extrinsics, intrinsics, near, far, logits.softmax(-1), offsets)
    loss.backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0


def test_a_single_view_gives_zero():
    images, extrinsics, intrinsics, near, far = _plane_pair()
    pdf, offsets = _distribution(PLANE_Z)
    single = cross_view_photometric_loss(
        images[:, :1], extrinsics[:, :1], intrinsics[:, :1], near[:, :1], far[:, :1], pdf[:, :1], offsets[:, :1]
    )
    assert float(single) == 0.0
