"""Scenes for multi-scene training, whatever they are stored in.

A :class:`Scene` is one posed image sequence in pixelSplat's conventions: OpenCV
camera-to-world extrinsics, intrinsics normalised by image width/height, and images that
are only decoded when asked for. A :class:`SceneSource` hands scenes out in *shards*
(a chunk file, or one scene folder): the unit that data-parallel ranks and dataloader
workers divide between them, and the unit held in memory at a time.

Two sources implement it: :class:`~pixelsplat_ns.data.chunks.ChunkSource` (the
RE10K/ACID ``*.torch`` chunk format) and :class:`SceneFolderSource` here (a folder of
nerfstudio-format scenes, or anything a nerfstudio dataparser reads, e.g. COLMAP).
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch
from jaxtyping import Float, Int64
from PIL import Image
from torch import Tensor

from pixelsplat_ns.cameras import homogenize_pose, normalize_intrinsics, opengl_to_opencv_c2w

# Files whose presence makes a folder a scene (nerfstudio-data, Blender, COLMAP layouts).
SCENE_MARKERS = ("transforms.json", "transforms_train.json", "sparse/0", "colmap/sparse/0")


class DataWarning(UserWarning):
    """A scene, frame or example was skipped; the message names it and says why."""


class ImageDecodeError(ValueError):
    """Encoded image bytes that cannot be decoded."""


def decode_image(data: bytes) -> Image.Image:
    """Decode JPEG/PNG/... bytes to an 8-bit RGB PIL image.

    Transparency is composited onto black (pixelSplat's background); raises
    :class:`ImageDecodeError` for bytes that are not a readable image.
    """
    try:
        image = Image.open(BytesIO(data))
        image.load()
    except Exception as error:  # PIL raises a zoo of types for broken files
        raise ImageDecodeError(f"cannot decode image ({len(data)} bytes): {error}") from error
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return image.convert("RGB")


def image_header(data: bytes) -> tuple[str, tuple[int, int]]:
    """(format, (height, width)) from an encoded image's header, without decoding pixels."""
    try:
        with Image.open(BytesIO(data)) as image:
            return str(image.format), (image.height, image.width)
    except Exception as error:
        raise ImageDecodeError(f"not a readable image ({len(data)} bytes): {error}") from error


def to_tensor(image: Image.Image) -> Float[Tensor, "3 h w"]:
    """RGB PIL image -> float tensor in [0, 1], channels first."""
    array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).float() / 255.0


class FrameImages(Sequence):
    """A scene's images, decoded lazily: ``images[i]`` is a [3, h, w] float tensor in [0, 1].

    Each frame is held as its encoded bytes (a uint8 tensor, e.g. from a chunk file) or as
    a path to an image file (read when needed).
    """

    def __init__(self, frames: Sequence[Tensor | bytes | Path]) -> None:
        self._frames = list(frames)

    def __len__(self) -> int:
        return len(self._frames)

    def __getitem__(self, index: int) -> Float[Tensor, "3 h w"]:  # type: ignore[override]
        return to_tensor(self.pil(index))

    def encoded(self, index: int) -> bytes:
        """The frame's encoded bytes, as stored."""
        frame = self._frames[index]
        if isinstance(frame, Path):
            return frame.read_bytes()
        if isinstance(frame, Tensor):
            return frame.numpy().tobytes()
        return bytes(frame)

    def pil(self, index: int) -> Image.Image:
        """The frame decoded to an RGB PIL image (raises ImageDecodeError if corrupt)."""
        return decode_image(self.encoded(index))

    def header(self, index: int) -> tuple[str, tuple[int, int]]:
        """(format, (height, width)) of the frame, read from its header only."""
        return image_header(self.encoded(index))

    def name(self, index: int) -> str:
        """A name for messages: the file name, or ``frame i``."""
        frame = self._frames[index]
        return frame.name if isinstance(frame, Path) else f"frame {index}"

    def missing_files(self) -> list[Path]:
        """Frames given as paths whose file does not exist."""
        return [frame for frame in self._frames if isinstance(frame, Path) and not frame.is_file()]


@dataclass
class Scene:
    """One posed image sequence, in pixelSplat's conventions. Frames are in capture order."""

    key: str
    """Unique name of the scene (chunk key, or the folder's path relative to the source root)."""
    images: FrameImages
    """The n frames, decoded on access."""
    extrinsics: Float[Tensor, "n 4 4"]
    """OpenCV camera-to-world (camera looks along +Z, +Y down), float32."""
    intrinsics: Float[Tensor, "n 3 3"]
    """Intrinsics normalised by image width (row 0) and height (row 1); pixel centres at +0.5."""
    image_shape: tuple[int, int]
    """(height, width) of the first frame; frames may differ, examples use each frame's size."""
    timestamps: Int64[Tensor, " n"] = field(default_factory=lambda: torch.zeros(0, dtype=torch.int64))
    """Capture times (chunk format) or frame numbers; empty means 0..n-1."""
    url: str = ""
    """Where the scene came from (a video URL for RE10K/ACID, a file URI for folders)."""

    def __post_init__(self) -> None:
        if self.timestamps.numel() == 0:
            self.timestamps = torch.arange(len(self.images), dtype=torch.int64)

    def __len__(self) -> int:
        return len(self.images)


def scene_problem(scene: Scene, min_frames: int = 2) -> str | None:
    """Why a scene is unusable (None when it is fine): frame count, shapes, finiteness."""
    n = len(scene.images)
    if n < min_frames:
        return f"has {n} frame(s), fewer than the {min_frames} needed"
    if scene.extrinsics.shape != (n, 4, 4) or scene.intrinsics.shape != (n, 3, 3):
        return (
            f"has {n} images but extrinsics {tuple(scene.extrinsics.shape)} and intrinsics "
            f"{tuple(scene.intrinsics.shape)} (expected [{n}, 4, 4] and [{n}, 3, 3])"
        )
    if scene.timestamps.shape != (n,):
        return f"has {n} images but timestamps of shape {tuple(scene.timestamps.shape)}"
    if not (torch.isfinite(scene.extrinsics).all() and torch.isfinite(scene.intrinsics).all()):
        return "has non-finite (NaN or inf) cameras"
    if (scene.intrinsics[:, 0, 0] <= 0).any() or (scene.intrinsics[:, 1, 1] <= 0).any():
        return "has non-positive focal lengths"
    return None


def skip_warning(key: str, reason: str) -> None:
    warnings.warn(f"skipping scene {key!r}: {reason}", DataWarning, stacklevel=3)


@runtime_checkable
class SceneSource(Protocol):
    """Where scenes come from. Shards are what ranks and workers split between them."""

    def shards(self) -> list[str]:
        """Names of the shards, in a fixed order (the same in every process)."""
        ...

    def scenes(self, shard: str) -> Iterator[Scene]:
        """The usable scenes of one shard (unusable ones are skipped with a DataWarning)."""
        ...


def find_scene_folders(root: Path, markers: Sequence[str] = SCENE_MARKERS) -> list[Path]:
    """``root`` if it is a scene, otherwise every folder below it that is one (sorted).

    A folder is a scene when it holds one of ``markers``; the search does not descend
    into scenes (so a COLMAP scene's ``colmap/`` sub-folder is not a second scene).
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} is not a folder")

    def is_scene(folder: Path) -> bool:
        return any((folder / marker).exists() for marker in markers)

    if is_scene(root):
        return [root]
    found: list[Path] = []
    stack = [root]
    while stack:
        folder = stack.pop()
        for child in sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True):
            if is_scene(child):
                found.append(child)
            else:
                stack.append(child)
    return sorted(found)


def _frame_intrinsics(meta: dict, frame: dict, key: str) -> tuple[np.ndarray, int | None, int | None]:
    def get(name: str):
        return frame.get(name, meta.get(name))

    values = [get(name) for name in ("fl_x", "fl_y", "cx", "cy")]
    if any(value is None for value in values):
        raise ValueError(f"{key}: frame {frame.get('file_path')} lacks fl_x/fl_y/cx/cy")
    fx, fy, cx, cy = (float(value) for value in values)
    k = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])
    w, h = get("w"), get("h")
    return k, (None if w is None else int(w)), (None if h is None else int(h))


_DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")


def load_transforms_scene(folder: Path, key: str | None = None) -> Scene:
    """Read a nerfstudio-data scene (``transforms.json``) directly, in float64.

    Frames are sorted by file path, as nerfstudio's dataparser does; poses are taken as
    they are stored (no auto-orientation, centring or scaling: pixelSplat rescales each
    example so its context baseline is 1). Per-frame intrinsics and sizes are honoured.
    Only pinhole cameras are supported; distortion parameters are ignored with a warning.
    """
    folder = Path(folder)
    key = key or folder.name
    meta = json.loads((folder / "transforms.json").read_text())
    camera_model = meta.get("camera_model", "OPENCV")
    if camera_model not in ("PINHOLE", "OPENCV", "SIMPLE_PINHOLE", "PERSPECTIVE"):
        raise ValueError(f"{key}: camera model {camera_model} is not a pinhole camera")
    frames = sorted(meta["frames"], key=lambda frame: str(folder / frame["file_path"]))
    if any(
        abs(float(frame.get(name, meta.get(name, 0.0)) or 0.0)) > 0 for frame in frames for name in _DISTORTION_KEYS
    ):
        warnings.warn(
            f"scene {key!r}: lens distortion parameters are ignored (pixelSplat assumes pinhole "
            "cameras); undistort the images first for exact geometry",
            DataWarning,
            stacklevel=2,
        )
    paths, poses, ks, sizes = [], [], [], []
    for frame in frames:
        path = folder / frame["file_path"]
        if not path.suffix and not path.exists():  # nerfstudio tolerates missing extensions
            candidates = sorted(path.parent.glob(path.name + ".*"))
            path = candidates[0] if candidates else path
        k, w, h = _frame_intrinsics(meta, frame, key)
        if w is None or h is None:
            _, (h, w) = image_header(path.read_bytes())
        paths.append(path)
        poses.append(np.asarray(frame["transform_matrix"], dtype=np.float64))
        ks.append(k)
        sizes.append((w, h))
    c2w_gl = torch.from_numpy(np.stack(poses)) if poses else torch.zeros(0, 4, 4, dtype=torch.float64)
    k_pixels = torch.from_numpy(np.stack(ks)) if ks else torch.zeros(0, 3, 3, dtype=torch.float64)
    widths = torch.tensor([w for w, _ in sizes], dtype=torch.float64)
    heights = torch.tensor([h for _, h in sizes], dtype=torch.float64)
    extrinsics = opengl_to_opencv_c2w(c2w_gl).to(torch.float32)
    intrinsics = normalize_intrinsics(k_pixels, widths, heights).to(torch.float32)
    shape = (sizes[0][1], sizes[0][0]) if sizes else (0, 0)
    return Scene(key, FrameImages(paths), extrinsics, intrinsics, shape, url=folder.resolve().as_uri())


def load_dataparser_scene(folder: Path, dataparser: str, key: str | None = None) -> Scene:
    """Read a scene with one of nerfstudio's dataparsers (``colmap``, ``nerfstudio-data``, ...).

    The dataparser is told to keep poses as stored (no orientation, centring or scaling),
    to use every image (``eval_mode=all``) at full resolution. Its OpenGL camera-to-world
    poses and pixel intrinsics are converted to pixelSplat's conventions here.
    """
    import copy

    from nerfstudio.cameras.cameras import CameraType
    from nerfstudio.configs.dataparser_configs import all_dataparsers

    folder = Path(folder)
    key = key or folder.name
    if dataparser not in all_dataparsers:
        raise ValueError(f"unknown nerfstudio dataparser {dataparser!r}; known: {', '.join(sorted(all_dataparsers))}")
    config = copy.deepcopy(all_dataparsers[dataparser])
    config.data = folder
    settings = {
        "orientation_method": "none",
        "center_method": "none",
        "auto_scale_poses": False,
        "scale_factor": 1.0,
        "eval_mode": "all",
        "downscale_factor": 1,
        "load_3D_points": False,
        "assume_colmap_world_coordinate_convention": False,
    }
    for name, value in settings.items():
        if hasattr(config, name):
            setattr(config, name, value)
    if dataparser == "colmap" and not (folder / config.colmap_path).exists() and (folder / "sparse/0").exists():
        config.colmap_path = Path("sparse/0")
    outputs = config.setup().get_dataparser_outputs(split="train")
    cameras = outputs.cameras
    if (cameras.camera_type != CameraType.PERSPECTIVE.value).any():
        raise ValueError(f"{key}: only perspective (pinhole) cameras are supported")
    if cameras.distortion_params is not None and cameras.distortion_params.abs().max() > 0:
        warnings.warn(f"scene {key!r}: lens distortion parameters are ignored", DataWarning, stacklevel=2)
    order = sorted(range(len(outputs.image_filenames)), key=lambda i: str(outputs.image_filenames[i]))
    n = len(order)
    k_pixels = torch.zeros(n, 3, 3, dtype=torch.float64)
    k_pixels[:, 0, 0] = cameras.fx[order, 0].double()
    k_pixels[:, 1, 1] = cameras.fy[order, 0].double()
    k_pixels[:, 0, 2] = cameras.cx[order, 0].double()
    k_pixels[:, 1, 2] = cameras.cy[order, 0].double()
    k_pixels[:, 2, 2] = 1
    widths = cameras.width[order, 0].double()
    heights = cameras.height[order, 0].double()
    extrinsics = opengl_to_opencv_c2w(homogenize_pose(cameras.camera_to_worlds[order].double())).to(torch.float32)
    intrinsics = normalize_intrinsics(k_pixels, widths, heights).to(torch.float32)
    paths = [Path(outputs.image_filenames[i]) for i in order]
    shape = (int(heights[0]), int(widths[0])) if n else (0, 0)
    return Scene(key, FrameImages(paths), extrinsics, intrinsics, shape, url=folder.resolve().as_uri())


class SceneFolderSource:
    """A folder of nerfstudio-format scenes (or one scene folder); each scene is a shard.

    With ``dataparser=None`` every folder holding a ``transforms.json`` is read directly
    (:func:`load_transforms_scene`); with a nerfstudio dataparser name (``colmap``,
    ``nerfstudio-data``, ``blender-data``, ...) every folder that looks like a scene is
    read through that dataparser (:func:`load_dataparser_scene`). Scene keys are the
    folders' paths relative to ``root`` (the folder's name when ``root`` is the scene).
    """

    def __init__(self, root: Path, dataparser: str | None = None, min_frames: int = 2) -> None:
        self.root = Path(root)
        self.dataparser = dataparser
        self.min_frames = min_frames
        markers = ("transforms.json",) if dataparser is None else SCENE_MARKERS
        folders = find_scene_folders(self.root, markers)
        if not folders:
            what = "a transforms.json" if dataparser is None else f"one of {', '.join(SCENE_MARKERS)}"
            raise FileNotFoundError(f"no scenes in {self.root}: neither it nor any folder below it holds {what}")
        self._folders = {self._key(folder): folder for folder in folders}

    def _key(self, folder: Path) -> str:
        return folder.name if folder == self.root else folder.relative_to(self.root).as_posix()

    def shards(self) -> list[str]:
        return list(self._folders)

    def scenes(self, shard: str) -> Iterator[Scene]:
        folder = self._folders[shard]
        try:
            if self.dataparser is None:
                scene = load_transforms_scene(folder, shard)
            else:
                scene = load_dataparser_scene(folder, self.dataparser, shard)
        except Exception as error:  # a broken scene must not stop a multi-scene run
            skip_warning(shard, f"cannot be read ({type(error).__name__}: {error})")
            return
        missing = scene.images.missing_files()
        if missing:
            skip_warning(shard, f"{len(missing)} image file(s) missing, e.g. {missing[0]}")
            return
        problem = scene_problem(scene, self.min_frames)
        if problem:
            skip_warning(shard, problem)
            return
        yield scene
