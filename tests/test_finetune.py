"""Per-scene fine-tuning (pixelsplat_ns.finetune) on a real scene with the bundled encoder."""

from __future__ import annotations

import math

import pytest
import torch

from pixelsplat_ns.data import ExampleConfig, example_from_indices, open_scene_source
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.finetune import (
    FitConfig,
    Splats,
    fit_splats,
    merge_splats,
    photometric_loss,
    pixel_splats,
    random_splats,
    render_splats,
    splats_from_gaussians,
    splats_from_pairs,
)
from pixelsplat_ns.metrics import psnr
from pixelsplat_ns.views import render_views
from pixelsplat_ns.weights import load_encoder
from tests.conftest import DATA, require

SHAPE = (48, 64)


@pytest.fixture(scope="module")
def views() -> dict:
    source = open_scene_source(require(DATA / "strecha-castle-p19"))
    scene = next(iter(source.scenes(source.shards()[0])))
    config = ExampleConfig(image_shape=SHAPE)
    context = torch.tensor([4, 6])
    train = example_from_indices(scene, context, torch.tensor([3, 4, 6, 7]), config)
    test = example_from_indices(scene, context, torch.tensor([5]), config)
    return {"context": train["context"], "train": train["target"], "test": test["target"]}


@pytest.fixture(scope="module")
def predicted(views):
    c = views["context"]
    encoder = load_encoder("tiny")
    with torch.inference_mode():
        return encoder(*(c[k][None] for k in ("image", "extrinsics", "intrinsics", "near", "far"))).gaussians


def test_encoder_start_renders_what_the_encoder_predicted(views, predicted):
    """The conversion to optimisable storage keeps every rendered pixel."""
    t = views["test"]
    splats = splats_from_gaussians(predicted)
    assert len(splats) == 2 * SHAPE[0] * SHAPE[1] and splats.sh_degree == min(predicted.sh_degree, 3)
    ours = render_splats(splats, t["extrinsics"], t["intrinsics"], SHAPE).clamp(0, 1)
    reference = render_views(predicted, t["extrinsics"][None], t["intrinsics"][None], SHAPE)[0]
    assert (ours - reference).abs().max() <= 1e-5
    assert reference.std() > 0.05  # a real image, not a blank one


def test_fine_tuning_lowers_the_loss_and_improves_held_out_views(views, predicted):
    train, test = views["train"], views["test"]
    start = splats_from_gaussians(predicted)
    seen: list[int] = []
    fitted, losses = fit_splats(
        start, train["image"], train["extrinsics"], train["intrinsics"], FitConfig(steps=60),
        callback=lambda step, splats: seen.append(step),
    )
    assert seen == list(range(61)) and len(losses) == 60
    assert all(torch.isfinite(v).all() for v in fitted.tensors().values())
    assert not fitted.means.requires_grad
    truth = train["image"].permute(0, 2, 3, 1)

    def train_loss(splats: Splats) -> float:
        with torch.no_grad():
            return float(photometric_loss(render_splats(splats, train["extrinsics"], train["intrinsics"], SHAPE), truth))

    assert train_loss(fitted) < 0.9 * train_loss(start)
    test_truth = test["image"][0].permute(1, 2, 0)
    with torch.no_grad():
        before = psnr(render_splats(start, test["extrinsics"], test["intrinsics"], SHAPE)[0].clamp(0, 1), test_truth)
        after = psnr(render_splats(fitted, test["extrinsics"], test["intrinsics"], SHAPE)[0].clamp(0, 1), test_truth)
    assert after > before + 0.3
    assert torch.equal(start.means, splats_from_gaussians(predicted).means)  # the start is not modified


def test_pixel_start_puts_each_gaussian_on_its_pixel_ray(views):
    c = views["context"]
    splats = pixel_splats(c["image"], c["extrinsics"], c["intrinsics"], c["near"], c["far"], seed=1)
    h, w = SHAPE
    assert len(splats) == 2 * h * w
    first = splats.means[: h * w]  # view 0, row-major pixels
    w2c = torch.linalg.inv(c["extrinsics"][0])
    camera = first @ w2c[:3, :3].T + w2c[:3, 3]
    assert (camera[:, 2] >= c["near"][0] * 0.999).all() and (camera[:, 2] <= c["far"][0] * 1.001).all()
    projected = camera @ c["intrinsics"][0].T
    xy = projected[:, :2] / projected[:, 2:]
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    assert torch.allclose(xy, torch.stack((xs, ys), dim=-1).reshape(-1, 2), atol=1e-4)
    colours = splats.sh[: h * w, 0] * 0.28209479177387814 + 0.5
    assert torch.allclose(colours, c["image"][0].reshape(3, -1).T, atol=1e-5)


def test_random_start_fills_a_cube_around_the_cameras(views):
    extrinsics = torch.cat((views["context"]["extrinsics"], views["train"]["extrinsics"]))
    splats = random_splats(5000, extrinsics, seed=3)
    centre = extrinsics[:, :3, 3].mean(dim=0)
    offsets = (splats.means - centre).abs().amax(dim=0)
    extent = max(float((extrinsics[:, :3, 3] - centre).norm(dim=-1).max()), 1.0)
    assert (offsets <= 1.5 * extent + 1e-5).all() and (offsets >= 1.3 * extent).all()  # spread over the cube
    assert torch.allclose(torch.sigmoid(splats.logit_opacities), torch.full((5000,), 0.1))
    assert torch.allclose(splats.quats.norm(dim=-1), torch.ones(5000))


def test_bad_inputs_name_the_problem(views, predicted):
    train = views["train"]
    start = splats_from_gaussians(predicted)
    images, extrinsics, intrinsics = train["image"], train["extrinsics"], train["intrinsics"]
    with pytest.raises(PixelSplatInputError, match="extrinsics"):
        fit_splats(start, images, extrinsics[:2], intrinsics, FitConfig(steps=1))
    with pytest.raises(PixelSplatInputError, match="at least one training view"):
        fit_splats(start, images[:0], extrinsics[:0], intrinsics[:0], FitConfig(steps=1))
    bad = extrinsics.clone()
    bad[1, 0, 3] = float("nan")
    with pytest.raises(PixelSplatInputError, match="NaN"):
        fit_splats(start, images, bad, intrinsics, FitConfig(steps=1))
    with pytest.raises(PixelSplatInputError, match=r"\[view, 3, h, w\]"):
        fit_splats(start, images[0], extrinsics, intrinsics, FitConfig(steps=1))
    with pytest.raises(PixelSplatInputError, match="quats"):
        Splats(start.means, start.log_scales, start.quats[:, :3], start.sh, start.logit_opacities)
    with pytest.raises(PixelSplatInputError, match="batch"):
        splats_from_gaussians(type(predicted)(*(torch.cat((t, t)) for t in (
            predicted.means, predicted.covariances, predicted.harmonics, predicted.opacities))))


def test_every_pair_start_is_in_the_reference_frame(views):
    """Gaussians predicted from another pair (another world scale) render like they do in
    their own example's world once brought to the reference pair's frame."""
    source = open_scene_source(require(DATA / "strecha-castle-p19"))
    scene = next(iter(source.scenes(source.shards()[0])))
    config = ExampleConfig(image_shape=SHAPE)
    encoder = load_encoder("tiny")
    alone = splats_from_pairs(encoder, scene, [(4, 6)], (4, 6), config)
    own = example_from_indices(scene, torch.tensor([6, 7]), torch.tensor([5]), config)
    reference_scale = example_from_indices(scene, torch.tensor([4, 6]), torch.tensor([5]), config)["scale"]
    assert abs(math.log(own["scale"] / reference_scale)) > math.log(1.2)  # the two worlds differ in scale
    moved = splats_from_pairs(encoder, scene, [(6, 7)], (4, 6), config)
    c = own["context"]
    with torch.inference_mode():
        raw = splats_from_gaussians(encoder(*(c[k][None] for k in ("image", "extrinsics", "intrinsics", "near", "far"))).gaussians)
    target_own, target_ref = own["target"], views["test"]  # frame 5 in both worlds
    image_own = render_splats(raw, target_own["extrinsics"], target_own["intrinsics"], SHAPE)
    image_ref = render_splats(moved, target_ref["extrinsics"], target_ref["intrinsics"], SHAPE)
    assert (image_own - image_ref).abs().max() <= 1e-4 and image_own.std() > 0.05
    both = merge_splats([alone, moved])
    assert len(both) == len(alone) + len(moved) and torch.equal(both.means[len(alone):], moved.means)
    with pytest.raises(PixelSplatInputError, match="SH degrees"):
        merge_splats([alone, Splats(moved.means, moved.log_scales, moved.quats, moved.sh[:, :1], moved.logit_opacities)])
    with pytest.raises(PixelSplatInputError, match="at least one pair"):
        splats_from_pairs(encoder, scene, [], (4, 6), config)
