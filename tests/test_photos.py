"""``pixelsplat_ns.photos`` and ``pixelsplat-ns photos``: relative poses of real neighbouring
frames against their known poses, the refusals, and the command end to end."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from pixelsplat_ns.cameras import opengl_to_opencv_c2w
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.photos import estimate_pair_poses, focal_from_fov
from pixelsplat_ns.photos.intrinsics import exif_focal_px
from pixelsplat_ns.photos.scene import interpolate_c2w, scene_transforms
from tests.conftest import DATA, require


def frames(scene: str) -> tuple[dict, list[dict]]:
    meta = json.loads((require(DATA / scene) / "transforms.json").read_text())
    return meta, sorted(meta["frames"], key=lambda f: f["file_path"])


def frame_path(scene: str, frame: dict) -> Path:
    return DATA / scene / frame["file_path"]


def relative_errors(scene: str, i: int, **kwargs) -> tuple[float, float]:
    """(rotation error, translation-direction error) in degrees of frames i, i + 1."""
    _, listed = frames(scene)
    a, b = (
        opengl_to_opencv_c2w(torch.tensor(f["transform_matrix"], dtype=torch.float64)).numpy()
        for f in listed[i : i + 2]
    )
    rotation = b[:3, :3].T @ a[:3, :3]
    centre_b = a[:3, :3].T @ (b[:3, 3] - a[:3, 3])
    estimate = estimate_pair_poses(frame_path(scene, listed[i]), frame_path(scene, listed[i + 1]), **kwargs)
    rotation_error = math.degrees(math.acos(np.clip((np.trace(estimate.rotation @ rotation.T) - 1) / 2, -1, 1)))
    estimated_centre = -estimate.rotation.T @ estimate.translation
    cosine = estimated_centre @ centre_b / np.linalg.norm(centre_b)
    return rotation_error, math.degrees(math.acos(np.clip(cosine, -1, 1)))


@pytest.mark.parametrize("scene, i", [("strecha-castle-p19", 0), ("llff-fern", 0), ("pavilion-chair-midday", 49)])
def test_neighbouring_frames_with_the_true_focal_length(scene: str, i: int):
    meta, _ = frames(scene)
    rotation_error, direction_error = relative_errors(scene, i, focal_px=meta["fl_x"])
    assert rotation_error < 0.5 and direction_error < 2.5


@pytest.mark.parametrize("scene, i", [("strecha-castle-p19", 17), ("pavilion-chair-midday", 0)])
def test_neighbouring_frames_with_a_guessed_focal_length_refined(scene: str, i: int):
    rotation_error, direction_error = relative_errors(scene, i)
    assert rotation_error < 1.0 and direction_error < 3.0


def test_the_result_says_where_the_intrinsics_came_from():
    meta, listed = frames("strecha-castle-p19")
    paths = [frame_path("strecha-castle-p19", f) for f in listed[:2]]
    guessed = estimate_pair_poses(*paths)
    assert guessed.focal_refined and "60 degree" in guessed.focal_source and "refined" in guessed.focal_source
    assert abs(guessed.focal_px[0] - meta["fl_x"]) / meta["fl_x"] < 0.1  # refined towards the truth (58 degrees)
    given = estimate_pair_poses(*paths, fov_deg=50)
    assert not given.focal_refined and given.focal_px[0] == pytest.approx(focal_from_fov(50, 384))
    assert given.num_inliers >= 100 and given.image_size == (384, 256)


def test_the_same_photo_twice_is_refused():
    _, listed = frames("strecha-castle-p19")
    path = frame_path("strecha-castle-p19", listed[3])
    with pytest.raises(PixelSplatInputError, match="taken from the same place"):
        estimate_pair_poses(path, path)


@pytest.mark.parametrize("kwargs", [{}, {"focal_px": 345.0}])
def test_a_pure_rotation_is_refused(kwargs):
    """Photo B is photo A seen by the same camera turned by 8 degrees: warped by K R K^-1."""
    meta, listed = frames("strecha-castle-p19")
    image = np.asarray(Image.open(frame_path("strecha-castle-p19", listed[3])).convert("RGB"))
    k = np.array([[meta["fl_x"], 0, 192], [0, meta["fl_x"], 128], [0, 0, 1]])
    rotation = cv2.Rodrigues(np.radians([2.0, 8.0, 1.0]))[0]
    turned = cv2.warpPerspective(image, k @ rotation @ np.linalg.inv(k), (384, 256), flags=cv2.INTER_CUBIC)
    with pytest.raises(PixelSplatInputError, match="taken from the same place"):
        estimate_pair_poses(image, turned, **kwargs)


def test_photos_of_different_scenes_are_refused():
    _, castle = frames("strecha-castle-p19")
    _, fern = frames("llff-fern")
    a = np.asarray(Image.open(frame_path("strecha-castle-p19", castle[0])).convert("RGB"))
    other = Image.open(frame_path("llff-fern", fern[0])).convert("RGB")  # 504x378 -> 3:2, 384x256
    b = np.asarray(other.crop((0, 21, 504, 357)).resize((384, 256)))
    with pytest.raises(PixelSplatInputError, match="share too little"):
        estimate_pair_poses(a, b)


def test_sizes_are_brought_together_or_refused(tmp_path: Path):
    _, listed = frames("strecha-castle-p19")
    a, b = (frame_path("strecha-castle-p19", f) for f in listed[:2])
    larger = tmp_path / "larger.png"
    Image.open(b).resize((576, 384)).save(larger)
    result = estimate_pair_poses(a, larger, focal_px=345.0)
    assert result.image_size == (384, 256) and "resized to 384x256" in result.notes[0]
    square = tmp_path / "square.png"
    Image.open(b).resize((256, 256)).save(square)
    with pytest.raises(PixelSplatInputError, match="different shapes"):
        estimate_pair_poses(a, square)


def test_unreadable_images_are_named(tmp_path: Path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not a jpeg")
    _, listed = frames("strecha-castle-p19")
    with pytest.raises(PixelSplatInputError, match=r"cannot read image .*broken\.jpg"):
        estimate_pair_poses(broken, frame_path("strecha-castle-p19", listed[0]))
    with pytest.raises(PixelSplatInputError, match="no such file"):
        estimate_pair_poses(tmp_path / "missing.png", broken)


def test_exif_focal_lengths():
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0xA405] = 26  # FocalLengthIn35mmFilm
    focal, source = exif_focal_px(exif, 4000, 3000)
    assert focal == pytest.approx(26 * 5000 / math.hypot(36, 24)) and "35mm" in source
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0x920A], ifd[0xA20E], ifd[0xA210] = 4.0, 1000.0, 4  # 4 mm, 1000 px/mm
    ifd[0xA002], ifd[0xA003] = 4000, 3000
    focal, source = exif_focal_px(exif, 2000, 1500)  # resized to half
    assert focal == pytest.approx(2000.0) and "FocalPlaneXResolution" in source
    assert exif_focal_px(Image.Exif(), 100, 100) == (None, None)


def test_exif_focal_is_used_when_present(tmp_path: Path):
    meta, listed = frames("strecha-castle-p19")
    paths = []
    for i in range(2):
        exif = Image.Exif()
        exif.get_ifd(0x8769)[0xA405] = round(meta["fl_x"] * math.hypot(36, 24) / math.hypot(384, 256))
        path = tmp_path / f"{i}.jpg"
        Image.open(frame_path("strecha-castle-p19", listed[i])).convert("RGB").save(path, quality=95, exif=exif)
        paths.append(path)
    result = estimate_pair_poses(*paths, fov_deg=90)  # EXIF wins over the fallback
    assert "FocalLengthIn35mmFilm" in result.focal_source and not result.focal_refined
    assert result.focal_px[0] == pytest.approx(meta["fl_x"], rel=0.02)


def test_scene_transforms_hold_the_pose_in_nerfstudio_conventions():
    _, listed = frames("strecha-castle-p19")
    result = estimate_pair_poses(*(frame_path("strecha-castle-p19", f) for f in listed[:2]), focal_px=345.0)
    meta = scene_transforms(result, ("00_a.png", "01_b.png"))
    c2w = torch.tensor([f["transform_matrix"] for f in meta["frames"]], dtype=torch.float64)
    assert torch.allclose(opengl_to_opencv_c2w(c2w[0]), torch.eye(4, dtype=torch.float64))  # A: the world's origin
    back = opengl_to_opencv_c2w(c2w[1]).numpy()
    assert np.allclose(back[:3, :3], result.rotation.T) and np.linalg.norm(back[:3, 3]) == pytest.approx(1.0)
    assert meta["frames"][1]["fl_x"] == 345.0 and meta["frames"][1]["cx"] == 192.0
    assert meta["train_filenames"] == ["images/00_a.png", "images/01_b.png"]


def test_the_camera_path_interpolates_and_extrapolates():
    a = np.eye(4)
    b = np.eye(4)
    b[:3, :3] = cv2.Rodrigues(np.radians([0.0, 20.0, 0.0]))[0]
    b[:3, 3] = (1.0, 0.0, 0.0)
    path = interpolate_c2w(a, b, np.array([-0.25, 0.0, 0.5, 1.0, 1.25]))
    assert np.allclose(path[1], a[:3]) and np.allclose(path[3], b[:3])
    assert np.allclose(path[2, :3, 3], (0.5, 0, 0)) and np.allclose(path[0, :3, 3], (-0.25, 0, 0))
    assert math.degrees(np.linalg.norm(cv2.Rodrigues(path[4, :3, :3])[0])) == pytest.approx(25.0)


def test_the_command_writes_scene_ply_and_video_and_ns_train_loads_the_scene(tmp_path: Path, capsys):
    from nerfstudio.scripts.train import main as train_main
    from nerfstudio.utils.eval_utils import eval_setup
    from plyfile import PlyData

    from pixelsplat_ns.cli.demo import DEMO_SCENE
    from pixelsplat_ns.cli.photos import Photos
    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config

    a, b = DEMO_SCENE / "images" / "frame_00040_train.png", DEMO_SCENE / "images" / "frame_00045_train.png"
    out = tmp_path / "out"
    Photos(a, b, output_dir=out, video_frames=6, video_long_side=160).main()
    printed = "".join(capsys.readouterr().out.splitlines())
    assert "60 degree" in printed and "refined" in printed and "ns-viewer --load-config" in printed
    meta = json.loads((out / "scene" / "transforms.json").read_text())
    assert [f["file_path"] for f in meta["frames"]] == [
        "images/00_frame_00040_train.png",
        "images/01_frame_00045_train.png",
    ]
    assert len(PlyData.read(str(out / "splat.ply"))["vertex"]) > 1000
    capture = cv2.VideoCapture(str(out / "path.mp4"))
    read = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        read.append(frame)
    assert len(read) == 6 and read[0].shape == (90, 160, 3) and read[0].std() > 5
    assert not [p for p in out.rglob(".*")]  # no temporaries left

    # ns-train pixelsplat --data DIR/scene, plain: both photos are its training images and context.
    config = pixelsplat_trainer_config()
    config.data = out / "scene"
    config.output_dir = tmp_path / "again"
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.set_timestamp()
    train_main(config)
    _, pipeline, _, _ = eval_setup(config.get_base_dir() / "config.yml", test_mode="test")
    context = pipeline.datamanager.context_views()
    assert context.names == ["00_frame_00040_train.png", "01_frame_00045_train.png"]
    assert pipeline.model.num_points > 1000


def test_a_refused_command_leaves_the_folder_as_it_was(tmp_path: Path, capsys):
    from pixelsplat_ns.cli.photos import Photos

    _, listed = frames("strecha-castle-p19")
    path = frame_path("strecha-castle-p19", listed[0])
    out = tmp_path / "out"
    (out / "scene").mkdir(parents=True)
    (out / "scene" / "keep.txt").write_text("the user's file")
    with pytest.raises(SystemExit) as exit_info:
        Photos(path, path, output_dir=out).main()
    assert exit_info.value.code == 2
    assert "pixelsplat: error: the two photos were taken from the same place" in "".join(
        capsys.readouterr().out.splitlines()
    )
    assert [p.relative_to(out).as_posix() for p in sorted(out.rglob("*"))] == ["scene", "scene/keep.txt"]


def test_a_failure_after_the_export_leaves_the_folder_as_it_was(tmp_path: Path, capsys, monkeypatch):
    """The video cannot be written (after the scene, the run and the PLY were): the previous
    scene/, splat.ply and path.mp4 are all as they were, and nothing of this run is left."""
    import pixelsplat_ns.cli.photos as photos_cli
    from pixelsplat_ns.cli.demo import DEMO_SCENE
    from pixelsplat_ns.errors import PixelSplatOutputError

    out = tmp_path / "out"
    (out / "scene").mkdir(parents=True)
    (out / "scene" / "keep.txt").write_text("the previous scene")
    (out / "splat.ply").write_text("the previous PLY")
    (out / "path.mp4").write_text("the previous video")
    before = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}

    def full_disk(pipeline, path, *args, **kwargs) -> None:
        raise PixelSplatOutputError(f"cannot write {path}: No space left on device")

    monkeypatch.setattr(photos_cli, "write_path_video", full_disk)
    a, b = DEMO_SCENE / "images" / "frame_00040_train.png", DEMO_SCENE / "images" / "frame_00045_train.png"
    with pytest.raises(SystemExit) as exit_info:
        photos_cli.Photos(a, b, output_dir=out, video_frames=2, video_long_side=64).main()
    assert exit_info.value.code == 1
    assert "No space left on device" in "".join(capsys.readouterr().out.splitlines())
    after = {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    assert after == before
    assert sorted(p.name for p in out.iterdir()) == ["path.mp4", "scene", "splat.ply"]
