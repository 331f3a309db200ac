"""View sampling and examples: gap schedule, targets, determinism, scale, near/far, exact crops."""

from __future__ import annotations

import dataclasses
import itertools
import math
from io import BytesIO

import numpy as np
import pytest
import torch
from PIL import Image

from pixelsplat_ns.cameras import denormalize_intrinsics
from pixelsplat_ns.data import (
    DataWarning,
    ExampleConfig,
    ExampleDataset,
    SceneFolderSource,
    ViewSamplerConfig,
    example_loader,
)
from pixelsplat_ns.data.examples import (
    SkipExample,
    draw_augmentation,
    jitter_colors,
    make_example,
    mirror_views,
    resize_and_crop,
)
from pixelsplat_ns.data.sampling import NotEnoughFrames, example_generator, gap_range, sample_views
from pixelsplat_ns.data.scenes import FrameImages, Scene
from tests.conftest import DATA, require
from tests.test_data_chunks import synthetic_scene, write_scene_folder

WARMUP = ViewSamplerConfig(
    num_target_views=3, min_gap=6, max_gap=12, initial_min_gap=2, initial_max_gap=4, warmup_steps=100
)


def test_gap_range_grows_linearly_with_step():
    ranges = [gap_range(WARMUP, step) for step in range(0, 130, 10)]
    assert ranges[0] == (2, 4) and ranges[-1] == (6, 12) and gap_range(WARMUP, 10**6) == (6, 12)
    assert gap_range(WARMUP, 50) == (4, 8)
    for (low_a, high_a), (low_b, high_b) in itertools.pairwise(ranges):
        assert low_a <= low_b and high_a <= high_b
    # Default: the gap starts at min_gap and its upper bound grows to max_gap.
    config = ViewSamplerConfig(min_gap=3, max_gap=9, warmup_steps=60)
    assert gap_range(config, 0) == (3, 3) and gap_range(config, 30) == (3, 6) and gap_range(config, 60) == (3, 9)
    assert gap_range(config, 0, stage="test") == (9, 9)


def test_sampled_views_respect_the_schedule_and_lie_between_context():
    config = ViewSamplerConfig(
        num_context_views=3,
        num_target_views=4,
        min_gap=4,
        max_gap=10,
        initial_max_gap=5,
        warmup_steps=50,
        min_distance_to_context=1,
    )
    gaps_by_step = {}
    for step in range(0, 80, 4):
        for slot in range(8):
            context, target = sample_views(40, config, step, example_generator(7, step, 0, slot))
            low, high = gap_range(config, step)
            left, right = context[0].item(), context[-1].item()
            assert low <= right - left <= high and 0 <= left < right < 40
            assert ((target >= left + 1) & (target <= right - 1)).all() and target.shape == (4,)
            assert context.shape == (3,) and left < context[1] < right  # extra view strictly between
            gaps_by_step.setdefault(step, []).append(right - left)
    assert max(gaps_by_step[0]) <= 5 and max(max(g) for s, g in gaps_by_step.items() if s >= 50) > 5

    # A scene shorter than the smallest gap raises; the largest gap is clamped to the scene.
    with pytest.raises(NotEnoughFrames):
        sample_views(4, config, 0, example_generator(0, 0))
    context, _ = sample_views(6, config, 10**6, example_generator(0, 0))
    assert context[-1] - context[0] <= 5
    # Test stage: full gap from frame 0, evenly spaced targets, no randomness.
    context, target = sample_views(40, config, 0, example_generator(0, 0), stage="test")
    assert context[0] == 0 and context[-1] == 10 and target.tolist() == [1, 4, 6, 9]


def test_circular_cameras_wrap_around():
    config = ViewSamplerConfig(min_gap=3, max_gap=3, num_target_views=2, cameras_are_circular=True)
    lefts = set()
    for step in range(40):
        context, target = sample_views(8, config, step, example_generator(0, step))
        assert (context[1] - context[0]) % 8 == 3 and ((target - context[0]) % 8 <= 3).all()
        lefts.add(context[0].item())
    assert max(lefts) > 8 - 3  # pairs wrap round the loop


def test_examples_are_deterministic_per_step_rank_and_seed():
    scene = synthetic_scene("s", 20)
    config = ExampleConfig(image_shape=(16, 24), min_gap=2, max_gap=10, num_target_views=3)
    a = make_example(scene, config, step=5, rank=1, slot=2)
    b = make_example(scene, config, step=5, rank=1, slot=2)
    for part in ("context", "target"):
        for key, value in a[part].items():
            assert torch.equal(value, b[part][key]), (part, key)
    picks = {
        tuple(make_example(scene, config, step=s, rank=r, slot=0)["context"]["index"].tolist())
        for s in range(6)
        for r in range(2)
    }
    assert len(picks) > 3  # other steps and ranks give other examples
    other_seed = ExampleConfig(image_shape=(16, 24), min_gap=2, max_gap=10, num_target_views=3, seed=1)
    assert any(
        not torch.equal(
            make_example(scene, other_seed, s)["context"]["index"], make_example(scene, config, s)["context"]["index"]
        )
        for s in range(6)
    )


def test_example_layout_baseline_and_near_far():
    require(DATA / "strecha-castle-p19")
    (scene,) = SceneFolderSource(DATA / "strecha-castle-p19").scenes("strecha-castle-p19")
    config = ExampleConfig(num_context_views=2, num_target_views=3, min_gap=2, max_gap=5)
    for step in range(3):
        example = make_example(scene, config, step)
        context, target = example["context"], example["target"]
        assert context["image"].shape == (2, 3, 256, 256) and target["image"].shape == (3, 3, 256, 256)
        assert context["extrinsics"].shape == (2, 4, 4) and target["intrinsics"].shape == (3, 3, 3)
        assert context["index"].dtype == torch.int64 and example["scene"] == "strecha-castle-p19"
        baseline = (context["extrinsics"][0, :3, 3] - context["extrinsics"][1, :3, 3]).norm()
        assert math.isclose(baseline.item(), 1.0, rel_tol=1e-5)
        assert (context["near"] > 0).all() and (context["near"] < context["far"]).all()
        assert torch.equal(target["near"], context["near"][:1].expand(3))
        # Rotations stay rotations (mirrored examples are reflected on both sides).
        rotation = context["extrinsics"][:, :3, :3]
        torch.testing.assert_close(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(2, 3, 3), atol=1e-5, rtol=0)

    # No baseline, too wide a field of view, too few frames: skipped with the reason.
    still = Scene(
        "still", scene.images, scene.extrinsics[:1].expand(19, 4, 4).clone(), scene.intrinsics, scene.image_shape
    )
    with pytest.raises(SkipExample, match="baseline"):
        make_example(still, config, 0)
    wide = Scene(
        "wide",
        scene.images,
        scene.extrinsics,
        scene.intrinsics * torch.tensor([[0.2], [0.2], [1.0]]),
        scene.image_shape,
    )
    with pytest.raises(SkipExample, match="field of view"):
        make_example(wide, config, 0)
    with pytest.raises(SkipExample, match="frames"):
        make_example(synthetic_scene("short", 2), config, 0)


def blob_scene(n: int, point: torch.Tensor, size=(180, 320)) -> Scene:
    """Frames with a Gaussian blob where ``point`` projects (non-centred principal point)."""
    h, w = size
    k_pixels = torch.tensor([[300.0, 0.0, 150.0], [0.0, 310.0, 100.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    c2w = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    c2w[:, 0, 3] = torch.arange(n) * 0.1
    frames = []
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    for i in range(n):
        camera = point - c2w[i, :3, 3]
        u, v = (k_pixels @ (camera / camera[2]))[:2]
        blob = torch.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2 * 4.0**2))
        array = (blob[..., None].expand(h, w, 3) * 255).round().to(torch.uint8).numpy()
        buffer = BytesIO()
        Image.fromarray(array).save(buffer, format="PNG")
        frames.append(buffer.getvalue())
    k = k_pixels.clone()
    k[0] /= w
    k[1] /= h
    return Scene("blob", FrameImages(frames), c2w.float(), k.float().expand(n, 3, 3).clone(), size)


def blob_centre(image: torch.Tensor) -> torch.Tensor:
    weight = image[0].double()
    weight = torch.where(weight > 0.05, weight, torch.zeros_like(weight))
    h, w = weight.shape
    ys, xs = torch.meshgrid(torch.arange(h) + 0.5, torch.arange(w) + 0.5, indexing="ij")
    return torch.stack(((weight * xs).sum(), (weight * ys).sum())) / weight.sum()


def project(point: torch.Tensor, c2w: torch.Tensor, k: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    camera = torch.linalg.inv(c2w.double())[:3] @ torch.cat((point.double(), point.new_ones(1).double()))
    return (denormalize_intrinsics(k.double(), shape[1], shape[0]) @ (camera / camera[2]))[:2]


@pytest.mark.parametrize("shape", [(256, 256), (96, 144)])
def test_crop_and_resize_keep_intrinsics_exact(shape):
    point = torch.tensor([0.5, 0.2, 5.0], dtype=torch.float64)
    scene = blob_scene(12, point)
    config = ExampleConfig(image_shape=shape, min_gap=3, max_gap=8, num_target_views=2, augment=False)
    for step in range(3):
        example = make_example(scene, config, step)
        scaled_point = point * example["scale"]  # the example's world is scaled (baseline 1)
        for part in ("context", "target"):
            views = example[part]
            for i in range(views["image"].shape[0]):
                expected = project(scaled_point, views["extrinsics"][i], views["intrinsics"][i], shape)
                found = blob_centre(views["image"][i])
                assert (found - expected).abs().max() < 0.1, (part, i, found, expected)
            # Mirrored views: the reflected point lands on the blob in the flipped images.
            mirrored = mirror_views(views)
            reflected = scaled_point * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)
            for i in range(views["image"].shape[0]):
                expected = project(reflected, mirrored["extrinsics"][i], mirrored["intrinsics"][i], shape)
                assert (blob_centre(mirrored["image"][i]) - expected).abs().max() < 0.1


def test_zoomed_crops_keep_intrinsics_exact():
    # Zoomed crops at random positions (the same for all views of an example) still put the
    # 3D point where the example's cameras project it.
    shape = (96, 96)
    point = torch.tensor([0.5, 0.2, 5.0], dtype=torch.float64)
    scene = blob_scene(12, point)
    config = ExampleConfig(
        image_shape=shape, min_gap=3, max_gap=8, num_target_views=2, augment=False, zoom_range=(1.2, 1.6)
    )
    checked = 0
    for step in range(6):
        example = make_example(scene, config, step)
        for part in ("context", "target"):
            views = example[part]
            for i in range(views["image"].shape[0]):
                expected = project(point * example["scale"], views["extrinsics"][i], views["intrinsics"][i], shape)
                if (expected < 12).any() or (expected > 84).any():
                    continue  # the blob is cut by the crop
                assert (blob_centre(views["image"][i]) - expected).abs().max() < 0.1, (step, part, i)
                checked += 1
    assert checked >= 12
    # Zoom draws differ between examples: the focal lengths are not all the same.
    focals = {round(make_example(scene, config, step)["context"]["intrinsics"][0, 0, 0].item(), 4) for step in range(6)}
    assert len(focals) > 1


def test_color_jitter_is_shared_by_all_views_of_an_example():
    scene = blob_scene(12, torch.tensor([0.5, 0.2, 5.0], dtype=torch.float64))
    plain = ExampleConfig(image_shape=(32, 32), min_gap=3, max_gap=8, num_target_views=2, augment=False)
    jittered = dataclasses.replace(plain, color_jitter=0.4)
    a, b = make_example(scene, plain, 5), make_example(scene, jittered, 5)
    assert torch.equal(a["context"]["index"], b["context"]["index"])  # same views, only colours differ
    assert not torch.allclose(a["context"]["image"], b["context"]["image"])
    generator = example_generator(jittered.seed, 5)
    sample_views(len(scene), jittered, 5, generator)  # the draws make_example takes before the augmentation
    factors = draw_augmentation(jittered, generator).colors
    for part in ("context", "target"):
        torch.testing.assert_close(b[part]["image"], jitter_colors(a[part]["image"], factors))
    torch.testing.assert_close(jitter_colors(a["context"]["image"], (1.0, 1.0, 1.0)), a["context"]["image"])


def test_resize_and_crop_matches_the_pixel_grid():
    # A 2x downscale of a 4x6 image with a 1-pixel crop: K maps pixel centres to pixel centres.
    image = Image.fromarray(np.zeros((40, 60, 3), dtype=np.uint8))
    k = torch.tensor([[0.8, 0.0, 0.45], [0.0, 1.1, 0.55], [0.0, 0.0, 1.0]])
    out, k_out = resize_and_crop(image, k, (20, 20))
    assert out.shape == (3, 20, 20)
    # 40x60 -> 20x30, crop 5 columns each side: cx_px = 0.45 * 30 - 5, fx_px = 0.8 * 30.
    torch.testing.assert_close(
        k_out, torch.tensor([[24 / 20, 0.0, (13.5 - 5) / 20], [0.0, 1.1, 0.55], [0.0, 0.0, 1.0]])
    )


def test_dataset_is_deterministic_and_numbers_steps(tmp_path):
    for i in range(3):
        write_scene_folder(tmp_path / f"scene{i}", 12, seed=i)
    source = SceneFolderSource(tmp_path)
    config = ExampleConfig(image_shape=(16, 16), min_gap=2, max_gap=6, num_target_views=2, seed=3)

    def take(dataset, count):
        return list(itertools.islice(iter(dataset), count))

    first = take(ExampleDataset(source, config, batch_size=2), 8)
    again = take(ExampleDataset(source, config, batch_size=2), 8)
    assert [e["step"] for e in first] == [0, 0, 1, 1, 2, 2, 3, 3]
    for a, b in zip(first, again, strict=True):
        assert a["scene"] == b["scene"] and torch.equal(a["context"]["image"], b["context"]["image"])
        assert torch.equal(a["target"]["index"], b["target"]["index"])
    # Every scene comes once per epoch (3 scenes: examples 0-2, 3-5 are each a permutation).
    assert (
        sorted(e["scene"] for e in first[:3])
        == sorted(e["scene"] for e in first[3:6])
        == ["scene0", "scene1", "scene2"]
    )
    # Resuming numbers steps from start_step.
    assert [e["step"] for e in take(ExampleDataset(source, config, batch_size=2, start_step=100), 3)] == [100, 100, 101]


def test_dataloader_workers_number_steps_by_batch(tmp_path):
    for i in range(4):
        write_scene_folder(tmp_path / f"scene{i}", 8, seed=i)
    config = ExampleConfig(image_shape=(16, 16), min_gap=2, max_gap=4, num_target_views=2)
    loader = example_loader(SceneFolderSource(tmp_path), config, batch_size=3, num_workers=2)
    batches = list(itertools.islice(iter(loader), 4))
    for step, batch in enumerate(batches):
        assert batch["context"]["image"].shape == (3, 2, 3, 16, 16)
        assert batch["step"].tolist() == [step] * 3  # the batch of step b, wherever it was made
    # In every epoch the two workers read disjoint halves of the 4 scenes (2 each).
    first_worker = [s for b in batches[0::2] for s in b["scene"]]
    second_worker = [s for b in batches[1::2] for s in b["scene"]]
    for epoch in range(3):
        mine, theirs = first_worker[2 * epoch : 2 * epoch + 2], second_worker[2 * epoch : 2 * epoch + 2]
        assert sorted(mine + theirs) == [f"scene{i}" for i in range(4)]


def test_unusable_scenes_warn_and_an_empty_share_fails_loudly(tmp_path):
    write_scene_folder(tmp_path / "long", 10)
    write_scene_folder(tmp_path / "short", 3)
    config = ExampleConfig(image_shape=(16, 16), min_gap=4, max_gap=6, num_target_views=1)
    dataset = ExampleDataset(SceneFolderSource(tmp_path), config)
    with pytest.warns(DataWarning, match="'short'"):
        examples = list(itertools.islice(iter(dataset), 3))
    assert {e["scene"] for e in examples} == {"long"}
    only_short = ExampleDataset(SceneFolderSource(tmp_path / "short"), config)
    with pytest.warns(DataWarning), pytest.raises(RuntimeError, match="no usable example"):
        next(iter(only_short))
