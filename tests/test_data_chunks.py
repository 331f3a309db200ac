"""Chunk format (RE10K/ACID layout): cameras, reader, writer, and the convert CLI round trip.

The helpers at the top (``synthetic_frames``, ``synthetic_item``, ``write_scene_folder``)
are also used by the other ``test_data_*`` files.
"""

from __future__ import annotations

import json
import math
import warnings
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelsplat_ns.cameras import (
    chunk_cameras_to_opencv,
    opencv_to_chunk_cameras,
    opencv_to_opengl_c2w,
    opengl_to_opencv_c2w,
)
from pixelsplat_ns.cli.convert import Convert
from pixelsplat_ns.data import ChunkSource, ChunkWriter, DataWarning, SceneFolderSource, open_scene_source
from pixelsplat_ns.data.chunks import INDEX_NAME, scene_to_chunk_item
from pixelsplat_ns.data.scenes import FrameImages, Scene
from tests.scenes import cut_scene

# --- helpers shared by the data tests ----------------------------------------------------------


def encode(array: np.ndarray, fmt: str = "PNG") -> bytes:
    buffer = BytesIO()
    Image.fromarray(array).save(buffer, format=fmt)
    return buffer.getvalue()


def synthetic_frames(n: int, seed: int, size: tuple[int, int] = (24, 32)) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return [encode(rng.integers(0, 256, (*size, 3), dtype=np.uint8)) for _ in range(n)]


def line_cameras(n: int, step: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """OpenCV c2w of cameras on a line along x, looking along +z; normalised K."""
    c2w = torch.eye(4).repeat(n, 1, 1)
    c2w[:, 0, 3] = torch.arange(n) * step
    c2w[:, 2, 3] = 0.3
    k = torch.tensor([[0.9, 0.0, 0.5], [0.0, 1.2, 0.5], [0.0, 0.0, 1.0]]).repeat(n, 1, 1)
    return c2w, k


def synthetic_scene(key: str, n: int, seed: int = 0) -> Scene:
    c2w, k = line_cameras(n)
    return Scene(key, FrameImages(synthetic_frames(n, seed)), c2w, k, (24, 32), url=f"https://example.com/{key}")


def synthetic_item(key: str, n: int, seed: int = 0) -> dict:
    return scene_to_chunk_item(synthetic_scene(key, n, seed))


def write_chunk(path: Path, items: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(items, path)


def write_scene_folder(folder: Path, n: int, seed: int = 0) -> Path:
    """A tiny nerfstudio-format scene (OpenGL c2w, pixel intrinsics) of ``n`` frames."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    c2w, k = line_cameras(n)
    frames = []
    for i, data in enumerate(synthetic_frames(n, seed)):
        (folder / "images" / f"frame_{i:05d}.png").write_bytes(data)
        pose = opencv_to_opengl_c2w(c2w[i : i + 1].double())[0]
        frames.append({"file_path": f"images/frame_{i:05d}.png", "transform_matrix": pose.tolist()})
    meta = {
        "camera_model": "PINHOLE",
        "w": 32,
        "h": 24,
        "fl_x": float(k[0, 0, 0] * 32),
        "fl_y": float(k[0, 1, 1] * 24),
        "cx": 16.0,
        "cy": 12.0,
        "frames": frames[::-1],  # the reader sorts by file path, as nerfstudio does
    }
    (folder / "transforms.json").write_text(json.dumps(meta))
    return folder


# --- cameras -------------------------------------------------------------------------------------


def test_camera_rows_round_trip_and_layout():
    g = torch.Generator().manual_seed(0)
    rotation, _ = torch.linalg.qr(torch.randn(5, 3, 3, generator=g, dtype=torch.float64))
    rotation = rotation * torch.linalg.det(rotation)[:, None, None].sign()
    c2w = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    c2w[:, :3, :3] = rotation
    c2w[:, :3, 3] = torch.randn(5, 3, generator=g, dtype=torch.float64) * 3
    k = torch.eye(3, dtype=torch.float64).repeat(5, 1, 1)
    k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2] = 0.8, 1.4, 0.47, 0.52
    rows = opencv_to_chunk_cameras(c2w, k)
    assert rows.shape == (5, 18) and rows.dtype == torch.float32
    torch.testing.assert_close(rows[:, :4], torch.tensor([0.8, 1.4, 0.47, 0.52]).expand(5, 4))
    assert (rows[:, 4:6] == 0).all()
    # Row-major 3x4 world-to-camera: it maps each camera's centre to the origin.
    w2c = rows[:, 6:].reshape(5, 3, 4).double()
    centre = w2c[:, :, :3] @ c2w[:, :3, 3:] + w2c[:, :, 3:]
    torch.testing.assert_close(centre, torch.zeros(5, 3, 1, dtype=torch.float64), atol=1e-5, rtol=0)
    back_c2w, back_k = chunk_cameras_to_opencv(rows)
    torch.testing.assert_close(back_c2w.double(), c2w, atol=2e-6, rtol=0)
    torch.testing.assert_close(back_k.double(), k, atol=1e-7, rtol=0)


# --- reader ----------------------------------------------------------------------------------------


def test_chunk_reader_streams_scenes_and_skips_bad_ones(tmp_path):
    root = tmp_path / "train"
    corrupt = synthetic_item("corrupt", 4, seed=1)
    corrupt["images"][2] = torch.tensor([1, 2, 3, 4, 5], dtype=torch.uint8)  # not an image
    write_chunk(root / "000000.torch", [synthetic_item("a", 5), corrupt, synthetic_item("short", 1)])
    write_chunk(root / "000001.torch", [synthetic_item("b", 3, seed=2)])
    (root / "000002.torch").write_bytes(b"this is no chunk")
    (root / INDEX_NAME).write_text(json.dumps({"a": "000000.torch", "b": "000001.torch"}))

    source = ChunkSource(root)
    assert source.shards() == ["000000.torch", "000001.torch", "000002.torch"]
    with pytest.warns(DataWarning) as caught:
        scenes = [scene for shard in source.shards() for scene in source.scenes(shard)]
    messages = " | ".join(str(w.message) for w in caught)
    assert "'corrupt'" in messages and "frame 2" in messages
    assert "'short'" in messages and "1 frame" in messages
    assert "000002.torch" in messages
    assert [scene.key for scene in scenes] == ["a", "b"]

    scene = scenes[0]
    assert len(scene) == 5 and scene.image_shape == (24, 32) and scene.url == "https://example.com/a"
    c2w, k = line_cameras(5)
    torch.testing.assert_close(scene.extrinsics, c2w, atol=1e-6, rtol=0)
    torch.testing.assert_close(scene.intrinsics, k)
    torch.testing.assert_close(scene.timestamps, torch.arange(5))
    image = scene.images[3]  # decoded on access
    assert image.shape == (3, 24, 32) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    expected = np.asarray(Image.open(BytesIO(synthetic_frames(5, 0)[3]))).copy()
    assert torch.equal((image * 255).round().to(torch.uint8).permute(1, 2, 0), torch.from_numpy(expected))

    assert source.index == {"a": "000000.torch", "b": "000001.torch"}
    assert source.load_scene("b").key == "b"
    with pytest.raises(KeyError):
        source.load_scene("missing")


def test_reader_holds_one_chunk_at_a_time(tmp_path, monkeypatch):
    root = tmp_path / "train"
    for i in range(3):
        write_chunk(root / f"{i:06d}.torch", [synthetic_item(f"s{i}{j}", 3, seed=i * 10 + j) for j in range(2)])
    source = ChunkSource(root)
    loads = []
    original = source.load_chunk

    def counting(shard):
        loads.append(shard)
        return original(shard)

    monkeypatch.setattr(source, "load_chunk", counting)
    seen = []
    for shard in source.shards():
        for scene in source.scenes(shard):
            seen.append((scene.key, len(loads)))
    # Each chunk is loaded only when its first scene is asked for.
    assert seen == [("s00", 1), ("s01", 1), ("s10", 2), ("s11", 2), ("s20", 3), ("s21", 3)]


# --- writer ------------------------------------------------------------------------------------------


def test_writer_size_limit_index_and_modes(tmp_path):
    root = tmp_path / "ds" / "train"
    items = [synthetic_item(f"scene{i}", 4, seed=i) for i in range(5)]
    size = sum(image.numel() for image in items[0]["images"])
    with ChunkWriter(root, max_chunk_bytes=int(size * 2.5)) as writer:
        for item in items:
            writer.add(item)
    chunks = sorted(p.name for p in root.glob("*.torch"))
    assert len(chunks) >= 3 and all(p.stat().st_size < size * 4 for p in root.glob("*.torch"))
    assert not [p for p in root.iterdir() if p.name.startswith(".")], "temporary files left behind"
    index = json.loads((root / INDEX_NAME).read_text())
    assert sorted(index) == [f"scene{i}" for i in range(5)] and set(index.values()) == set(chunks)
    for key, chunk in index.items():
        assert key in [item["key"] for item in torch.load(root / chunk, weights_only=True)]

    with pytest.raises(FileExistsError):
        ChunkWriter(root)
    with ChunkWriter(root, mode="append") as writer:
        with pytest.raises(ValueError, match="duplicate"):
            writer.add(synthetic_item("scene0", 3))
        writer.add(synthetic_item("extra", 3))
    assert sorted(ChunkSource(root).index) == sorted([*index, "extra"])
    with ChunkWriter(root, mode="overwrite") as writer:
        writer.add(synthetic_item("only", 3))
    assert [p.name for p in root.glob("*.torch")] == ["000000.torch"]
    assert json.loads((root / INDEX_NAME).read_text()) == {"only": "000000.torch"}


def test_writer_leaves_no_partial_chunk_on_failure(tmp_path, monkeypatch):
    root = tmp_path / "train"

    def failing_save(obj, path):
        Path(path).write_bytes(b"half a chunk")
        raise OSError("disk full")

    writer = ChunkWriter(root)
    writer.add(synthetic_item("a", 3))
    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        writer.flush()
    assert list(root.iterdir()) == []


# --- scene folders and the convert round trip ----------------------------------------------------------


def test_scene_folder_source_reads_nerfstudio_scenes(tmp_path):
    write_scene_folder(tmp_path / "group" / "one", 4)
    write_scene_folder(tmp_path / "two", 3, seed=5)
    (tmp_path / "not-a-scene").mkdir()
    source = SceneFolderSource(tmp_path)
    assert source.shards() == ["group/one", "two"]
    (scene,) = source.scenes("group/one")
    c2w, k = line_cameras(4)
    torch.testing.assert_close(scene.extrinsics, c2w, atol=1e-6, rtol=0)  # OpenGL -> OpenCV, sorted frames
    torch.testing.assert_close(scene.intrinsics, k)  # pixels -> normalised
    assert scene.image_shape == (24, 32)
    # A scene folder on its own is a source of one scene named after the folder.
    assert SceneFolderSource(tmp_path / "two").shards() == ["two"]
    with pytest.raises(FileNotFoundError, match="no scenes"):
        SceneFolderSource(tmp_path / "not-a-scene")


def test_convert_round_trip_on_a_real_scene(tmp_path):
    scene_dir = cut_scene("pavilion-chair-midday", tmp_path / "scenes" / "pavilion", range(30, 38))
    Convert(data=tmp_path / "scenes", output_dir=tmp_path / "chunks", chunk_size_mb=2.0).main()

    source = open_scene_source(tmp_path / "chunks", split="train")
    assert isinstance(source, ChunkSource)
    (scene,) = [scene for shard in source.shards() for scene in source.scenes(shard)]
    assert scene.key == "pavilion" and len(scene) == 8 and source.index == {"pavilion": "000000.torch"}

    meta = json.loads((scene_dir / "transforms.json").read_text())
    c2w_gl = torch.tensor([frame["transform_matrix"] for frame in meta["frames"]], dtype=torch.float64)
    torch.testing.assert_close(scene.extrinsics, opengl_to_opencv_c2w(c2w_gl).float(), atol=1e-6, rtol=0)
    k = torch.tensor(
        [
            [meta["fl_x"] / meta["w"], 0, meta["cx"] / meta["w"]],
            [0, meta["fl_y"] / meta["h"], meta["cy"] / meta["h"]],
            [0, 0, 1],
        ]
    )
    torch.testing.assert_close(scene.intrinsics, k.float().expand(8, 3, 3), atol=1e-6, rtol=0)
    for i, frame in enumerate(meta["frames"]):
        stored = scene.images.encoded(i)
        assert stored == (scene_dir / frame["file_path"]).read_bytes()  # PNG kept byte for byte
        expected = torch.from_numpy(np.asarray(Image.open(scene_dir / frame["file_path"]).convert("RGB")).copy())
        assert torch.equal((scene.images[i] * 255).round().to(torch.uint8).permute(1, 2, 0), expected)

    # The same scene read from its folder is the same scene.
    (folder_scene,) = SceneFolderSource(scene_dir).scenes("pavilion")
    torch.testing.assert_close(folder_scene.extrinsics, scene.extrinsics, atol=1e-6, rtol=0)
    torch.testing.assert_close(folder_scene.intrinsics, scene.intrinsics, atol=1e-7, rtol=0)


def test_convert_reencodes_and_downscales(tmp_path):
    write_scene_folder(tmp_path / "in" / "s", 3)
    summary = Convert(
        data=tmp_path / "in", output_dir=tmp_path / "out", image_format="jpeg", max_long_side=16, split="test"
    ).run()
    assert summary["scenes"] == 1 and summary["chunks"] == 1
    (scene,) = ChunkSource(tmp_path / "out" / "test").scenes("000000.torch")
    assert scene.images.header(0) == ("JPEG", (12, 16)) and scene.images[0].shape == (3, 12, 16)
    _, k = line_cameras(3)
    torch.testing.assert_close(scene.intrinsics, k)  # a corner-aligned resize keeps normalised K


def test_convert_skips_bad_scenes_and_refuses_empty_input(tmp_path, capsys):
    write_scene_folder(tmp_path / "in" / "good", 3)
    write_scene_folder(tmp_path / "in" / "single", 1)
    broken = write_scene_folder(tmp_path / "in" / "broken", 3)
    (broken / "images" / "frame_00001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    with pytest.warns(DataWarning) as caught:
        summary = Convert(data=tmp_path / "in", output_dir=tmp_path / "out").run()
    messages = " | ".join(str(w.message) for w in caught)
    assert "'single'" in messages and "'broken'" in messages
    assert summary["scenes"] == 1 and summary["skipped"] == 2
    assert ChunkSource(tmp_path / "out" / "train").index == {"good": "000000.torch"}

    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit_info:
        Convert(data=tmp_path / "empty", output_dir=tmp_path / "out2").main()
    assert exit_info.value.code == 2
    assert "no scenes in" in capsys.readouterr().out
    assert not (tmp_path / "out2").exists()
    with pytest.raises(SystemExit):  # an existing split needs an explicit mode
        Convert(data=tmp_path / "in", output_dir=tmp_path / "out").main()


def write_colmap_scene(folder: Path, n: int, angle: float = 0.3) -> torch.Tensor:
    """A COLMAP text model (sparse/0) of ``n`` cameras on a line, tilted about x; returns OpenCV c2w."""
    (folder / "sparse" / "0").mkdir(parents=True)
    (folder / "images").mkdir()
    c2w, k = line_cameras(n)
    c, s = math.cos(angle), math.sin(angle)
    c2w[:, :3, :3] = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])
    (folder / "sparse/0/cameras.txt").write_text(f"1 PINHOLE 32 24 {k[0, 0, 0] * 32} {k[0, 1, 1] * 24} 16 12\n")
    lines = []
    for i, data in enumerate(synthetic_frames(n, 0)):
        (folder / "images" / f"f{i}.png").write_bytes(data)
        w2c = torch.linalg.inv(c2w[i].double())
        # COLMAP stores world-to-camera as a quaternion (w, x, y, z); here a rotation about x by -angle.
        tx, ty, tz = w2c[:3, 3].tolist()
        lines.append(f"{i + 1} {math.cos(angle / 2)} {-math.sin(angle / 2)} 0 0 {tx} {ty} {tz} 1 f{i}.png\n\n")
    (folder / "sparse/0/images.txt").write_text("".join(lines))
    (folder / "sparse/0/points3D.txt").write_text("")
    return c2w


def test_convert_through_nerfstudio_dataparsers(tmp_path):
    write_scene_folder(tmp_path / "ns" / "s", 4)
    expected_colmap = write_colmap_scene(tmp_path / "colmap" / "c", 4)
    _, k = line_cameras(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Convert(data=tmp_path / "ns", output_dir=tmp_path / "out", dataparser="nerfstudio-data").run()
        Convert(data=tmp_path / "colmap", output_dir=tmp_path / "out", dataparser="colmap", mode="append").run()
    source = ChunkSource(tmp_path / "out" / "train")
    assert sorted(source.index) == ["c", "s"]
    scene = source.load_scene("s")
    torch.testing.assert_close(scene.extrinsics, line_cameras(4)[0], atol=1e-6, rtol=0)  # poses kept as stored
    torch.testing.assert_close(scene.intrinsics, k)
    scene = source.load_scene("c")
    torch.testing.assert_close(scene.extrinsics, expected_colmap, atol=1e-6, rtol=0)
    torch.testing.assert_close(scene.intrinsics, k)
