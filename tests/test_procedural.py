"""Procedural scenes: deterministic, readable as training data, geometrically exact; the CLI's refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tyro
from PIL import Image

from pixelsplat_ns.cli.main import COMMANDS
from pixelsplat_ns.data import open_scene_source
from pixelsplat_ns.data.procedural import (
    ProceduralConfig,
    Surface,
    build_scene,
    render_frames,
    save_scene_folder,
    write_scene,
)

# Small and non-square, so a height/width mix-up shows.
CONFIG = ProceduralConfig(image_shape=(48, 64), num_frames=5, num_objects=(3, 4), max_gaussians=30_000)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_same_bytes_and_another_seed_differs(tmp_path: Path):
    write_scene(tmp_path / "a", 3, CONFIG)
    write_scene(tmp_path / "b", 3, CONFIG)
    write_scene(tmp_path / "c", 4, CONFIG)
    a, b, c = (folder_bytes(tmp_path / name) for name in "abc")
    assert sorted(a) == [f"images/frame_0000{i}.png" for i in range(5)] + ["transforms.json"]
    assert a == b
    assert a["transforms.json"] != c["transforms.json"]
    assert all(a[name] != c[name] for name in a if name.endswith(".png"))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_written_scenes_load_as_training_data(tmp_path: Path):
    for index in range(2):
        write_scene(tmp_path / f"scene_{index:05d}", (0, index), CONFIG)
    source = open_scene_source(tmp_path)
    assert source.shards() == ["scene_00000", "scene_00001"]
    scene = next(iter(source.scenes("scene_00000")))
    assert len(scene) == 5 and scene.image_shape == (48, 64)
    assert tuple(scene.images[4].shape) == (3, 48, 64)
    meta = json.loads((tmp_path / "scene_00000" / "transforms.json").read_text())
    assert meta["w"] == 64 and meta["h"] == 48 and meta["camera_model"] == "PINHOLE"
    assert np.allclose(scene.intrinsics[0, 0, 2].item(), 0.5) and np.allclose(scene.intrinsics[0, 1, 2].item(), 0.5)
    # OpenCV centres are OpenGL's; consecutive frames move, the first and last are far apart.
    centres = np.array([frame["transform_matrix"] for frame in meta["frames"]])[:, :3, 3]
    assert np.allclose(scene.extrinsics[:, :3, 3].numpy(), centres, atol=1e-6)
    steps = np.linalg.norm(np.diff(centres, axis=0), axis=-1)
    assert (steps > 0.02).all() and np.linalg.norm(centres[-1] - centres[0]) > 2 * steps.max()


def cast_rays(meta: dict, frame: int, surfaces) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per pixel of one frame, with plain numpy and nerfstudio's conventions (OpenGL
    camera-to-world, pixel centres at +0.5): the nearest surface hit, its camera-z depth
    and the hit's position on that surface as fractions (a along u, b along v)."""
    c2w = np.array(meta["frames"][frame]["transform_matrix"])
    rows, cols = np.meshgrid(np.arange(meta["h"]) + 0.5, np.arange(meta["w"]) + 0.5, indexing="ij")
    x, y = (cols - meta["cx"]) / meta["fl_x"], (rows - meta["cy"]) / meta["fl_y"]
    directions = np.stack((x, -y, -np.ones_like(x)), axis=-1) @ c2w[:3, :3].T  # OpenGL camera: -z forward
    origin = c2w[:3, 3]
    best = np.full(x.shape, np.inf)
    index, a_hit, b_hit = np.full(x.shape, -1), np.zeros(x.shape), np.zeros(x.shape)
    for k, surface in enumerate(surfaces):
        normal = np.cross(surface.u, surface.v)
        with np.errstate(divide="ignore", invalid="ignore"):
            t = ((surface.corner - origin) @ normal) / (directions @ normal)
        points = origin + t[..., None] * directions - surface.corner
        a, b = points @ surface.u / surface.size[0], points @ surface.v / surface.size[1]
        hit = (t > 0) & (t < best) & (a >= 0) & (a <= 1) & (b >= 0) & (b <= 1)
        best[hit], index[hit], a_hit[hit], b_hit[hit] = t[hit], k, a[hit], b[hit]
    return index, best, a_hit, b_hit


def interior(index: np.ndarray, radius: int) -> np.ndarray:
    """Pixels whose (2 radius + 1)^2 neighbourhood sees one surface."""
    same = np.zeros(index.shape, bool)
    same[radius:-radius, radius:-radius] = True
    h, w = index.shape
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            shifted = index[radius + dy : h - radius + dy, radius + dx : w - radius + dx]
            same[radius:-radius, radius:-radius] &= shifted == index[radius:-radius, radius:-radius]
    return same & (index >= 0)


def test_pixels_show_the_surface_point_their_ray_hits(tmp_path: Path):
    """The back wall's texture encodes texel coordinates (red: column, green: row): every
    back-wall pixel of the written PNGs must decode to where its ray meets the wall, and the
    rendered depth must be the analytic depth of the nearest surface, objects included.

    Opaque coplanar Gaussians composite front to back, which pulls a slanted surface's
    texture by up to about half an output pixel towards its nearer side; hence the
    tolerances (a flipped axis, swapped width/height or a one-pixel shift fail them; the
    half-pixel convention is pinned exactly by the next test)."""
    scene = build_scene(11, ProceduralConfig(image_shape=(96, 128), num_frames=3, num_objects=(4, 4)))
    wall = scene.surfaces[0]
    assert wall.name == "back_wall"
    rows, cols = wall.texture.shape[:2]
    j, i = np.meshgrid((np.arange(cols) + 0.5) / cols, (np.arange(rows) + 0.5) / rows)
    wall.texture = np.stack((j, i, np.full_like(i, 0.5)), axis=-1)
    scene.background[:] = 0.5
    rendered = render_frames(scene, render_mode="RGB+ED")
    save_scene_folder(tmp_path / "scene", scene, rendered)
    meta = json.loads((tmp_path / "scene" / "transforms.json").read_text())

    checked_wall = checked_depth = 0
    for frame in (0, 2):
        index, depth, a, b = cast_rays(meta, frame, scene.surfaces)
        image = np.asarray(Image.open(tmp_path / "scene" / meta["frames"][frame]["file_path"]), dtype=np.float64) / 255
        on_wall = interior(index, 2) & (index == 0)
        for decoded, truth in ((image[..., 0], a), (image[..., 1], b)):
            pixels = np.abs(decoded - truth) / np.hypot(*np.gradient(truth))  # error in pixels
            assert np.median(pixels[on_wall]) < 0.75 and pixels[on_wall].max() < 1.6
        checked_wall += on_wall.sum()

        smooth = interior(index, 1)
        error = np.abs(rendered[frame, ..., 3].numpy() - depth)[smooth] / depth[smooth]
        assert np.median(error) < 0.01 and np.quantile(error, 0.99) < 0.05
        assert len(np.unique(index[smooth])) >= 6  # walls, floor and objects were all checked
        checked_depth += smooth.sum()
    assert checked_wall > 2000 and checked_depth > 15_000


def test_a_small_patch_lands_where_nerfstudio_projects_it(tmp_path: Path):
    """Tiny bright patches on a black background: the centroid of each blob in the written
    PNG is the projection of the patch's centre through transforms.json, to a tenth of a
    pixel (pins the +0.5 pixel-centre convention, the supersampling and the axes)."""
    scene = build_scene(5, ProceduralConfig(image_shape=(60, 80), num_frames=4, num_objects=(0, 0)))
    scene.background[:] = 0.0
    c2w = scene.cameras.c2w[0]
    patches = []
    for offset in ([0.4, 0.3, -3.0], [-0.7, -0.2, -2.5], [0.1, -0.5, -3.5]):  # OpenGL camera frame of frame 0
        centre = c2w[:3, :3] @ np.array(offset) + c2w[:3, 3]
        u, v = c2w[:3, 0], -c2w[:3, 1]
        patches.append(Surface("patch", centre - 0.002 * u - 0.002 * v, u, v, (0.004, 0.004), np.ones((2, 2, 3))))
    scene.surfaces = patches
    save_scene_folder(tmp_path / "scene", scene, render_frames(scene))
    meta = json.loads((tmp_path / "scene" / "transforms.json").read_text())
    rows, cols = np.mgrid[0 : meta["h"], 0 : meta["w"]] + 0.5
    for frame in (0, 3):
        image = np.asarray(Image.open(tmp_path / "scene" / meta["frames"][frame]["file_path"]), dtype=np.float64)[
            ..., 0
        ]
        w2c = np.linalg.inv(np.array(meta["frames"][frame]["transform_matrix"]))
        for patch in patches:
            x, y, z = w2c[:3, :3] @ patch.centre + w2c[:3, 3]  # OpenGL camera: x right, y up, -z forward
            expected = (meta["fl_x"] * x / -z + meta["cx"], meta["fl_y"] * -y / -z + meta["cy"])
            near = (np.abs(cols - expected[0]) < 3) & (np.abs(rows - expected[1]) < 3)
            weights = image * near
            assert weights.sum() > 50  # the patch is there
            found = ((weights * cols).sum() / weights.sum(), (weights * rows).sum() / weights.sum())
            assert np.allclose(found, expected, atol=0.1), (frame, found, expected)


def run_cli(*args: str) -> None:
    tyro.extras.subcommand_cli_from_dict(COMMANDS, args=["synthesize", *args]).main()


def test_cli_writes_numbered_scenes(tmp_path: Path, capsys):
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)).save(photos / "photo.png")
    (photos / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    run_cli("--output-dir", str(out), "--num-scenes", "2", "--frames", "3", "--image-size", "32", "40",
            "--textures", str(photos), "--seed", "5")  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["scene_00000", "scene_00001"]
    meta = json.loads((out / "scene_00001" / "transforms.json").read_text())
    assert meta["procedural"]["seed"] == [5, 1] and (meta["h"], meta["w"]) == (32, 40) and len(meta["frames"]) == 3
    assert "wrote 2 scene(s)" in capsys.readouterr().out


def refused(capsys, *args: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*args)
    assert exit_info.value.code == 2
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("pixelsplat: error:")
    return lines[0]


def test_cli_refusals_write_nothing(tmp_path: Path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert "not empty" in refused(capsys, "--output-dir", str(out), "--num-scenes", "1")
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    fresh = tmp_path / "fresh"
    missing = tmp_path / "no-such-photos"
    assert str(missing) in refused(capsys, "--output-dir", str(fresh), "--textures", str(missing))
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "broken.jpg").write_bytes(b"not a jpeg")
    assert "no readable image" in refused(capsys, "--output-dir", str(fresh), "--textures", str(empty))
    assert "--num-scenes" in refused(capsys, "--output-dir", str(fresh), "--num-scenes", "0")
    assert "--image-size" in refused(capsys, "--output-dir", str(fresh), "--image-size", "0", "64")
    assert not fresh.exists()
