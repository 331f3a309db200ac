"""Encoder behaviour on small synthetic inputs (tiny preset, 64x64 pairs): shapes, valid
Gaussians, means on their pixels' rays, gradients through the opacity, clear errors."""

from __future__ import annotations

import math

import pytest
import torch

from pixelsplat_ns.encoder import (
    EncoderConfig,
    EncoderOutput,
    PixelSplatEncoder,
    config_from_dict,
    config_to_dict,
    encoder_config,
)
from pixelsplat_ns.epipolar import EpipolarSampler
from pixelsplat_ns.gaussians import Gaussians


def rotation_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=torch.float64)


def make_scene(
    views: int = 2, size: tuple[int, int] = (64, 64), batch: int = 1, dtype: torch.dtype = torch.float32, seed: int = 0
) -> dict[str, torch.Tensor]:
    """Cameras on a short baseline along x, turned slightly towards each other; smooth random images."""
    generator = torch.Generator().manual_seed(seed)
    h, w = size
    extrinsics = torch.eye(4, dtype=torch.float64).repeat(batch, views, 1, 1)
    for v in range(views):
        extrinsics[:, v, :3, :3] = rotation_y(-0.05 * v)
        extrinsics[:, v, 0, 3] = 0.25 * v
        extrinsics[:, v, 1, 3] = 0.02 * v
    intrinsics = torch.tensor([[1.1, 0.0, 0.5], [0.0, 1.1 * w / h, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64)
    intrinsics = intrinsics.repeat(batch, views, 1, 1)
    coarse = torch.rand(batch * views, 3, h // 8, w // 8, generator=generator, dtype=torch.float64)
    images = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
    images = images.reshape(batch, views, 3, h, w).clamp(0, 1)
    near = torch.full((batch, views), 1.0, dtype=torch.float64)
    far = torch.full((batch, views), 30.0, dtype=torch.float64)
    scene = dict(images=images, extrinsics=extrinsics, intrinsics=intrinsics, near=near, far=far)
    return {k: v.to(dtype) for k, v in scene.items()}


def tiny_encoder(seed: int = 0, **changes) -> PixelSplatEncoder:
    torch.manual_seed(seed)
    cfg = encoder_config("tiny")
    for key, value in changes.items():
        setattr(cfg, key, value)
    return PixelSplatEncoder(cfg).eval()


@pytest.fixture(scope="module")
def encoder() -> PixelSplatEncoder:
    return tiny_encoder()


@pytest.fixture(scope="module")
def scene() -> dict[str, torch.Tensor]:
    return make_scene()


@pytest.fixture(scope="module")
def output(encoder, scene) -> EncoderOutput:
    with torch.no_grad():
        return encoder(**scene, deterministic=True, return_attention=True)


# ------------------------------------------------------------------------------ shapes


def test_presets_and_image_multiple():
    assert PixelSplatEncoder(encoder_config("tiny")).image_multiple == 8
    official = encoder_config("official")
    assert official.image_multiple == 16
    assert official == EncoderConfig()
    with pytest.raises(ValueError, match="unknown encoder preset"):
        encoder_config("huge")


def test_config_round_trip():
    for preset in ("tiny", "official"):
        cfg = encoder_config(preset)
        assert config_from_dict(config_to_dict(cfg)) == cfg
    with pytest.raises(ValueError, match="unknown EncoderConfig fields"):
        config_from_dict({"d_features": 3})


def test_output_shapes(encoder, output):
    b, v, h, w = 1, 2, 64, 64
    cfg = encoder.cfg
    n = v * h * w
    d_sh = (cfg.gaussian_adapter.sh_degree + 1) ** 2
    g = output.gaussians
    assert isinstance(g, Gaussians)
    assert g.means.shape == (b, n, 3)
    assert g.covariances.shape == (b, n, 3, 3)
    assert g.harmonics.shape == (b, n, 3, d_sh)
    assert g.opacities.shape == (b, n)
    assert output.depth_pdf.shape == (b, v, h * w, 1, cfg.num_depth_buckets)
    assert output.depths.shape == (b, v, h * w, 1, 1)
    torch.testing.assert_close(output.depth_pdf.sum(-1), torch.ones(b, v, h * w, 1))

    s = output.sampling
    r = (h // cfg.epipolar.downscale) * (w // cfg.epipolar.downscale)
    samples = cfg.epipolar.num_samples
    assert s.xy_ray.shape == (b, v, r, 2)
    assert s.xy_sample.shape == (b, v, 1, r, samples, 2)
    assert s.valid.shape == (b, v, 1, r)
    assert s.depths.shape == (b, v, 1, r, samples)
    assert s.valid.float().mean() > 0.5  # the views overlap

    a = output.attention
    assert a.shape == (b, v, cfg.epipolar.num_layers, cfg.epipolar.num_heads, r, 1, samples)
    torch.testing.assert_close(a.sum(dim=(-1, -2)), torch.ones(a.shape[:-2]))


def test_stochastic_samples_several_gaussians_per_pixel(encoder, scene):
    k = encoder.cfg.gaussians_per_pixel
    with torch.no_grad():
        torch.manual_seed(1)
        first = encoder(**scene, deterministic=False)
        torch.manual_seed(1)
        second = encoder(**scene, deterministic=False)
    assert first.gaussians.means.shape == (1, 2 * 64 * 64 * k, 3)
    assert first.depths.shape == (1, 2, 64 * 64, 1, k)
    torch.testing.assert_close(first.gaussians.means, second.gaussians.means)
    # every drawn bucket has positive probability and the opacity is its probability / k
    drawn = first.depth_pdf.gather(-1, first.depth_index)
    assert (drawn > 0).all()
    torch.testing.assert_close(first.gaussians.opacities.reshape(drawn.shape), drawn / k, rtol=1e-5, atol=1e-7)


def test_monocular_and_three_view_variants():
    scene2 = make_scene(views=2)
    mono = tiny_encoder(use_epipolar_transformer=False)
    with torch.no_grad():
        out = mono(**scene2)
    assert out.sampling is None and out.attention is None
    assert out.gaussians.means.shape == (1, 2 * 64 * 64, 3)

    three = tiny_encoder(num_views=3)
    assert "epipolar_transformer.view_embeddings.weight" in three.state_dict()
    scene3 = make_scene(views=3)
    with torch.no_grad():
        a = three(**scene3, deterministic=True)
        b = three(**scene3, deterministic=True)
    assert a.gaussians.means.shape == (1, 3 * 64 * 64, 3)
    assert a.sampling.xy_sample.shape[2] == 2  # two other views per view
    torch.testing.assert_close(a.gaussians.means, b.gaussians.means)


def test_batch_elements_are_independent(encoder):
    pair = make_scene(batch=2)
    with torch.no_grad():
        both = encoder(**pair)
        second = encoder(**{k: v[1:] for k, v in pair.items()})
    torch.testing.assert_close(both.gaussians.means[1:], second.gaussians.means, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------ validity


def test_covariances_symmetric_positive_definite(output):
    c = output.gaussians.covariances.double()
    assert torch.equal(c, c.transpose(-1, -2))
    eigenvalues = torch.linalg.eigvalsh(0.5 * (c + c.transpose(-1, -2)))
    assert (eigenvalues > 0).all()


def test_opacities_in_open_unit_interval(output):
    o = output.gaussians.opacities
    assert torch.isfinite(o).all()
    assert (o > 0).all() and (o < 1).all()


def test_means_on_pixel_rays_at_sampled_depth(output, scene):
    b, v, _, h, w = scene["images"].shape
    means = output.gaussians.means.reshape(b, v, h, w, 3).double()
    depths = output.depths.reshape(b, v, h, w).double()
    extrinsics = scene["extrinsics"].double()
    intrinsics = scene["intrinsics"].double()
    near = scene["near"].double()[:, :, None, None]
    far = scene["far"].double()[:, :, None, None]
    assert ((depths >= near * (1 - 1e-5)) & (depths <= far * (1 + 1e-5))).all()

    origins = extrinsics[:, :, None, None, :3, 3]
    torch.testing.assert_close((means - origins).norm(dim=-1), depths, rtol=1e-4, atol=1e-5)

    # In its own camera, each mean is in front and projects into its own pixel.
    rotation = extrinsics[:, :, None, None, :3, :3]
    camera = (rotation.transpose(-1, -2) @ (means - origins)[..., None])[..., 0]
    assert (camera[..., 2] > 0).all()
    projected = (intrinsics[:, :, None, None] @ (camera / camera[..., 2:])[..., None])[..., 0]
    rows = torch.arange(h, dtype=torch.float64)[:, None].expand(h, w)
    cols = torch.arange(w, dtype=torch.float64)[None, :].expand(h, w)
    tolerance = 1e-3
    assert (projected[..., 0] * w >= cols - tolerance).all() and (projected[..., 0] * w <= cols + 1 + tolerance).all()
    assert (projected[..., 1] * h >= rows - tolerance).all() and (projected[..., 1] * h <= rows + 1 + tolerance).all()


def test_depths_lie_in_their_top_bucket(output, scene):
    """Deterministic depths come from the most probable bucket and lie inside that
    bucket's interval (buckets are uniform in disparity from near to far)."""
    pdf, index, depths = output.depth_pdf, output.depth_index, output.depths.double()
    assert (index == pdf.argmax(dim=-1, keepdim=True)).all()
    buckets = pdf.shape[-1]
    near = scene["near"].double()[:, :, None, None, None]
    far = scene["far"].double()[:, :, None, None, None]

    def depth_at(relative_disparity):
        return 1 / ((1 - relative_disparity) * (1 / near - 1 / far) + 1 / far)

    low, high = depth_at(index.double() / buckets), depth_at((index.double() + 1) / buckets)
    assert ((depths >= low * (1 - 1e-5)) & (depths <= high * (1 + 1e-5))).all()


# ------------------------------------------------------------------------------ epipolar geometry


def test_epipolar_samples_lie_on_the_projected_ray():
    """In float64, the 3D point each sample stands for (on the source ray, at the sample's
    depth) projects onto the sample's position in the other view."""
    scene = make_scene(dtype=torch.float64)
    ext, k, near, far = scene["extrinsics"], scene["intrinsics"], scene["near"], scene["far"]
    sampler = EpipolarSampler(16)
    sampling = sampler((16, 16), ext, k, near, far)
    depths = sampler.sample_depths(sampling, ext, k, near, far)
    points = sampling.origins[:, :, None, :, None] + depths[..., None] * sampling.directions[:, :, None, :, None]
    other = sampling.collect(ext)[:, :, :, None, None]
    other_k = sampling.collect(k)[:, :, :, None, None]
    camera = (other[..., :3, :3].transpose(-1, -2) @ (points - other[..., :3, 3])[..., None])[..., 0]
    xy = (other_k @ (camera / camera[..., 2:])[..., None])[..., :2, 0]
    inside = (
        sampling.valid[..., None]
        & (depths > near[:, :, None, None, None] * 1.001)
        & (depths < far[:, :, None, None, None] * 0.999)
    )
    assert inside.sum() > 100
    error = (xy - sampling.xy_sample).norm(dim=-1)[inside]
    assert error.max() < 1e-6  # the official projection adds float32 eps to z
    # Samples of valid rays lie in the other image and their depths increase along the line.
    assert ((sampling.xy_sample >= -1e-6) & (sampling.xy_sample <= 1 + 1e-6)).all(-1)[sampling.valid].all()
    monotone = (depths[..., 1:] >= depths[..., :-1] - 1e-9)[sampling.valid]
    assert monotone.all()


# ------------------------------------------------------------------------------ gradients


def test_gradient_reaches_depth_logits_through_opacity():
    torch.manual_seed(0)
    encoder = PixelSplatEncoder(encoder_config("tiny")).double().eval()
    scene = make_scene(size=(32, 32), dtype=torch.float64)
    weight = encoder.depth_predictor.projection[1].weight
    logit_rows = torch.arange(0, weight.shape[0], 2)  # outputs interleave (bucket, surface, [logit, offset])

    out = encoder(**scene, deterministic=True)
    out.gaussians.opacities.sum().backward()
    grad = weight.grad[logit_rows]
    assert grad.abs().max() > 0

    row, col = divmod(int(grad.abs().argmax()), weight.shape[1])
    row = int(logit_rows[row])
    eps = 1e-6

    def total_opacity() -> float:
        with torch.no_grad():
            return encoder(**scene, deterministic=True).gaussians.opacities.sum().item()

    original = weight.data[row, col].item()
    weight.data[row, col] = original + eps
    plus = total_opacity()
    weight.data[row, col] = original - eps
    minus = total_opacity()
    weight.data[row, col] = original
    finite_difference = (plus - minus) / (2 * eps)
    analytic = weight.grad[row, col].item()
    assert analytic == pytest.approx(finite_difference, rel=1e-4)


def test_training_backward_reaches_every_parameter_group():
    encoder = tiny_encoder().train()
    scene = make_scene(size=(32, 32))
    out = encoder(**scene, deterministic=False)
    g = out.gaussians
    loss = g.means.square().mean() + g.covariances.abs().mean() + g.harmonics.square().mean() + g.opacities.mean()
    loss.backward()
    for name in (
        "backbone",
        "backbone_projection",
        "epipolar_transformer",
        "depth_predictor",
        "to_gaussians",
        "high_resolution_skip",
    ):
        grads = [p.grad for n, p in encoder.named_parameters() if n.startswith(name)]
        assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), name


# ------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.update(images=s["images"][0]), "images must have shape"),
        (lambda s: s.update(images=s["images"][:, :, :2]), "images must have shape"),
        (lambda s: s.update(images=s["images"][..., :60, :]), "not a multiple of 8"),
        (lambda s: s.update(extrinsics=s["extrinsics"][:, :1]), "extrinsics must have shape"),
        (lambda s: s.update(intrinsics=s["intrinsics"][..., :2, :]), "intrinsics must have shape"),
        (lambda s: s.update(near=s["near"][0]), "near must have shape"),
        (lambda s: s["extrinsics"].__setitem__((0, 1, 0, 3), float("nan")), "extrinsics contain NaN"),
        (lambda s: s["intrinsics"].__setitem__((0, 0, 0, 0), float("inf")), "intrinsics contain NaN"),
        (lambda s: s["images"].__setitem__((0, 0, 0, 0, 0), float("nan")), "images contain NaN"),
        (lambda s: s.update(far=s["near"] * 0.5), "far must be greater than near"),
        (lambda s: s.update(near=s["near"] * 0), "near must be positive"),
        (lambda s: s["extrinsics"].__setitem__((0, 0, 0, 0), 3.0), "not rotations"),
        (lambda s: s.update({k: v[:, :1] for k, v in s.items()}), "at least 2 context views"),
        (lambda s: s.update(extrinsics=s["extrinsics"].long()), "floating-point"),
    ],
)
def test_bad_inputs_raise_clear_errors(encoder, change, message):
    scene = {k: v.clone() for k, v in make_scene().items()}
    change(scene)
    with pytest.raises(ValueError, match=message):
        encoder(**scene)


def test_more_views_than_built_for(encoder):
    with pytest.raises(ValueError, match="built for 2 context views"):
        encoder(**make_scene(views=3))
