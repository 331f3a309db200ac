"""ns-train wide-baseline as a user runs it (ns-train, ns-render, ns-eval), and the model's
pieces: chunked rendering, fine-tuning and pretraining steps, the walkthrough, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from pixelsplat_ns.errors import PixelSplatInputError
from tests.scenes import cut_scene

BIN = Path(sys.executable).parent


def run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def scene(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wb-scene")
    return cut_scene("pavilion-chair-sunset", root / "scene", train=[20, 21, 25, 26], eval_=[22, 23])


@pytest.fixture(scope="module")
def trained_run(scene: Path, tmp_path_factory) -> Path:
    """Two fine-tuning steps from the default network (the bundled small one)."""
    out = tmp_path_factory.mktemp("wb-run")
    result = run(
        str(BIN / "ns-train"), "wide-baseline", "--data", str(scene), "--output-dir", str(out),
        "--vis", "tensorboard", "--max-num-iterations", "2",
        "--pipeline.model.train-rays-per-step", "64",
        "--pipeline.datamanager.context-views", "frame_00021_train", "frame_00025_train",
        "nerfstudio-data", "--eval-mode", "filename",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    configs = list(out.rglob("config.yml"))
    assert len(configs) == 1
    return configs[0]


def test_ns_train_help_lists_both_methods():
    result = run(str(BIN / "ns-train"), "--help")
    assert "wide-baseline" in result.stdout and "wide-baseline-pretrain" in result.stdout


def test_ns_render_and_ns_eval_render_a_reloaded_run(trained_run: Path, tmp_path: Path):
    result = run(
        str(BIN / "ns-render"), "dataset", "--load-config", str(trained_run), "--output-path", str(tmp_path / "r"),
        "--split", "test", "--rendered-output-names", "rgb", "depth",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    frames = sorted((tmp_path / "r").rglob("*.jpg")) + sorted((tmp_path / "r").rglob("*.png"))
    assert len(frames) >= 4, frames  # 2 test frames x (rgb, depth)
    result = run(str(BIN / "ns-eval"), "--load-config", str(trained_run), "--output-path", str(tmp_path / "m.json"))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / "m.json").read_text())["results"]
    assert math.isfinite(metrics["psnr"]) and 0 <= metrics["ssim"] <= 1


@pytest.fixture(scope="module")
def pipeline(trained_run: Path):
    """The reloaded run, as ns-viewer loads it."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(trained_run, test_mode="inference")
    return pipeline


def test_reloaded_run_keeps_its_context_views(pipeline):
    model = pipeline.model
    assert model.context_images.shape == (2, 3, 128, 128)
    assert model.context_names == [] or len(model.context_names) == 2
    camera = pipeline.datamanager.train_dataset.cameras[0:1]
    outputs = model.get_outputs_for_camera(camera)
    h, w = int(camera.height), int(camera.width)
    assert outputs["rgb"].shape == (h, w, 3) and outputs["depth"].shape == (h, w, 1)
    assert outputs["rgb"].min() >= 0 and outputs["rgb"].max() <= 1


def test_chunked_rendering_equals_one_pass(pipeline):
    model = pipeline.model
    camera = pipeline.datamanager.train_dataset.cameras[1:2]
    bundle = camera.generate_rays(camera_indices=0, keep_shape=True)[::16, ::16]
    with torch.no_grad():
        whole = model.render_rays(bundle.origins, bundle.directions)
        parts = [
            model.render_rays(o, d) for o, d in zip(bundle.origins.split(3), bundle.directions.split(3), strict=True)
        ]
    assert torch.allclose(whole.rgb[0], torch.cat([p.rgb[0] for p in parts]), atol=1e-5)
    assert torch.allclose(whole.depth[0], torch.cat([p.depth[0] for p in parts]), atol=1e-4)


def test_walkthrough_traces_a_context_pixel_and_a_clicked_ray(pipeline):
    from pixelsplat_ns.nerfstudio.wide_baseline_walkthrough import ray_items

    walkthrough = pipeline.model.walkthrough
    trace = walkthrough.trace(0, 64, 70)
    s = pipeline.model.network.cfg.num_samples
    assert trace.points.shape == (2, s, 3) and trace.attention.shape == (2, s)
    assert math.isclose(float(trace.attention.sum()), 1.0, rel_tol=1e-4)
    assert "pseudo-depth" in walkthrough.readout.value
    items = ray_items(trace)
    assert {"ray", "depth", "epipolar_0", "epipolar_1"} <= set(items)
    # The samples lie on the traced ray.
    points = trace.points[torch.isfinite(trace.points).all(-1)]
    offsets = points - trace.origin
    across = offsets - (offsets @ trace.direction)[:, None] * trace.direction
    assert float(across.norm(dim=-1).max()) < 1e-3 * max(1.0, float(offsets.norm(dim=-1).max()))
    clicked = walkthrough.pick(trace.origin, trace.direction)
    assert torch.allclose(clicked.attention, trace.attention, atol=1e-5)
    with pytest.raises(PixelSplatInputError, match="outside"):
        walkthrough.run.trace(0, 500, 3)


def test_bad_context_cameras_get_one_clear_line():
    from pixelsplat_ns.cameras import widebaseline_context

    images = torch.rand(2, 32, 32, 3)
    k = torch.tensor([[30.0, 0, 16], [0, 30.0, 16], [0, 0, 1]]).repeat(2, 1, 1)
    same = torch.eye(4)[:3].repeat(2, 1, 1)
    with pytest.raises(PixelSplatInputError, match="identical camera positions"):
        widebaseline_context(images, same, k, 32)
    nan = same.clone()
    nan[1, 0, 3] = float("nan")
    with pytest.raises(PixelSplatInputError, match="non-finite"):
        widebaseline_context(images, nan, k, 32)
    with pytest.raises(PixelSplatInputError, match="at least two context views"):
        widebaseline_context(images[:1], same[:1], k[:1], 32)


def test_a_few_pretraining_steps_lower_the_loss():
    """The pretraining model on one fixed example: Adam steps lower its MSE."""
    from pixelsplat_ns.nerfstudio.wide_baseline_pretrain import WideBaselinePretrainModelConfig

    torch.manual_seed(0)
    model = WideBaselinePretrainModelConfig(rays_per_target=128).setup(scene_box=None, num_train_data=0, metadata={})
    model.train()
    c2w = torch.eye(4).repeat(1, 4, 1, 1)
    c2w[0, 1, 0, 3], c2w[0, 2, 0, 3], c2w[0, 3, 0, 3] = 1.0, 0.3, 0.6
    k = torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]).repeat(1, 4, 1, 1)
    grid = torch.linspace(0, 1, 128)
    pattern = torch.stack([grid[None].expand(128, -1), grid[:, None].expand(-1, 128), 0.5 * torch.ones(128, 128)])
    images = pattern[None, None].repeat(1, 4, 1, 1, 1)
    batch = {
        "context": {"image": images[:, :2], "extrinsics": c2w[:, :2], "intrinsics": k[:, :2]},
        "target": {"image": images[:, 2:], "extrinsics": c2w[:, 2:], "intrinsics": k[:, 2:]},
    }
    optimiser = torch.optim.Adam(model.network.parameters(), lr=1e-3)
    losses = []
    for _ in range(8):
        model.step = 0  # the same rays every step
        loss = model.get_loss_dict(model(batch), batch)["mse"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0], losses
    model.eval()
    with torch.no_grad():
        rendered = model(batch)["rgb"]
    assert rendered.shape == (1, 2, 128, 128, 3)


def test_explain_records_a_wide_baseline_run(trained_run: Path, tmp_path: Path):
    """pixelsplat-ns explain on the wide-baseline method: its probe is a pixel of every rendered
    frame, with 2 x num_samples epipolar samples weighted by the first attention round."""
    from rerun.chunk import RrdReader

    rrd, png = tmp_path / "wb.rrd", tmp_path / "wb.png"
    result = run(
        str(BIN / "pixelsplat-ns"), "explain", "--load-config", str(trained_run), "--rerun", str(rrd),
        "--figure", str(png), "--frames", "2", "--render-long-side", "24", "--pixel", "10", "12",
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    chunks: dict[str, list] = {}
    for chunk in RrdReader(rrd).stream():
        chunks.setdefault(chunk.entity_path, []).append(chunk)
    context = sorted(name for name in chunks if name.count("/") == 3 and name.startswith("/world/context/"))
    assert context == ["/world/context/frame_00021_train", "/world/context/frame_00025_train"]
    assert {"/world/path/rgb", "/world/path/depth", "/world/path/rgb/probe", "/world/probe/ray"} <= set(chunks)
    samples = chunks["/world/probe/samples"]
    assert not any(chunk.is_static for chunk in samples)  # one probe per frame
    positions = [v for c in samples for v in c.to_record_batch().column("Points3D:positions").to_pylist()]
    assert len(positions) == 2 and 0 < len(positions[0]) <= 2 * 32
    assert png.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["wb.png", "wb.rrd"]


def test_fine_tuning_renders_and_scores_the_same_random_pixels(pipeline):
    """Per-scene fine-tuning: the rays rendered are those of the pixels the loss reads, and a few
    Adam steps on them lower the loss. (Last: it changes the shared model's weights.)"""
    model = pipeline.model
    dataset = pipeline.datamanager.train_dataset
    camera = dataset.cameras[0:1]
    bundle, pixels = model._random_pixel_rays(camera)
    full = camera.generate_rays(camera_indices=0, keep_shape=True)
    assert torch.allclose(bundle.directions, full.directions.reshape(-1, 3)[pixels], atol=1e-6)
    assert torch.allclose(bundle.origins, full.origins.reshape(-1, 3)[pixels], atol=1e-6)

    batch = {"image": dataset[0]["image"][..., :3]}
    model.train()
    optimiser = torch.optim.Adam(model.get_param_groups()["network"], lr=1e-4)
    losses = []
    for _ in range(5):
        model.step = 7  # the same pixels every step
        outputs = model(camera)
        assert outputs["rgb"].shape == (len(outputs["pixels"]), 3)
        loss = model.get_loss_dict(outputs, batch)["mse"]
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(float(loss))
    model.eval()
    assert losses[-1] < losses[0], losses
