"""The README's bad-input rows added for odd photos, cameras, checkpoints and interrupted writes:
each through the path a user takes (the pipeline ``ns-train`` sets up, nerfstudio's training
loop, the exporter), on copies of the embedded demo scene."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pixelsplat_ns.cli.demo import DEMO_CONTEXT, DEMO_SCENE
from pixelsplat_ns.errors import PixelSplatOutputError
from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config

FRAMES = (38, 39, 40, 43, 45, 46, 47)  # training frames around the context pair 40/45, one held out (43)


@pytest.fixture(autouse=True)
def unwrapped_console(monkeypatch):
    """nerfstudio's console wraps at 120 columns; the messages are checked whole."""
    from nerfstudio.utils.rich_utils import CONSOLE

    monkeypatch.setattr(CONSOLE, "width", 1_000)


def printed(capsys) -> str:
    """What was printed, on one line."""
    captured = capsys.readouterr()
    return "".join((captured.out + captured.err).splitlines())


def demo_copy(destination: Path, frames=FRAMES) -> Path:
    """The demo scene with only ``frames`` (fewer images to cache), each frame carrying its own
    intrinsics and size so that tests can change one image's size."""
    meta = json.loads((DEMO_SCENE / "transforms.json").read_text())
    shared = {key: meta.pop(key) for key in ("fl_x", "fl_y", "cx", "cy", "w", "h")}
    (destination / "images").mkdir(parents=True)
    kept = []
    for frame in meta["frames"]:
        if int(Path(frame["file_path"]).stem.split("_")[1]) in frames:
            shutil.copy(DEMO_SCENE / frame["file_path"], destination / frame["file_path"])
            kept.append({**frame, **shared})
    meta["frames"] = kept
    (destination / "transforms.json").write_text(json.dumps(meta, indent=1))
    return destination


def edit_frames(scene: Path, edit) -> None:
    meta = json.loads((scene / "transforms.json").read_text())
    for frame in meta["frames"]:
        edit(frame, int(Path(frame["file_path"]).stem.split("_")[1]))
    (scene / "transforms.json").write_text(json.dumps(meta, indent=1))


def image_path(scene: Path, frame: int) -> Path:
    return next((scene / "images").glob(f"frame_{frame:05d}_*.png"))


def rgb(frame: int) -> np.ndarray:
    return np.asarray(Image.open(next((DEMO_SCENE / "images").glob(f"frame_{frame:05d}_*.png"))).convert("RGB"))


def pipeline_config(scene: Path):
    config = pixelsplat_trainer_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    config.pipeline.datamanager.context_views = DEMO_CONTEXT
    return config


def set_up(scene: Path, **model):
    """The pipeline as ``ns-train pixelsplat`` sets it up (the Gaussians predicted)."""
    config = pipeline_config(scene)
    for key, value in model.items():
        setattr(config.pipeline.model, key, value)
    return config.pipeline.setup(device="cpu", test_mode="val")


def refused(capsys, scene: Path, **model) -> str:
    """Set-up must stop with exit code 2 and one line (no traceback); returns what was printed."""
    with pytest.raises(SystemExit) as exit_info:
        set_up(scene, **model)
    assert exit_info.value.code == 2
    output = printed(capsys)
    assert "pixelsplat: error:" in output and "Traceback" not in output, output[-2000:]
    return output


# --------------------------------------------------------------------------------------------
# Odd photos: alpha, greyscale, palette, 16 bits
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def odd_images(tmp_path_factory):
    """Every training image in another pixel format: 38 palette, 39 16-bit RGB, 40 (context) RGBA
    with its left half transparent, 45 (context) 16-bit greyscale, 46 8-bit greyscale, 47
    greyscale + alpha. Returns (pipeline, the values each file holds)."""
    scene = demo_copy(tmp_path_factory.mktemp("odd") / "scene")
    grey = {i: np.asarray(Image.fromarray(rgb(i)).convert("L")) for i in (45, 46, 47)}
    Image.fromarray(rgb(38)).quantize(64).save(image_path(scene, 38))
    cv2.imwrite(str(image_path(scene, 39)), rgb(39)[..., ::-1].astype(np.uint16) * 257)  # 16-bit RGB
    alpha = np.full(rgb(40).shape[:2], 255, np.uint8)
    alpha[:, :160] = 0
    Image.fromarray(np.dstack((rgb(40), alpha)), "RGBA").save(image_path(scene, 40))
    cv2.imwrite(str(image_path(scene, 45)), grey[45].astype(np.uint16) * 257)  # 16-bit greyscale
    Image.fromarray(grey[46], "L").save(image_path(scene, 46))
    Image.fromarray(np.dstack((grey[47], np.full_like(grey[47], 200))), "LA").save(image_path(scene, 47))
    assert Image.open(image_path(scene, 45)).mode == "I;16" and Image.open(image_path(scene, 38)).mode == "P"
    expected = {
        38: np.asarray(Image.open(image_path(scene, 38)).convert("RGB")),
        39: rgb(39),
        40: np.dstack((rgb(40), alpha)),
        45: np.repeat(grey[45][..., None], 3, axis=-1),
        46: np.repeat(grey[46][..., None], 3, axis=-1),
        47: np.dstack([grey[47]] * 3 + [np.full_like(grey[47], 200)]),
    }
    return set_up(scene), expected


def cached(pipeline, frame: int) -> np.ndarray:
    datamanager = pipeline.datamanager
    names = [p.name for p in datamanager.train_dataset.image_filenames]
    index = next(i for i, name in enumerate(names) if name.startswith(f"frame_{frame:05d}_"))
    return datamanager.cached_train[index]["image"].numpy()


def test_rgba_context_images_are_composited_on_the_render_background(odd_images):
    pipeline, expected = odd_images
    model = pipeline.model
    assert torch.isfinite(model.means).all() and model.means.shape[0] > 0
    np.testing.assert_array_equal(cached(pipeline, 40), expected[40])  # the alpha channel is kept
    context = pipeline.datamanager.context_views()
    assert context.alpha is not None and context.images.shape[-1] == 3
    first = context.images[0].numpy()
    assert (first[:, :160] == 0).all()  # transparent: composited on black
    np.testing.assert_allclose(first[:, 160:], rgb(40)[:, 160:] / 255.0, atol=1e-6)
    # The encoder sees the renders' background: black by default, white with --background-color white.
    black = model.run_encoder().views.image[0, 0]
    assert (black[:, :, :50] == 0).all()
    model.config.background_color = "white"
    try:
        white = model.run_encoder().views.image[0, 0]
    finally:
        model.config.background_color = "black"
    torch.testing.assert_close(white[:, :, :50], torch.ones_like(white[:, :, :50]))
    torch.testing.assert_close(white[:, :, 62:], black[:, :, 62:])


def test_greyscale_and_palette_images_are_read_as_three_channels(odd_images):
    pipeline, expected = odd_images
    for frame in (38, 46, 47):  # palette, 8-bit greyscale, greyscale + alpha
        np.testing.assert_array_equal(cached(pipeline, frame), expected[frame], err_msg=f"frame {frame}")
    second = pipeline.datamanager.context_views().images[1]  # 16-bit greyscale context view
    assert second.shape[-1] == 3
    torch.testing.assert_close(second[..., 0], second[..., 2], rtol=0, atol=0)


def test_16_bit_images_are_scaled_to_0_1_not_wrapped(odd_images):
    pipeline, expected = odd_images
    for frame in (39, 45):  # 16-bit RGB, 16-bit greyscale: v / 65535, to the nearest 8-bit level
        np.testing.assert_array_equal(cached(pipeline, frame), expected[frame], err_msg=f"frame {frame}")
    second = pipeline.datamanager.context_views().images[1].numpy()
    np.testing.assert_allclose(second, expected[45] / 255.0, atol=1e-6)
    assert second.max() > 0.9  # nerfstudio's own reader keeps the low byte: bright pixels wrap to dark


# --------------------------------------------------------------------------------------------
# Sizes: different, mismatched, very large
# --------------------------------------------------------------------------------------------


def test_context_views_of_different_sizes_are_resized_to_the_smallest(tmp_path, capsys):
    scene = demo_copy(tmp_path / "scene")
    # Frame 45 at 640x400: twice the size, and another aspect ratio (stretched vertically).
    Image.fromarray(rgb(45)).resize((640, 400), Image.BICUBIC).save(image_path(scene, 45))
    original = {}

    def stretch(frame: dict, index: int) -> None:
        if index == 45:
            original.update(frame)
            frame.update(w=640, h=400, fl_x=frame["fl_x"] * 2, cx=frame["cx"] * 2)
            frame.update(fl_y=frame["fl_y"] * 400 / 180, cy=frame["cy"] * 400 / 180)

    edit_frames(scene, stretch)
    pipeline = set_up(scene)
    assert "different sizes" in printed(capsys)
    context = pipeline.datamanager.context_views()
    assert context.images.shape == (2, 180, 320, 3)
    # Resized to cover 320x180 (to 320x200), centre-cropped by 10 rows: the intrinsics follow.
    k = context.intrinsics[1]
    expected = [original["fl_x"], original["fl_y"] * 200 / 180, original["cx"], original["cy"] * 200 / 180 - 10]
    torch.testing.assert_close(k[[0, 1, 0, 1], [0, 1, 2, 2]], torch.tensor(expected), rtol=1e-5, atol=1e-4)
    assert pipeline.model.means.shape[0] > 0 and torch.isfinite(pipeline.model.means).all()


@pytest.mark.parametrize("problem", ["size differs from transforms.json", "truncated", "32-bit float"])
def test_unreadable_or_mis_sized_images_are_named(tmp_path, capsys, problem):
    scene = demo_copy(tmp_path / "scene")
    path = image_path(scene, 46)
    if problem == "size differs from transforms.json":
        Image.fromarray(rgb(46)).resize((300, 170)).save(path)
        message = "is 300x170 pixels but its camera says 320x180"
    elif problem == "truncated":
        path.write_bytes(path.read_bytes()[:2000])
        message = "cannot read image"
    else:
        Image.fromarray(rgb(46)[..., 0].astype(np.float32) / 255.0, "F").save(path, format="TIFF")
        message = "'F' pixels"
    output = refused(capsys, scene)
    assert message in output and path.name in output


def peak_rss_since_reset() -> int | None:
    """Bytes of the process's peak resident memory since the last reset (None where Linux's
    /proc/self/clear_refs cannot reset it); the first call resets it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident set
        status = Path("/proc/self/status").read_text()
    except OSError:
        return None
    return next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmHWM"))


def test_a_very_large_photo_pair_is_downscaled_in_bounded_memory(tmp_path):
    """Two 6000x4000 context photos (24 MP; 288 MB each as float): the encoder's input and the
    Gaussians do not grow with them, and set-up holds at most one float plane of a photo at a time
    beside nerfstudio's uint8 cache."""
    scene = demo_copy(tmp_path / "scene", frames=(40, 43, 45))
    width, height = 6000, 4000

    def enlarge(frame: dict, index: int) -> None:
        if index in (40, 45):
            sx, sy = width / frame["w"], height / frame["h"]
            frame.update(w=width, h=height, fl_x=frame["fl_x"] * sx, cx=frame["cx"] * sx)
            frame.update(fl_y=frame["fl_y"] * sy, cy=frame["cy"] * sy)
            Image.fromarray(rgb(index)).resize((width, height)).save(image_path(scene, index), compress_level=1)

    edit_frames(scene, enlarge)
    start = peak_rss_since_reset()
    pipeline = set_up(scene, gaussian_long_side=320)
    peak = peak_rss_since_reset()
    # native Gaussians at --pipeline.model.gaussian-long-side 320, and the backdrop: one per pixel of
    # the bundled encoder's input, 96x64 for 3:2 photos
    assert pipeline.model.means.shape[0] <= 2 * 320 * 214 + 2 * 96 * 64
    pipeline.model.config.gaussian_resolution = "encoder"
    pipeline.model.predict_gaussians()
    assert pipeline.model.means.shape[0] <= 2 * 96 * 64
    if start is None or peak is None:
        pytest.skip("this system cannot reset the peak resident memory (/proc/self/clear_refs): not measured")
    # Before the photos were downscaled one plane at a time, set-up peaked 1.7 GB above its start.
    assert peak - start < 1.0e9, f"set-up peaked {(peak - start) / 1e9:.2f} GB above its start"


# --------------------------------------------------------------------------------------------
# Cameras nerfstudio undistorts, and those it cannot
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model, coefficients",
    [("OPENCV", {"k1": -0.08, "k2": 0.01}), ("OPENCV_FISHEYE", {"k1": 0.05, "k2": 0.01, "k3": 0.0, "k4": 0.0})],
)
def test_distorted_and_fisheye_cameras_reach_the_encoder_undistorted(tmp_path, model, coefficients):
    scene = demo_copy(tmp_path / "scene")
    meta = json.loads((scene / "transforms.json").read_text())
    meta.update(camera_model=model, **coefficients)
    (scene / "transforms.json").write_text(json.dumps(meta))
    pipeline = set_up(scene)
    datamanager = pipeline.datamanager
    context = datamanager.context_views()
    index = datamanager.context_indices()[0]
    raw = torch.from_numpy(rgb(40)) / 255.0
    undistorted = datamanager.cached_train[index]["image"].float() / 255.0
    # nerfstudio's undistortion changed the pixels (and for OPENCV, cropped a column).
    assert undistorted.shape != raw.shape or (undistorted - raw).abs().mean() > 0.01
    torch.testing.assert_close(context.images[0], undistorted[..., :3])  # and that is what the encoder sees
    parsed = datamanager.train_dataparser_outputs.cameras[index].get_intrinsics_matrices()
    torch.testing.assert_close(
        context.intrinsics[0], datamanager.train_dataset.cameras[index].get_intrinsics_matrices()
    )
    assert not torch.allclose(context.intrinsics[0], parsed)  # the undistorted image's pinhole intrinsics
    assert torch.isfinite(pipeline.model.means).all()


@pytest.mark.parametrize(
    "model, message",
    [
        ("EQUIRECTANGULAR", "has a EQUIRECTANGULAR camera; pixelSplat needs perspective (pinhole) images"),
        ("OPENCV_FISHEYE", "has a FISHEYE camera without distortion coefficients"),
    ],
)
def test_cameras_nerfstudio_does_not_undistort_are_refused(tmp_path, capsys, model, message):
    scene = demo_copy(tmp_path / "scene")
    meta = json.loads((scene / "transforms.json").read_text())
    meta["camera_model"] = model
    (scene / "transforms.json").write_text(json.dumps(meta))
    output = refused(capsys, scene)
    assert message in output and "frame_00040_train.png" in output


# --------------------------------------------------------------------------------------------
# Checkpoints from a newer version
# --------------------------------------------------------------------------------------------


def test_a_checkpoint_from_a_newer_version_is_refused_naming_both_versions(tmp_path, capsys):
    from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config
    from pixelsplat_ns.official import PROJECT_FORMAT, CheckpointError, read_encoder_weights, save_checkpoint

    path = save_checkpoint(PixelSplatEncoder(encoder_config("tiny")), tmp_path / "encoder.ckpt")
    payload = torch.load(path)
    assert payload["format"] == PROJECT_FORMAT == "pixelsplat_ns.encoder/1"  # every save records its version
    torch.save({**payload, "format": "pixelsplat_ns.encoder/2"}, path)
    with pytest.raises(CheckpointError, match=r"format 2.*reads format 1"):
        read_encoder_weights(path)
    output = refused(capsys, demo_copy(tmp_path / "scene"), encoder_checkpoint=path)
    assert f"{path} was written by a newer pixelsplat_ns (encoder checkpoint format 2)" in output
    assert "this version reads format 1" in output


# --------------------------------------------------------------------------------------------
# Writes that fail or are interrupted: the previous file stays whole
# --------------------------------------------------------------------------------------------


def root_can_write(folder: Path) -> bool:
    """Whether a read-only folder still takes files (as root): then the tests simulate it."""
    probe = folder / ".probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        return False
    probe.unlink()
    return True


def failing_write(monkeypatch, target, name: str, error: BaseException, after: int = 0) -> list:
    """Make ``target.name`` write half of its output, then raise ``error``, from call ``after`` on."""
    calls: list = []
    real = getattr(target, name)

    def write(obj, path, *args, **kwargs):
        calls.append(path)
        if len(calls) <= after:
            return real(obj, path, *args, **kwargs)
        Path(str(path)).write_bytes(b"partial" * 100)
        raise error

    monkeypatch.setattr(target, name, write)
    return calls


def ply_params(n: int = 50) -> dict:
    generator = torch.Generator().manual_seed(0)
    return {
        "means": torch.randn(n, 3, generator=generator),
        "scales": torch.randn(n, 3, generator=generator) - 3,
        "quats": torch.nn.functional.normalize(torch.randn(n, 4, generator=generator), dim=-1),
        "features_dc": torch.randn(n, 3, generator=generator),
        "features_rest": torch.zeros(n, 15, 3),
        "opacities": torch.full((n, 1), 2.0),
    }


@pytest.mark.parametrize("failure", ["full disk", "read-only folder"])
def test_exporting_to_a_full_disk_or_read_only_folder_keeps_the_previous_ply(tmp_path, monkeypatch, failure):
    from plyfile import PlyData

    import pixelsplat_ns.io
    from pixelsplat_ns.export import export_splat_ply

    folder = tmp_path / "export"
    path = folder / "splat.ply"
    assert export_splat_ply(ply_params(), path) == 50
    before = path.read_bytes()
    if failure == "full disk":
        failing_write(monkeypatch, PlyData, "write", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
        reason = "No space left on device"
    else:
        folder.chmod(0o555)
        if root_can_write(folder):  # root: the folder's mode does not stop the write, so simulate it

            def denied(*args, **kwargs):
                raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

            monkeypatch.setattr(pixelsplat_ns.io.tempfile, "mkstemp", denied)
        reason = "Permission denied"
    try:
        with pytest.raises(PixelSplatOutputError) as error:
            export_splat_ply(ply_params(80), path)
    finally:
        folder.chmod(0o755)
    assert str(error.value) == f"cannot write {path}: {reason} (the previous file, if any, is unchanged)"
    assert path.read_bytes() == before
    assert sorted(p.name for p in folder.iterdir()) == ["splat.ply"]  # no temporary left


def test_ns_export_to_a_full_disk_keeps_the_previous_ply_and_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    """ns-export gaussian-splat writes through nerfstudio's ``ExportGaussianSplat.write_ply``, which
    a pixelSplat pipeline makes atomic (``pixelsplat_ns.nerfstudio.atomic_export``); the end-to-end
    ns-export test checks that the installed writer still writes a standard PLY."""
    from collections import OrderedDict

    import nerfstudio.scripts.exporter as exporter

    from pixelsplat_ns.nerfstudio import atomic_export

    atomic_export.install()  # what setting up a pixelSplat pipeline inside ns-export does

    tensors = OrderedDict((name, np.arange(5, dtype=np.float32)) for name in ("x", "y", "z"))
    path = tmp_path / "export" / "splat.ply"
    path.parent.mkdir()
    exporter.ExportGaussianSplat.write_ply(str(path), 5, tensors)
    before = path.read_bytes()
    assert before.startswith(b"ply\n")

    real_open = open

    def full_disk(file, mode="r", *args, **kwargs):  # nerfstudio's writer: open(filename, "wb") then writes
        handle = real_open(file, mode, *args, **kwargs)
        if "w" in mode:
            handle.write(b"partial")
            handle.close()
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return handle

    monkeypatch.setattr(exporter, "open", full_disk, raising=False)
    with pytest.raises(SystemExit) as stopped:
        exporter.ExportGaussianSplat.write_ply(str(path), 5, tensors)
    assert stopped.value.code == 1
    out = " ".join(capsys.readouterr().out.split())
    assert f"cannot write {path}: No space left on device" in out and "Traceback" not in out
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["splat.ply"]  # no temporary left


def training_config(scene: Path, output: Path, iterations: int):
    config = pipeline_config(scene)
    config.output_dir = output
    config.experiment_name = "bad-input"
    config.max_num_iterations = iterations
    config.steps_per_save = 2
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    return config


def train(config) -> SystemExit:
    from nerfstudio.scripts.train import main as train_main

    with pytest.raises(SystemExit) as exit_info:
        train_main(config)
    return exit_info.value


def checkpoints(output: Path) -> list[str]:
    return sorted(p.name for p in output.rglob("*.ckpt"))


def loads(output: Path) -> int:
    """Load the run as ns-viewer / ns-render do (latest checkpoint); render one view."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _checkpoint, step = eval_setup(next(output.rglob("config.yml")), test_mode="test")
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    assert torch.isfinite(pipeline.model.get_outputs_for_camera(camera)["rgb"]).all()
    return step


def test_ctrl_c_while_writing_the_final_checkpoint_is_an_interruption(tmp_path, capsys, monkeypatch):
    """nerfstudio marks a run completed before it writes its last checkpoint; Ctrl-C then is not
    the viewer being closed: one line, exit 130, the checkpoint before it stays whole."""
    scene = demo_copy(tmp_path / "scene")
    output = tmp_path / "outputs"
    calls = failing_write(monkeypatch, torch, "save", KeyboardInterrupt(), after=1)  # steps 2 (kept), 3 (final)
    exit_info = train(training_config(scene, output, iterations=3))
    assert exit_info is not None and exit_info.code == 130
    assert len(calls) == 2
    said = printed(capsys)
    assert "Traceback" not in said, said[-3000:]
    assert "pixelsplat: interrupted at step" in said and "step-000000002.ckpt, is whole" in said
    assert checkpoints(output) == ["step-000000002.ckpt"]
    assert loads(output) == 2


def test_ctrl_c_closing_the_viewer_after_training_is_a_clean_exit(tmp_path, capsys, monkeypatch):
    """After the last checkpoint, ns-train keeps serving the viewer until Ctrl-C: that is how it is
    closed, not an interruption (no message, no error exit)."""
    from nerfstudio.engine.trainer import Trainer

    def closed(self) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "_train_complete_viewer", closed)
    config = training_config(demo_copy(tmp_path / "scene"), tmp_path / "outputs", iterations=2)
    config.viewer.quit_on_train_completion = False
    from nerfstudio.scripts.train import main as train_main

    train_main(config)  # returns: no SystemExit
    assert "interrupted" not in printed(capsys)
    assert checkpoints(tmp_path / "outputs")[-1] == "step-000000001.ckpt"  # the final one (steps 0 and 1)
    assert loads(tmp_path / "outputs") == 1


@pytest.mark.parametrize("moment", ["between steps", "while saving"])
def test_ctrl_c_during_fine_tuning_leaves_the_last_checkpoint_loadable(tmp_path, capsys, monkeypatch, moment):
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    from pixelsplat_ns.nerfstudio.model import PixelSplatModel

    scene = demo_copy(tmp_path / "scene")
    output = tmp_path / "outputs"
    if moment == "between steps":  # Ctrl-C at step 3, after the checkpoint of step 2
        callbacks = PixelSplatModel.get_training_callbacks

        def interrupt(step: int) -> None:
            if step == 3:
                raise KeyboardInterrupt

        def with_interrupt(self, attributes):
            after = [TrainingCallbackLocation.AFTER_TRAIN_ITERATION]
            return [*callbacks(self, attributes), TrainingCallback(after, interrupt)]

        monkeypatch.setattr(PixelSplatModel, "get_training_callbacks", with_interrupt)
    else:  # Ctrl-C half-way through writing the checkpoint of step 4
        failing_write(monkeypatch, torch, "save", KeyboardInterrupt(), after=1)
    exit_info = train(training_config(scene, output, iterations=8))
    assert exit_info.code == 130
    said = printed(capsys)
    assert "Traceback" not in said, said[-3000:]
    assert f"pixelsplat: interrupted at step {3 if moment == 'between steps' else 4}" in said
    assert "step-000000002.ckpt, is whole" in said
    assert checkpoints(output) == ["step-000000002.ckpt"]  # nothing partial, no temporary
    assert not [p for p in output.rglob(".*") if p.is_file()]
    assert loads(output) == 2


def test_ctrl_c_during_set_up_leaves_no_run(tmp_path, capsys, monkeypatch):
    from pixelsplat_ns.nerfstudio.model import PixelSplatModel

    def interrupted(self):
        raise KeyboardInterrupt

    monkeypatch.setattr(PixelSplatModel, "predict_gaussians", interrupted)
    output = tmp_path / "outputs"
    exit_info = train(training_config(demo_copy(tmp_path / "scene"), output, iterations=4))
    assert exit_info.code == 130
    said = printed(capsys)
    assert "pixelsplat: interrupted during set-up; nothing was trained or saved" in said
    assert "Traceback" not in said, said[-3000:]
    assert not list(output.rglob("config.yml"))


@pytest.mark.parametrize("failure", ["full disk", "read-only folder"])
def test_a_checkpoint_that_cannot_be_written_stops_training_and_keeps_the_previous_one(
    tmp_path, capsys, monkeypatch, failure
):
    scene = demo_copy(tmp_path / "scene")
    output = tmp_path / "outputs"
    if failure == "full disk":
        failing_write(monkeypatch, torch, "save", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), after=1)
        reason = "No space left on device"
    else:
        import pixelsplat_ns.io

        real_mkstemp = pixelsplat_ns.io.tempfile.mkstemp

        def read_only_after_first_save(*args, **kwargs):
            models = next(output.rglob("nerfstudio_models"), None)
            if models is not None and any(models.glob("*.ckpt")):
                for folder in (models, models.parent):
                    folder.chmod(0o555)
                if root_can_write(models.parent):  # root: the mode does not stop the write, so simulate it
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))
            return real_mkstemp(*args, **kwargs)

        monkeypatch.setattr(pixelsplat_ns.io.tempfile, "mkstemp", read_only_after_first_save)
        reason = "Permission denied"
    try:
        exit_info = train(training_config(scene, output, iterations=6))
    finally:
        for folder in output.rglob("*"):
            if folder.is_dir():
                folder.chmod(0o755)
    assert exit_info.code == 1
    said = printed(capsys)
    assert "Traceback" not in said, said[-3000:]
    assert "pixelsplat: error: cannot write" in said and f"step-000000004.ckpt: {reason}" in said
    assert checkpoints(output) == ["step-000000002.ckpt"]
    assert not [p for p in output.rglob(".*") if p.is_file()]
    assert loads(output) == 2


def test_ns_train_refuses_a_mis_sized_image_with_one_line_and_leaves_no_run(tmp_path):
    """The same refusal through the ns-train command: one line, no traceback, no run folder."""
    scene = demo_copy(tmp_path / "scene")
    Image.fromarray(rgb(46)).resize((300, 170)).save(image_path(scene, 46))
    command = [
        str(Path(sys.executable).parent / "ns-train"), "pixelsplat", "--data", str(scene),
        "--output-dir", str(tmp_path / "outputs"), "--vis", "tensorboard",
        "--pipeline.datamanager.context-views", *DEMO_CONTEXT, "nerfstudio-data", "--eval-mode", "filename",
    ]  # fmt: skip
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONWARNINGS": "ignore"}
    )
    output = "".join((result.stdout + result.stderr).split())  # rich wraps lines at 120 columns
    assert result.returncode == 2, output[-3000:]
    assert "is300x170pixelsbutitscamerasays320x180" in output and "Traceback" not in output, output[-3000:]
    assert not list((tmp_path / "outputs").rglob("config.yml"))
