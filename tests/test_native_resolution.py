"""Native-resolution Gaussians: upsampling that follows the photo's edges, pixel-aligned
Gaussians that give the context photos back, pruning, and the flags that choose them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from pixelsplat_ns.cameras import ContextViews, prepare_context
from pixelsplat_ns.cli.demo import DEMO_SCENE
from pixelsplat_ns.encoder import EncoderOutput
from pixelsplat_ns.gaussians import Gaussians
from pixelsplat_ns.geometry import camera_directions, pixel_centers
from pixelsplat_ns.metrics import psnr
from pixelsplat_ns.native_resolution import joint_bilateral_upsample, native_resolution_gaussians, visible_mask
from pixelsplat_ns.views import render_views

if TYPE_CHECKING:
    from nerfstudio.pipelines.base_pipeline import Pipeline


def _positions(height: int, width: int, h: int, w: int) -> torch.Tensor:
    """Full-resolution pixel centres in low-resolution pixel coordinates (same field of view)."""
    centres = pixel_centers(height, width)
    return centres * torch.tensor((w, h), dtype=torch.float32)


def test_upsampling_keeps_constants_and_follows_the_guides_edges():
    torch.manual_seed(0)
    height, width, factor = 48, 96, 4
    h, w = height // factor, width // factor
    constant = torch.full((1, 2, h, w), 0.7)
    guide_high = torch.rand(1, 3, height, width)
    guide_low = F.avg_pool2d(guide_high, factor)
    out = joint_bilateral_upsample(constant, guide_low, guide_high, _positions(height, width, h, w))
    torch.testing.assert_close(out, torch.full((1, 2, height, width), 0.7))

    # A bright/dark edge at a column that is not on the low-resolution grid (37 = 9.25 low-res px);
    # the values are 1 on the bright side: low-res pixels straddling the edge are mixed in both.
    guide_high = torch.zeros(1, 3, height, width)
    guide_high[..., 37:] = 1.0
    guide_low = F.avg_pool2d(guide_high, factor)
    values = guide_low[:, :1]
    out = joint_bilateral_upsample(values, guide_low, guide_high, _positions(height, width, h, w))[0, 0]
    truth = guide_high[0, 0]
    bilinear = F.interpolate(values, (height, width), mode="bilinear", align_corners=False)[0, 0]
    assert (out - truth).abs().max() < 0.05  # every pixel takes its own side's value
    assert (bilinear - truth).abs().max() > 0.3  # which plain interpolation smears (not an easy case)


def _plane_pair(shift: int = 8):
    """Two photos of a textured fronto-parallel plane, the second camera moved sideways so
    that the plane moves by exactly ``shift`` pixels: photo 1 is photo 0 shifted."""
    texture = np.asarray(Image.open(sorted((DEMO_SCENE / "images").glob("*.png"))[0]).convert("RGB"), np.float32) / 255
    texture = torch.from_numpy(texture)
    height, width = texture.shape[0], texture.shape[1] - shift
    images = torch.stack((texture[:, :width], texture[:, shift : shift + width]))
    focal, depth = 200.0, 4.0
    k = torch.tensor([[focal, 0.0, width / 2], [0.0, focal, height / 2], [0.0, 0.0, 1.0]]).expand(2, 3, 3)
    c2w = torch.eye(4).repeat(2, 1, 1)[:, :3]
    c2w[1, 0, 3] = shift * depth / focal  # OpenGL: +x is right in both conventions
    return images, c2w, k, depth


def _encoder_output_on_a_plane(views: ContextViews, plane: float) -> EncoderOutput:
    """An encoder's output whose every pixel's depth is the fronto-parallel plane z = ``plane``
    (encoder units; distance along each encoder pixel's unit ray), one sample per pixel."""
    b, v, _, h, w = views.image.shape
    directions = camera_directions(pixel_centers(h, w), views.intrinsics[0, 0])
    ray_depth = (plane / directions[..., 2]).reshape(1, 1, h * w, 1, 1).expand(b, v, h * w, 1, 1)
    n = v * h * w
    return EncoderOutput(
        gaussians=Gaussians(torch.zeros(1, n, 3), torch.eye(3).expand(1, n, 3, 3), torch.zeros(1, n, 3, 1), torch.ones(1, n)),
        depth_pdf=torch.ones(b, v, h * w, 1, 1), depths=ray_depth.contiguous(),
        depth_index=torch.zeros(b, v, h * w, 1, 1, dtype=torch.long), depth_offset=torch.zeros(b, v, h * w, 1, 1),
    )  # fmt: skip


def test_pixel_aligned_gaussians_of_both_views_give_each_context_photo_back():
    """With the right depth, every full-resolution pixel's Gaussian lands where both cameras
    saw it: rendered at each context camera, both views' Gaussians together give that photo
    back (the other view's Gaussians do not cover it), whatever the encoder's resolution."""
    images, c2w, k, plane = _plane_pair()
    views = prepare_context(images, c2w, k, image_multiple=8, long_side=96, gaussian_long_side=960)
    assert views.full_image.shape[-2:] == images.shape[1:3]  # own size (under the cap)
    plane = plane * views.scene_scale  # the encoder's units: baseline 1
    output = _encoder_output_on_a_plane(views, plane)
    native = native_resolution_gaussians(
        output, views, scale=0.3, opacity_gain=1.0, two_view_colours=False, stereo=False
    )
    height, width = views.full_image.shape[-2:]
    assert native.gaussians.means.shape == (1, 2 * height * width, 3)
    # Every Gaussian is on the plane (OpenCV cameras at the origin looking along world -z).
    torch.testing.assert_close(
        native.gaussians.means[0, :, 2], torch.full((2 * height * width,), -plane), rtol=2e-3, atol=0
    )
    rendered = render_views(native.gaussians, views.extrinsics, views.full_intrinsics, (height, width))[0]
    for view in range(2):
        truth = views.full_image[0, view].permute(1, 2, 0)
        inner = (slice(4, -4), slice(12, -12))  # away from the strip only one camera saw
        assert psnr(rendered[view][inner], truth[inner]) > 28.0
    # The encoder's own 96-px Gaussians upsampled would not: the photo at the encoder's size, scaled back up.
    low = F.interpolate(views.full_image[0, :1], views.image.shape[-2:], mode="bilinear", antialias=True)
    back = F.interpolate(low, (height, width), mode="bilinear")[0].permute(1, 2, 0)
    assert psnr(back, views.full_image[0, 0].permute(1, 2, 0)) < 27.0


def test_visible_mask_drops_faint_and_behind_the_near_plane():
    opacities = torch.tensor([0.5, 1 / 255 - 1e-4, 0.5, 0.5, 0.9])
    depths = torch.tensor([2.0, 2.0, 0.05, float("inf"), 1.0])
    near = torch.full((5,), 0.1)
    assert visible_mask(opacities, depths, near).tolist() == [True, False, False, False, True]


NATIVE = 2 * 300 * 200  # native Gaussians of the pair below at the 300 px cap


@pytest.fixture(scope="module")
def native_pipeline(tmp_path_factory):
    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config
    from tests.scenes import cut_scene

    scene = cut_scene("strecha-entry-p10", tmp_path_factory.mktemp("scene"), train=[3, 6], eval_=[4])
    config = pixelsplat_trainer_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    config.pipeline.model.gaussian_resolution = "native"
    config.pipeline.model.gaussian_long_side = 300
    return config.pipeline.setup(device="cpu", test_mode="val")


def test_native_gaussians_sit_on_their_pixels_rays_at_the_capped_resolution(native_pipeline):
    """One Gaussian per pixel of each context photo at the cap (300 px long side for a
    384x256 photo: 300x200); each Gaussian's centre projects onto its own pixel's centre in
    its own camera (nerfstudio's camera model, independent of the encoder's conventions),
    and gsplat's 1/255 rule holds for all of them."""
    model, data = native_pipeline.model, native_pipeline.datamanager
    # Nothing is pruned on this pair: native Gaussians ordered (view, row, column), then the
    # backdrop (the encoder's, one per pixel of its 96x64 input per view).
    assert model.means.shape[0] == NATIVE + 2 * 96 * 64
    assert (torch.sigmoid(model.opacities) >= 1 / 255 - 1e-6).all()
    rows, cols = torch.meshgrid(torch.arange(200), torch.arange(300), indexing="ij")
    for view, index in enumerate(data.context_indices()):
        camera = data.train_dataset.cameras[index : index + 1]
        camera.rescale_output_resolution(200 / int(camera.height))
        mine = model.gaussian_pixels[:NATIVE, 0] == view
        means = model.means.detach()[:NATIVE][mine]
        c2w = camera.camera_to_worlds[0]
        local = (means - c2w[:3, 3]) @ c2w[:3, :3]  # OpenGL camera frame: looks along -z
        u = float(camera.fx) * local[:, 0] / -local[:, 2] + float(camera.cx)
        v = -float(camera.fy) * local[:, 1] / -local[:, 2] + float(camera.cy)
        assert (local[:, 2] < 0).all()
        offsets = torch.stack((u - u.floor(), v - v.floor()), dim=-1)
        torch.testing.assert_close(offsets, torch.full_like(offsets, 0.5), atol=2e-3, rtol=0)
        assert torch.equal(u.floor().long(), cols.flatten()) and torch.equal(v.floor().long(), rows.flatten())


def test_own_gaussians_give_the_context_photo_back_sharper_than_the_encoders(native_pipeline):
    """Each context view's own Gaussians (made opaque), rendered at its camera at their
    resolution, reproduce the photo, far better than the photo at the encoder's input size can
    (114x76 here: larger than the bundled encoder's 96x64, so a harder bar)."""
    model, data = native_pipeline.model, native_pipeline.datamanager
    model.eval()
    saved = {name: value.detach().clone() for name, value in model.gauss_params.items()}
    try:
        index = data.context_indices()[0]
        camera = data.train_dataset.cameras[index : index + 1]
        camera.rescale_output_resolution(200 / int(camera.height))  # the cap's 300x200
        photo = data.cached_train[index]["image"].float()[..., :3].permute(2, 0, 1)[None] / 255
        truth = F.interpolate(photo, (200, 300), mode="bilinear", antialias=True)[0].permute(1, 2, 0)
        encoder_size = F.interpolate(photo, (76, 114), mode="bilinear", antialias=True)
        upscaled = F.interpolate(encoder_size, (200, 300), mode="bilinear")[0].permute(1, 2, 0)
        mine = torch.zeros(len(model.gaussian_pixels), dtype=torch.bool)
        mine[:NATIVE] = model.gaussian_pixels[:NATIVE, 0] == 0
        for name, value in saved.items():
            model.gauss_params[name] = torch.nn.Parameter(value[mine])
        model.gauss_params["opacities"] = torch.nn.Parameter(torch.full_like(saved["opacities"][mine], 5.0))
        with torch.no_grad():
            rendered = model.get_outputs_for_camera(camera)["rgb"]
        assert rendered.shape == truth.shape
        # 30.6 dB measured, against 26.2 dB for the photo at the encoder's size scaled back up.
        assert psnr(rendered, truth) > 29.0
        assert psnr(rendered, truth) > psnr(upscaled, truth) + 3.0
    finally:
        for name, value in saved.items():
            model.gauss_params[name] = torch.nn.Parameter(value)


def _context_psnrs(pipeline: Pipeline) -> list[float]:
    """PSNR of the render at each context camera at the 300 px cap against its photo."""
    model, data = pipeline.model, pipeline.datamanager
    model.eval()
    scores = []
    for index in data.context_indices():
        camera = data.train_dataset.cameras[index : index + 1]
        camera.rescale_output_resolution(200 / int(camera.height))
        photo = data.cached_train[index]["image"].float()[..., :3].permute(2, 0, 1)[None] / 255
        truth = F.interpolate(photo, (200, 300), mode="bilinear", antialias=True)[0].permute(1, 2, 0)
        with torch.no_grad():
            scores.append(float(psnr(model.get_outputs_for_camera(camera)["rgb"], truth)))
    return scores


def test_the_stereo_option_moves_depths_and_keeps_the_context_photos(native_pipeline, tmp_path):
    """``--pipeline.model.gaussian-stereo True`` moves some of the native Gaussians along their
    rays (the same count, other positions: 23 % measured) and both context photos still come back
    (32.9 and 32.6 dB measured)."""
    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config

    config = pixelsplat_trainer_config()
    config.pipeline.datamanager.data = native_pipeline.datamanager.config.data
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    config.pipeline.model.gaussian_long_side = 300
    config.pipeline.model.gaussian_stereo = True
    stereo = config.pipeline.setup(device="cpu", test_mode="val")
    assert stereo.model.means.shape == native_pipeline.model.means.shape  # nothing pruned: same Gaussians
    plain, refined = native_pipeline.model.means[:NATIVE].detach(), stereo.model.means[:NATIVE].detach()
    moved = (refined - plain).norm(dim=-1) > 1e-4
    assert 0.02 < moved.float().mean() < 0.9
    assert min(_context_psnrs(stereo)) >= 28.0


def test_both_views_gaussians_give_each_context_photo_back(native_pipeline):
    """With the defaults, everything predicted (both views' Gaussians and the backdrop), rendered
    at each context camera at the cap's resolution, gives that camera's photo back (33.0 and 32.9
    dB measured; 31.0 and 30.7 before the colour correction), although the bundled encoder's two
    depth maps disagree on this held-out pair."""
    # 32: above the 31.0 / 30.7 of the same Gaussians without the colour correction.
    assert min(_context_psnrs(native_pipeline)) >= 32.0


@pytest.mark.parametrize("cap", [0, -5, 64])
def test_a_gaussian_cap_below_the_encoders_input_is_refused_with_one_line(cap, tmp_path, capsys):
    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config
    from tests.scenes import cut_scene

    scene = cut_scene("strecha-entry-p10", tmp_path / "scene", train=[3, 6])
    config = pixelsplat_trainer_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.model.gaussian_resolution = "native"
    config.pipeline.model.gaussian_long_side = cap
    with pytest.raises(SystemExit) as exit_info:
        config.pipeline.setup(device="cpu", test_mode="val")
    assert exit_info.value.code == 2
    out = capsys.readouterr().out
    assert "gaussian-long-side must be at least" in out and "Traceback" not in out


def test_a_saved_run_reloads_its_gaussians_pixels_and_traces_a_click(native_pipeline):
    """ns-viewer on a saved run: the Gaussians' source pixels come back with the checkpoint,
    and clicking a Gaussian traces the encoder pixel it came from."""
    model = native_pipeline.model
    reloaded = native_pipeline.config.setup(device="cpu", test_mode="test")  # nothing predicted
    assert reloaded.model.gaussian_pixels.shape == (0, 3)
    reloaded.load_state_dict(native_pipeline.state_dict())
    assert torch.equal(reloaded.model.gaussian_pixels, model.gaussian_pixels)

    opacities = torch.sigmoid(model.opacities.detach()[:, 0])
    target = int(torch.where(model.gaussian_pixels[:, 0] == 1, opacities, torch.zeros_like(opacities)).argmax())
    mean = model.means.detach()[target]
    origin = mean + torch.tensor([0.0, 0.0, 2.0])
    trace = reloaded.model.walkthrough.pick(origin, mean - origin)
    assert trace is not None and [trace.view, *trace.pixel] == model.gaussian_pixels[target].tolist()


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("gaussian_opacity_gain", 0.0, "gaussian-opacity-gain must be positive"),
        ("gaussian_backdrop", 0.5, "gaussian-backdrop must be at least 1"),
        ("gaussian_colour_correction", 1.5, "gaussian-colour-correction must be in [0, 1]"),
    ],
)
def test_a_bad_native_setting_is_refused_with_one_line(field, value, message, tmp_path, capsys):
    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config
    from tests.scenes import cut_scene

    config = pixelsplat_trainer_config()
    config.pipeline.datamanager.data = cut_scene("strecha-entry-p10", tmp_path / "scene", train=[3, 6])
    config.pipeline.model.gaussian_resolution = "native"
    setattr(config.pipeline.model, field, value)
    with pytest.raises(SystemExit) as exit_info:
        config.pipeline.setup(device="cpu", test_mode="val")
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().out


def _two_cameras_on_a_plane(size: int = 16):
    """Two cameras 1 apart along x, both looking along +z (OpenCV) at the plane z = 5: their
    camera-to-world matrices, normalised intrinsics and exact depth maps (distance along the ray)."""
    extrinsics = torch.eye(4).repeat(2, 1, 1)
    extrinsics[1, 0, 3] = 1.0
    intrinsics = torch.tensor([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]]).repeat(2, 1, 1)
    xy = (torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="xy"), -1) + 0.5) / size
    rays = torch.cat((xy - 0.5, torch.ones_like(xy[..., :1])), -1)
    depth = 5.0 * rays.norm(dim=-1)  # z = 5 along each pixel's ray
    return extrinsics, intrinsics, torch.stack((depth, depth))


def test_in_free_space_is_what_a_photo_sees_through():
    from pixelsplat_ns.native_resolution import in_free_space

    extrinsics, intrinsics, depths = _two_cameras_on_a_plane()
    points = torch.tensor([[0.2, 0.1, 4.5], [0.2, 0.1, 5.5], [0.2, 0.1, 8.0], [9.0, 0.0, 3.0], [0.2, 0.1, -3.0]])
    # in front of the plane / 10 % behind it / far behind it / outside the image / behind the camera
    assert in_free_space(points, depths[0], extrinsics[0], intrinsics[0]).tolist() == [True, False, False, False, False]
    assert in_free_space(points, depths[0], extrinsics[0], intrinsics[0], factor=2.0)[:3].tolist() == [True] * 3


def test_two_view_colours_give_each_camera_its_own_photo():
    """Seen from its own camera a Gaussian has its own colour; seen from the other camera, the
    colour the other photo shows where it lands (a smooth ramp here, so bilinear sampling is
    exact), and in between their blend; one hidden from the other camera (behind the surface it
    sees) keeps its own colour from both."""
    from pixelsplat_ns.gaussians import official_sh_basis
    from pixelsplat_ns.native_resolution import two_view_harmonics

    extrinsics, intrinsics, depths = _two_cameras_on_a_plane()
    size = depths.shape[-1]
    ramp = (torch.arange(size) + 0.5) / size
    images = torch.stack(
        (
            torch.full((3, size, size), 0.3),
            torch.stack((ramp.expand(size, size), ramp[:, None].expand(size, size), torch.full((size, size), 0.7))),
        )
    )
    means = torch.tensor([[0.3, 0.2, 5.0], [0.6, 0.4, 10.0]])  # view 0's: on the plane / hidden behind it
    own = torch.tensor([[0.9, 0.1, 0.2], [0.4, 0.5, 0.6]])
    harmonics = two_view_harmonics(means, torch.zeros(2, dtype=torch.long), own, images, depths, extrinsics, intrinsics)

    def colour(camera: int) -> torch.Tensor:
        directions = torch.nn.functional.normalize(means - extrinsics[camera, :3, 3], dim=-1)
        return 0.5 + (harmonics * official_sh_basis(directions)[:, None, :4]).sum(-1)

    # (0.3, 0.2, 5) seen from the camera at x = 1 lands at (0.5 - 0.7 / 5, 0.5 + 0.2 / 5).
    expected_other = torch.tensor([0.5 - 0.7 / 5, 0.5 + 0.2 / 5, 0.7])
    torch.testing.assert_close(colour(0), own, atol=1e-3, rtol=0)
    torch.testing.assert_close(colour(1)[0], expected_other, atol=2e-3, rtol=0)
    torch.testing.assert_close(colour(1)[1], own[1], atol=1e-6, rtol=0)


def test_the_backdrop_moves_back_along_its_rays_behind_the_other_views_surface():
    """Backdrop Gaussians stay on their own camera's ray (so that camera sees them in the same
    direction), at least ``factor`` times as far, and behind the other camera's surface by that
    factor wherever that camera sees them."""
    from pixelsplat_ns.cameras import ContextViews
    from pixelsplat_ns.gaussians import Gaussians
    from pixelsplat_ns.native_resolution import backdrop_gaussians, in_free_space

    extrinsics, intrinsics, depths = _two_cameras_on_a_plane()
    # Per view, three points on the plane z = 5 (one of them far off to the side) and one nearer.
    offsets = torch.tensor([[0.2, 0.1, 5.0], [-0.3, 0.2, 5.0], [0.0, 0.0, 2.0], [30.0, 0.0, 5.0]])
    means = torch.cat((offsets, offsets + extrinsics[1, :3, 3]))[None]
    n = means.shape[1]
    gaussians = Gaussians(
        means=means, covariances=torch.eye(3).expand(1, n, 3, 3) * 0.01,
        harmonics=torch.zeros(1, n, 3, 1), opacities=torch.full((1, n), 0.5),
    )  # fmt: skip
    views = ContextViews(
        image=torch.zeros(1, 2, 3, 16, 16), extrinsics=extrinsics[None], intrinsics=intrinsics[None],
        near=torch.ones(1, 2), far=torch.full((1, 2), 100.0), scene_scale=1.0,
        full_image=torch.zeros(1, 2, 3, 16, 16), full_intrinsics=intrinsics[None],
    )  # fmt: skip
    moved = backdrop_gaussians(gaussians, views, depths[None], factor=2.0).means[0]
    origins = extrinsics[:, :3, 3].repeat_interleave(4, dim=0)
    before, after = means[0] - origins, moved - origins
    ratio = after.norm(dim=-1) / before.norm(dim=-1)
    torch.testing.assert_close(
        torch.nn.functional.normalize(after, dim=-1), torch.nn.functional.normalize(before, dim=-1)
    )
    assert (ratio >= 2.0 - 1e-5).all()
    for view in range(2):
        mine = moved[view * 4 : (view + 1) * 4]
        other = 1 - view
        assert not in_free_space(mine, depths[other], extrinsics[other], intrinsics[other], 2.0, "nearest").any()


def _textured_plane_photos(extrinsics: torch.Tensor, intrinsics: torch.Tensor, depths: torch.Tensor) -> torch.Tensor:
    """Photos of the plane z = 5 (``_two_cameras_on_a_plane``) painted with a fixed random
    texture in plane coordinates (bilinear, about 4 pixels per texel)."""
    texture = torch.rand(1, 3, 40, 40, generator=torch.Generator().manual_seed(0))
    size = depths.shape[-1]
    xy = (torch.stack(torch.meshgrid(torch.arange(size), torch.arange(size), indexing="xy"), -1) + 0.5) / size
    photos = []
    for view in range(2):
        plane_xy = extrinsics[view, :2, 3] + (xy - 0.5) * 5.0  # where each pixel's ray meets z = 5
        grid = (plane_xy / 6.0)[None]  # the texture spans [-6, 6]^2
        photos.append(F.grid_sample(texture, grid, mode="bilinear", align_corners=False)[0])
    return torch.stack(photos)


def test_stereo_moves_a_wrong_depth_onto_the_surface_both_photos_show():
    """A depth 25 % too far is moved back onto the textured plane where both cameras see it
    (within 2 %), also when matched at a smaller size, and a textureless pair keeps the depth
    it was given."""
    from pixelsplat_ns.native_resolution import refine_depths

    extrinsics, intrinsics, depths = _two_cameras_on_a_plane(size=64)
    photos = _textured_plane_photos(extrinsics, intrinsics, depths)
    refined = refine_depths(photos, depths * 1.25, extrinsics, intrinsics)
    both = torch.zeros_like(depths, dtype=torch.bool)
    both[0, :, 16:], both[1, :, :-16] = True, True  # the columns the other camera sees too (12.8 px apart)
    error = (refined / depths - 1).abs()
    assert error[both].median() < 0.02 and (error[both] < 0.05).float().mean() > 0.9
    # Matched at half the size, the change carried back to every pixel.
    error = (refine_depths(photos, depths * 1.25, extrinsics, intrinsics, long_side=32) / depths - 1).abs()
    assert error[both].median() < 0.02
    flat = refine_depths(torch.full_like(photos, 0.5), depths * 1.25, extrinsics, intrinsics)
    torch.testing.assert_close(flat, depths * 1.25, rtol=1e-5, atol=0)


def test_the_depth_sweep_finds_the_surface_the_other_photos_agree_on():
    """A depth 40 % too near is moved onto the textured plane (within 2 %) by matching against the
    other camera's photo, while a third photo that shows nothing of it (a grey wall) drops out of
    the better half of the sources; the reference's own photo is skipped; a textureless scene keeps
    the depth it was given."""
    from pixelsplat_ns.native_resolution import sweep_depths

    extrinsics, intrinsics, depths = _two_cameras_on_a_plane(size=64)
    photos = _textured_plane_photos(extrinsics, intrinsics, depths)
    third = extrinsics[1].clone()
    third[0, 3] = -1.0  # a camera on the other side, its photo grey
    sources = [photos[0], photos[1], torch.full_like(photos[0], 0.5)]
    source_extrinsics = torch.stack((extrinsics[0], extrinsics[1], third))
    refined, residual = sweep_depths(
        photos[:1], depths[:1] * 0.6, extrinsics[:1], intrinsics[:1], sources, source_extrinsics, intrinsics[[0, 1, 1]]
    )
    error = (refined[0] / depths[0] - 1).abs()
    seen = error[:, 24:]  # the columns camera 1 sees, away from the edge of its view (12.8 px apart)
    assert seen.median() < 0.02 and (seen < 0.05).float().mean() > 0.9
    assert residual[0, :, 24:].median() < 0.2  # matched: 1 - NCC near 0
    flat, _ = sweep_depths(
        torch.full_like(photos[:1], 0.5), depths[:1] * 0.6, extrinsics[:1], intrinsics[:1], sources,
        source_extrinsics, intrinsics[[0, 1, 1]],
    )  # fmt: skip
    torch.testing.assert_close(flat, depths[:1] * 0.6, rtol=1e-5, atol=0)


def test_depth_disagreement_is_the_factor_between_a_point_and_the_other_view_s_surface():
    """On a plane both cameras see: 1 where the depths agree, the factor a view's depth is off by
    where the other camera sees the point, infinite in the strip only one camera sees."""
    from pixelsplat_ns.native_resolution import depth_disagreement

    extrinsics, intrinsics, depths = _two_cameras_on_a_plane(size=64)
    both = torch.zeros_like(depths, dtype=torch.bool)
    both[0, :, 16:], both[1, :, :-16] = True, True  # the columns the other camera sees too (12.8 px apart)
    inner = both.clone()
    inner[0, :, :20], inner[1, :, -20:] = False, False  # away from the edge of what the other view sees
    agreeing = depth_disagreement(depths, extrinsics, intrinsics)
    torch.testing.assert_close(agreeing[inner], torch.ones(int(inner.sum())), atol=5e-3, rtol=0)  # pixel lookup
    assert agreeing[0, :, :12].isinf().all() and agreeing[1, :, -12:].isinf().all()  # only one camera sees these
    wrong = depths.clone()
    wrong[0] *= 1.3  # view 0 puts the plane 30 % too far: view 1 sees its points off by about that
    ratios = depth_disagreement(wrong, extrinsics, intrinsics)
    for view in range(2):  # view 1's points are 30 % nearer than view 0's wrong surface: the same factor
        seen = ratios[view][ratios[view].isfinite()]
        assert seen.numel() > 0.5 * 64 * 48 and (seen - 1.3).abs().median() < 0.02 and (seen > 1.1).all()


def test_colour_correction_brings_the_context_photos_closer():
    """One van Cittert step on the two-view colours raises both context cameras' PSNR (the
    renders' blur partly undone) and leaves the backdrop's colours alone."""
    from pixelsplat_ns.gaussians import concatenate_gaussians
    from pixelsplat_ns.native_resolution import correct_context_colours, render_context_cameras

    images, c2w, k, plane = _plane_pair()
    views = prepare_context(images, c2w, k, image_multiple=8, long_side=96, gaussian_long_side=960)
    output = _encoder_output_on_a_plane(views, plane * views.scene_scale)
    native = native_resolution_gaussians(output, views, stereo=False)
    first = native.gaussians
    backdrop = Gaussians(  # five Gaussians far behind, coloured by the encoder (degree 2)
        means=first.means[:, :5] * 3, covariances=first.covariances[:, :5], harmonics=torch.rand(1, 5, 3, 9),
        opacities=first.opacities[:, :5], scales=first.scales[:, :5], rotations=first.rotations[:, :5],
    )  # fmt: skip

    everything = concatenate_gaussians(native.gaussians, backdrop)
    count = native.gaussians.means.shape[1]
    corrected = correct_context_colours(everything, count, views, native.depths, step=1.0)
    torch.testing.assert_close(corrected.harmonics[:, count:], everything.harmonics[:, count:])
    inner = (slice(None), slice(4, -4), slice(12, -12))  # away from the strip only one camera saw
    for view, (before, after) in enumerate(
        zip(render_context_cameras(everything, views), render_context_cameras(corrected, views), strict=True)
    ):
        truth = views.full_image[0, view]
        assert psnr(after[inner].clamp(0, 1), truth[inner]) > psnr(before[inner].clamp(0, 1), truth[inner]) + 1.0
