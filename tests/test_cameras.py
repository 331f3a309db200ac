import math

import pytest
import torch

from pixelsplat_ns.cameras import (
    denormalize_intrinsics,
    gaussians_to_caller_frame,
    normalize_intrinsics,
    official_near_far,
    opencv_to_opengl_c2w,
    opengl_c2w_to_viewmat,
    opengl_to_opencv_c2w,
    prepare_context,
)
from tests.conftest import FIXTURES, require


def random_pose(generator: torch.Generator) -> torch.Tensor:
    q = torch.randn(4, generator=generator, dtype=torch.float64)
    q = q / q.norm()
    w, x, y, z = q
    rotation = torch.tensor(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
            [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
            [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
        ],
        dtype=torch.float64,
    )
    pose = torch.eye(4, dtype=torch.float64)
    pose[:3, :3] = rotation
    pose[:3, 3] = torch.randn(3, generator=generator, dtype=torch.float64)
    return pose


def test_opengl_opencv_round_trip_and_axes():
    g = torch.Generator().manual_seed(0)
    c2w_gl = torch.stack([random_pose(g) for _ in range(5)])
    c2w_cv = opengl_to_opencv_c2w(c2w_gl)
    torch.testing.assert_close(opencv_to_opengl_c2w(c2w_cv), c2w_gl)
    # OpenGL looks along -Z, OpenCV along +Z: the viewing directions must agree.
    torch.testing.assert_close(c2w_cv[:, :3, 2], -c2w_gl[:, :3, 2])
    torch.testing.assert_close(c2w_cv[:, :3, 1], -c2w_gl[:, :3, 1])
    torch.testing.assert_close(c2w_cv[:, :3, 3], c2w_gl[:, :3, 3])


def test_viewmat_projects_points_in_front_to_positive_depth():
    g = torch.Generator().manual_seed(1)
    c2w_gl = random_pose(g)
    # A point one unit along the OpenGL viewing direction (-Z).
    point = c2w_gl[:3, 3] - c2w_gl[:3, 2]
    viewmat = opengl_c2w_to_viewmat(c2w_gl[None])[0]
    camera_point = viewmat[:3, :3] @ point + viewmat[:3, 3]
    torch.testing.assert_close(camera_point, torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))
    torch.testing.assert_close(viewmat @ opengl_to_opencv_c2w(c2w_gl), torch.eye(4, dtype=torch.float64))


def test_intrinsics_round_trip():
    k = torch.tensor([[350.0, 0.1, 160.0], [0.0, 351.0, 90.0], [0.0, 0.0, 1.0]])
    normalized = normalize_intrinsics(k, 320, 180)
    assert normalized[0, 2].item() == pytest.approx(0.5)
    assert normalized[1, 2].item() == pytest.approx(0.5)
    torch.testing.assert_close(denormalize_intrinsics(normalized, 320, 180), k)


def test_official_near_far_matches_fixture():
    fixture = torch.load(require(FIXTURES / "parity_pair_a64.pt"), weights_only=False)["inputs"]
    h, w = fixture["image"].shape[-2:]
    near, far = official_near_far(fixture["extrinsics"], fixture["intrinsics"], (h, w))
    torch.testing.assert_close(near, fixture["near"], rtol=1e-5, atol=0)
    torch.testing.assert_close(far, fixture["far"], rtol=1e-5, atol=0)


def test_prepare_context_crops_scales_and_keeps_rays():
    g = torch.Generator().manual_seed(2)
    c2w = torch.stack([random_pose(g), random_pose(g)]).float()
    c2w[1, :3, 3] = c2w[0, :3, 3] + torch.tensor([0.3, 0.0, 0.1])
    k = torch.tensor([[350.0, 0.0, 160.0], [0.0, 350.0, 90.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    images = torch.rand(2, 180, 320, 3)
    views = prepare_context(images, c2w[:, :3], k, image_multiple=16)
    assert views.image.shape == (1, 2, 3, 176, 320)
    baseline = (views.extrinsics[0, 0, :3, 3] - views.extrinsics[0, 1, :3, 3]).norm()
    assert baseline.item() == pytest.approx(1.0, rel=1e-5)
    # The principal point moved with the 2-pixel crop of the rows.
    assert (views.intrinsics[0, 0, 1, 2] * 176).item() == pytest.approx(88.0, abs=1e-4)
    assert (views.near < views.far).all()
    means, covariances = gaussians_to_caller_frame(torch.ones(3), torch.eye(3), views.scene_scale)
    assert means[0].item() == pytest.approx(1 / views.scene_scale)
    assert covariances[0, 0].item() == pytest.approx(1 / views.scene_scale**2)


@pytest.mark.parametrize(
    "problem, message",
    [("one view", "at least two context views"), ("same camera", "identical camera positions"), ("nan", "non-finite")],
)
def test_prepare_context_rejects_bad_cameras(problem, message):
    g = torch.Generator().manual_seed(3)
    c2w = torch.stack([random_pose(g), random_pose(g)]).float()[:, :3]
    k = torch.tensor([[50.0, 0.0, 32.0], [0.0, 50.0, 32.0], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    images = torch.rand(2, 64, 64, 3)
    if problem == "one view":
        c2w, k, images = c2w[:1], k[:1], images[:1]
    elif problem == "same camera":
        c2w = c2w[:1].expand(2, 3, 4).clone()
    else:
        c2w = c2w.clone()
        c2w[1, 0, 3] = math.nan
    with pytest.raises(ValueError, match=message):
        prepare_context(images, c2w, k, image_multiple=16, names=["a.png", "b.png"][: images.shape[0]])


def test_opencv_keypoints_move_to_pixel_centres_at_half():
    from pixelsplat_ns.cameras import opencv_keypoints_to_pixels

    # OpenCV's first pixel centre is (0, 0); nerfstudio's and this project's is (0.5, 0.5).
    points = torch.tensor([[0.0, 0.0], [9.0, 4.0]])
    assert torch.equal(opencv_keypoints_to_pixels(points), torch.tensor([[0.5, 0.5], [9.5, 4.5]]))


def test_widebaseline_views_project_points_to_the_same_image_content():
    """A world point seen by a nerfstudio camera (OpenGL, +0.5 pixel centres) lands, after the
    square crop and resize, where the official convention (OpenCV, integer centres) puts it."""
    from pixelsplat_ns.cameras import opengl_to_opencv_c2w, widebaseline_context

    h, w, size = 60, 100, 32
    k = torch.tensor([[80.0, 0, 52.0], [0, 80.0, 29.0], [0, 0, 1]])
    c2w_gl = torch.eye(4)[:3].repeat(2, 1, 1)
    c2w_gl[1, 0, 3] = 2.0  # 2 units apart
    images = torch.rand(2, h, w, 3)
    views = widebaseline_context(images, c2w_gl, k.repeat(2, 1, 1), size, baseline=1.0)
    assert views.images.shape == (1, 2, 3, size, size)
    assert math.isclose(float(views.scene_scale[0]), 0.5)
    assert torch.allclose(views.c2w[0, 1, :3, 3], torch.tensor([1.0, 0, 0]))

    point = torch.tensor([0.3, -0.2, -4.0])  # in front of the OpenGL camera 0 (looks along -z)
    cv = torch.linalg.inv(opengl_to_opencv_c2w(c2w_gl[0]))
    local = cv[:3, :3] @ point + cv[:3, 3]
    u, v = (k @ local / local[2])[:2]  # continuous pixel coordinates, centres at +0.5
    side, col = 60, 20  # the centred square crop of the 100x60 image
    expected = torch.stack(((u - col) * size / side - 0.5, v * size / side - 0.5))
    scaled = point * views.scene_scale[0]
    local = torch.linalg.inv(views.c2w[0, 0]) @ torch.cat((scaled, torch.ones(1)))
    projected = (views.intrinsics[0, 0] @ local[:3] / local[2])[:2]
    assert torch.allclose(projected, expected, atol=1e-4)


def test_widebaseline_examples_match_the_context_conversion():
    """Training examples (OpenCV, normalised K) and nerfstudio views (OpenGL, pixel K) of the same
    cameras give the same network input."""
    from pixelsplat_ns.cameras import (
        normalize_intrinsics,
        opengl_to_opencv_c2w,
        widebaseline_context,
        widebaseline_examples,
    )

    images = torch.rand(2, 48, 64, 3)
    k = torch.tensor([[50.0, 0, 33.0], [0, 50.0, 23.0], [0, 0, 1]]).repeat(2, 1, 1)
    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[1, :3, 3] = torch.tensor([0.5, 0.1, 0.0])
    a = widebaseline_context(images, c2w, k, 24)
    b = widebaseline_examples(
        images.permute(0, 3, 1, 2)[None], opengl_to_opencv_c2w(c2w)[None], normalize_intrinsics(k, 64, 48)[None], 24
    )
    for x, y in ((a.images, b.images), (a.c2w, b.c2w), (a.intrinsics, b.intrinsics), (a.scene_scale, b.scene_scale)):
        assert torch.allclose(x, y, atol=1e-5)


def test_encoder_poses_and_sample_positions_go_back_to_the_caller():
    """``encoder_to_caller_c2w`` undoes ``prepare_context``'s poses (OpenGL, scale), and
    ``normalized_to_pixels`` puts a point projected with normalised intrinsics where the pixel
    intrinsics put it."""
    from pixelsplat_ns.cameras import encoder_to_caller_c2w, normalized_to_pixels

    c2w = torch.eye(4).repeat(2, 1, 1)
    c2w[1, :3, 3] = torch.tensor([0.4, 0.1, -0.2])
    c2w[1, :3, :3] = torch.linalg.matrix_exp(torch.tensor([[0.0, -0.2, 0.1], [0.2, 0, -0.05], [-0.1, 0.05, 0]]))
    k = torch.tensor([[40.0, 0, 32], [0, 40, 24], [0, 0, 1]]).repeat(2, 1, 1)
    views = prepare_context(torch.rand(2, 48, 64, 3), c2w, k, image_multiple=16)
    torch.testing.assert_close(encoder_to_caller_c2w(views.extrinsics[0], views.scene_scale), c2w)
    point = torch.tensor([0.3, -0.2, 2.0])  # camera space (OpenCV)
    normalised = views.intrinsics[0, 0] @ point
    pixels = k[0] @ point
    torch.testing.assert_close(normalized_to_pixels(normalised[:2] / normalised[2], 64, 48), pixels[:2] / pixels[2])
