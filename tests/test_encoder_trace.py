"""trace_pixel: one pixel's epipolar samples, attention, depth distribution and Gaussians,
read from the encoder's output and consistent with its geometry."""

from __future__ import annotations

import pytest
import torch

from pixelsplat_ns.encoder.trace import trace_pixel
from pixelsplat_ns.geometry import depth_to_relative_disparity
from tests.test_encoder import make_scene, tiny_encoder

SIZE = (64, 64)


@pytest.fixture(scope="module")
def traced():
    scene = make_scene(views=2, size=SIZE)
    with torch.no_grad():
        output = tiny_encoder()(**scene, deterministic=True, return_attention=True)
    return scene, output


def cameras(scene):
    return scene["extrinsics"], scene["intrinsics"], scene["near"], scene["far"]


@pytest.mark.parametrize("view, row, col", [(0, 30, 33), (1, 5, 60), (0, 63, 0)])
def test_depth_distribution_and_gaussians_of_the_pixel(traced, view, row, col):
    scene, output = traced
    trace = trace_pixel(output, *cameras(scene), SIZE, view, row, col)
    assert trace.depth_pdf.sum(-1).allclose(torch.ones(1), atol=1e-5)
    # Deterministic: the depth lies inside the most likely bucket (uniform in disparity).
    buckets = trace.depth_pdf.shape[-1]
    disparity = depth_to_relative_disparity(trace.depths[0, 0], scene["near"][0, view], scene["far"][0, view])
    assert int(disparity * buckets) == int(trace.depth_pdf[0].argmax())
    assert bool((trace.bucket_depths[0][1:] > trace.bucket_depths[0][:-1]).all())  # bucket 0 is the nearest
    # The pixel's Gaussian sits at that depth from the camera (its ray passes within the pixel).
    mean = output.gaussians.means[0, trace.gaussian_indices[0]]
    origin = scene["extrinsics"][0, view, :3, 3]
    assert float((mean - origin).norm()) == pytest.approx(float(trace.depths[0, 0]), rel=1e-4)
    assert float(torch.nn.functional.cosine_similarity(mean - origin, trace.ray_direction, dim=0)) > 0.999


def test_epipolar_samples_are_where_the_ray_points_project(traced):
    scene, output = traced
    extrinsics, intrinsics, near, far = cameras(scene)
    trace = trace_pixel(output, extrinsics, intrinsics, near, far, SIZE, 0, 32, 20)
    assert len(trace.epipolar) == 1 and trace.epipolar[0].other_view == 1
    samples = trace.epipolar[0]
    assert samples.valid
    # Project the sample points into the other view: they land on the sampled image points
    # (where the depth was not clipped to near/far).
    world_to_camera = torch.linalg.inv(extrinsics[0, 1])
    camera = samples.points @ world_to_camera[:3, :3].T + world_to_camera[:3, 3]
    projected = (camera @ intrinsics[0, 1].T)[:, :2] / camera[:, 2:]
    inside = (samples.depths > near[0, 0] * 1.001) & (samples.depths < far[0, 0] * 0.999)
    assert inside.sum() >= samples.depths.numel() // 2
    torch.testing.assert_close(projected[inside], samples.xy[inside], atol=1e-3, rtol=0)
    # Attention of every layer and head is a distribution over the samples.
    layers, heads = output.attention.shape[2:4]
    assert samples.attention.shape == (layers, heads, samples.xy.shape[0])
    torch.testing.assert_close(samples.attention.sum(-1), torch.ones(layers, heads), atol=1e-5, rtol=0)


def test_out_of_range_pixel_or_view_is_named(traced):
    scene, output = traced
    with pytest.raises(ValueError, match="outside the 64x64 image"):
        trace_pixel(output, *cameras(scene), SIZE, 0, 64, 0)
    with pytest.raises(ValueError, match="view 2 does not exist"):
        trace_pixel(output, *cameras(scene), SIZE, 2, 0, 0)
