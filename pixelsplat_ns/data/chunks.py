"""The RE10K/ACID chunk format of the reference pixelSplat code: reading and writing.

A split folder (``train/``, ``test/``) holds ``*.torch`` chunk files and ``index.json``
(scene key -> chunk file name). Each chunk is a ``torch.save``'d list of scene dicts:

* ``key``: str, unique scene name; ``url``: str, where it came from
* ``timestamps``: int64 [n]
* ``cameras``: float32 [n, 18] = fx fy cx cy (normalised by width/height), two unused
  values, then the 3x4 OpenCV world-to-camera matrix, row-major
* ``images``: list of n uint8 tensors, each the bytes of an encoded JPEG/PNG

:class:`ChunkSource` streams it one chunk at a time (each chunk is a shard), decoding
images lazily; :class:`ChunkWriter` writes it with atomic files and a size limit per chunk.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterator
from functools import cached_property
from io import BytesIO
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from torch import Tensor

from pixelsplat_ns.cameras import chunk_cameras_to_opencv, opencv_to_chunk_cameras
from pixelsplat_ns.data.scenes import (
    DataWarning,
    FrameImages,
    ImageDecodeError,
    Scene,
    decode_image,
    image_header,
    scene_problem,
    skip_warning,
)
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.io import atomic_path, current_umask

CHUNK_SUFFIX = ".torch"
INDEX_NAME = "index.json"


def _readable_by_all(path: Path) -> None:
    """Give a temporary file (mkstemp makes them 0600) the permissions of an ordinary new file."""
    os.chmod(path, 0o666 & ~current_umask())


# --- camera rows of the chunk format -------------------------------------------------------
# (Conversions between the chunk format's [n, 18] rows and pixelSplat's OpenCV c2w + normalised
# K. They are format-specific; the rest of the project only sees the converted tensors.)


# --- reading ----------------------------------------------------------------------------------


def scene_from_chunk_item(item: Any, min_frames: int = 2) -> Scene | str:
    """One chunk entry -> a :class:`Scene`, or a string saying why it is unusable.

    Every image's header is checked (cheap: no pixels are decoded), so garbage bytes are
    caught here; damage deeper in a file surfaces when the frame is decoded.
    """
    if not isinstance(item, dict) or not isinstance(item.get("key"), str):
        return "is not a scene dict with a string 'key'"
    cameras, images = item.get("cameras"), item.get("images")
    if not isinstance(cameras, Tensor) or cameras.ndim != 2 or cameras.shape[1] != 18:
        return f"has cameras of shape {getattr(cameras, 'shape', None)}, expected [n, 18]"
    if not isinstance(images, (list, tuple)) or len(images) != cameras.shape[0]:
        return f"has {cameras.shape[0]} cameras but {len(images) if isinstance(images, (list, tuple)) else 'no'} images"
    if len(images) < min_frames:
        return f"has {len(images)} frame(s), fewer than the {min_frames} needed"
    shape = (0, 0)
    for index, image in enumerate(images):
        if not isinstance(image, Tensor) or image.dtype != torch.uint8:
            return f"frame {index} is not a uint8 tensor of encoded image bytes"
        try:
            _, frame_shape = image_header(image.numpy().tobytes())
        except ImageDecodeError as error:
            return f"frame {index} is corrupt ({error})"
        shape = frame_shape if index == 0 else shape
    try:
        extrinsics, intrinsics = chunk_cameras_to_opencv(cameras)
    except torch.linalg.LinAlgError:
        return "has a singular world-to-camera matrix (cannot be inverted)"
    timestamps = item.get("timestamps")
    timestamps = timestamps.to(torch.int64) if isinstance(timestamps, Tensor) else torch.zeros(0, dtype=torch.int64)
    scene = Scene(
        item["key"], FrameImages(list(images)), extrinsics, intrinsics, shape, timestamps, str(item.get("url", ""))
    )
    return scene_problem(scene, min_frames) or scene


def _one_line(error: Exception) -> str:
    """The gist of an exception in one line. torch.load's weights-only refusals are
    paragraphs of advice; their specific part follows "WeightsUnpickler error:"."""
    text = str(error)
    _, marker, specific = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (specific if marker else text).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    return lines[0].split(". ")[0] if marker else lines[0]


def _read_index(path: Path) -> dict[str, str] | str:
    """``index.json``'s scene key -> chunk file name mapping, or why it is unusable."""
    try:
        index = json.loads(path.read_bytes())
    except (OSError, ValueError) as error:  # ValueError: bad JSON or bad UTF-8
        return f"cannot be read ({error})"
    if not isinstance(index, dict) or not all(isinstance(name, str) for name in index.values()):
        return "is not a JSON object of scene key -> chunk file name"
    return index


class ChunkSource:
    """Scenes from a split folder of ``*.torch`` chunks; each chunk file is a shard.

    Only one chunk is in memory at a time while iterating (the scenes of a shard hold
    references to that chunk's encoded images, nothing else). Unreadable chunks and
    unusable scenes (corrupt images, too few frames, bad cameras) are skipped with a
    :class:`DataWarning` naming them.
    """

    def __init__(self, root: Path, min_frames: int = 2) -> None:
        self.root = Path(root)
        self.min_frames = min_frames
        if not self.root.is_dir():
            raise FileNotFoundError(f"chunk folder {self.root} does not exist")
        self._chunks = sorted(path.name for path in self.root.iterdir() if path.suffix == CHUNK_SUFFIX)
        if not self._chunks:
            raise FileNotFoundError(f"no {CHUNK_SUFFIX} chunk files in {self.root}")

    def shards(self) -> list[str]:
        return list(self._chunks)

    def load_chunk(self, shard: str) -> list | None:
        """The raw chunk (list of scene dicts), or None (with a warning) if unreadable."""
        try:
            chunk = torch.load(self.root / shard, map_location="cpu", weights_only=True)
        except Exception as error:
            reason = _one_line(error)
            warnings.warn(f"skipping chunk {self.root / shard}: cannot be loaded ({reason})", DataWarning, stacklevel=2)
            return None
        if not isinstance(chunk, list):
            warnings.warn(f"skipping chunk {self.root / shard}: not a list of scenes", DataWarning, stacklevel=2)
            return None
        return chunk

    def scenes(self, shard: str) -> Iterator[Scene]:
        chunk = self.load_chunk(shard)
        for position, item in enumerate(chunk or ()):
            scene = scene_from_chunk_item(item, self.min_frames)
            if isinstance(scene, str):
                key = item.get("key") if isinstance(item, dict) else None
                skip_warning(key if isinstance(key, str) else f"{shard}[{position}]", scene)
                continue
            yield scene

    @cached_property
    def index(self) -> dict[str, str]:
        """Scene key -> chunk file name, from ``index.json``, else by reading every chunk
        (with a DataWarning when ``index.json`` exists but is unreadable)."""
        path = self.root / INDEX_NAME
        if path.exists():
            index = _read_index(path)
            if isinstance(index, dict):
                return index
            warnings.warn(f"ignoring {path}: it {index}; indexing the chunks instead", DataWarning, stacklevel=2)
        index = {}
        for shard in self._chunks:
            for item in self.load_chunk(shard) or ():
                if isinstance(item, dict) and isinstance(item.get("key"), str):
                    index[item["key"]] = shard
        return index

    def keys(self) -> list[str]:
        return list(self.index)

    def load_scene(self, key: str) -> Scene:
        """Random access to one scene through the index (loads its whole chunk once).

        Raises KeyError for a key the index does not list, and PixelSplatInputError when
        its chunk is unreadable or lacks it, or the scene is unusable.
        """
        shard = self.index.get(key)
        if shard is None:
            raise KeyError(f"scene {key!r} is not in {self.root / INDEX_NAME}")
        for item in self.load_chunk(shard) or ():
            if isinstance(item, dict) and isinstance(item.get("key"), str) and item["key"] == key:
                scene = scene_from_chunk_item(item, self.min_frames)
                if isinstance(scene, str):
                    raise PixelSplatInputError(f"scene {key!r} in {self.root / shard} {scene}")
                return scene
        raise PixelSplatInputError(f"scene {key!r} is indexed in {self.root / shard} but that chunk does not hold it")


# --- writing ----------------------------------------------------------------------------------

ImageFormat = Literal["original", "jpeg", "png"]


def encode_frame(
    images: FrameImages,
    index: int,
    image_format: ImageFormat = "original",
    jpeg_quality: int = 95,
    max_long_side: int | None = None,
) -> bytes:
    """A frame's bytes for a chunk, checked to decode.

    ``original`` keeps JPEG/PNG files byte for byte (other formats become PNG). Frames
    longer than ``max_long_side`` are downscaled (Lanczos, corner-aligned: normalised
    intrinsics are unchanged by a resize) and re-encoded. Raises ImageDecodeError.
    """
    raw = images.encoded(index)
    source_format, (h, w) = image_header(raw)
    image = decode_image(raw)  # full decode: catch truncated files now, not during training
    resize = max_long_side is not None and max(h, w) > max_long_side
    target = image_format
    if target == "original":
        if source_format in ("JPEG", "PNG") and not resize:
            return raw
        target = "jpeg" if source_format == "JPEG" else "png"
    if resize:
        factor = max_long_side / max(h, w)
        image = image.resize((max(1, round(w * factor)), max(1, round(h * factor))), Image.LANCZOS)
    buffer = BytesIO()
    if target == "jpeg":
        image.save(buffer, format="JPEG", quality=jpeg_quality)
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def scene_to_chunk_item(scene: Scene, frames: list[bytes] | None = None) -> dict:
    """A :class:`Scene` -> a chunk entry; ``frames`` are the encoded images (default: as stored)."""
    frames = frames if frames is not None else [scene.images.encoded(i) for i in range(len(scene))]
    return {
        "key": scene.key,
        "url": scene.url,
        "timestamps": scene.timestamps.to(torch.int64).clone(),
        "cameras": opencv_to_chunk_cameras(scene.extrinsics, scene.intrinsics),
        "images": [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in frames],
    }


def chunk_item_bytes(item: dict) -> int:
    """Approximate size of a chunk entry once saved."""
    images = sum(image.numel() for image in item["images"])
    return images + item["cameras"].numel() * 4 + item["timestamps"].numel() * 8 + 256 * (len(item["images"]) + 1)


WriteMode = Literal["new", "append", "overwrite"]


class ChunkWriter:
    """Writes chunk entries into a split folder, starting a new chunk at ``max_chunk_bytes``.

    Every chunk file and the index are written atomically (temporary file, then rename),
    and the index is rewritten after each chunk, so an interrupted conversion leaves a
    readable split folder. ``mode``: ``new`` refuses a folder that already has chunks,
    ``append`` adds to them (keys must stay unique), ``overwrite`` replaces them (stale
    chunk files are removed when the writer is closed). A scene bigger than the limit gets
    a chunk of its own.
    """

    def __init__(self, root: Path, max_chunk_bytes: int = 100 * 2**20, mode: WriteMode = "new") -> None:
        self.root = Path(root)
        self.max_chunk_bytes = max_chunk_bytes
        self.mode = mode
        self.root.mkdir(parents=True, exist_ok=True)
        existing = sorted(path.name for path in self.root.iterdir() if path.suffix == CHUNK_SUFFIX)
        index_path = self.root / INDEX_NAME
        if (existing or index_path.exists()) and mode == "new":
            raise FileExistsError(
                f"{self.root} already holds chunks ({len(existing)} files); choose overwrite or append mode"
            )
        self._stale = set(existing) if mode == "overwrite" else set()
        self.index: dict[str, str] = {}
        self._next = 0
        if mode == "append":
            self.index = dict(json.loads(index_path.read_text())) if index_path.exists() else {}
            numbers = [int(name[: -len(CHUNK_SUFFIX)]) for name in existing if name[: -len(CHUNK_SUFFIX)].isdigit()]
            self._next = max(numbers, default=-1) + 1
        self._pending: list[dict] = []
        self._pending_bytes = 0
        self._keys = set(self.index)
        self.written: list[str] = []

    def add(self, item: dict) -> None:
        """Queue one chunk entry (see :func:`scene_to_chunk_item`); flushes full chunks."""
        if item["key"] in self._keys:
            raise ValueError(f"duplicate scene key {item['key']!r} in {self.root}")
        size = chunk_item_bytes(item)
        if self._pending and self._pending_bytes + size > self.max_chunk_bytes:
            self.flush()
        if size > self.max_chunk_bytes:
            warnings.warn(
                f"scene {item['key']!r} ({size / 2**20:.1f} MB) is larger than the chunk limit "
                f"({self.max_chunk_bytes / 2**20:.1f} MB); it gets a chunk of its own",
                DataWarning,
                stacklevel=2,
            )
        self._pending.append(item)
        self._pending_bytes += size
        self._keys.add(item["key"])

    def flush(self) -> None:
        """Write the queued entries as one chunk file and update the index."""
        if not self._pending:
            return
        name = f"{self._next:06d}{CHUNK_SUFFIX}"
        with atomic_path(self.root / name) as temporary:
            torch.save(self._pending, temporary)
            _readable_by_all(temporary)
        self._next += 1
        self._stale.discard(name)
        self.written.append(name)
        self.index.update({item["key"]: name for item in self._pending})
        self._pending, self._pending_bytes = [], 0
        self._write_index()

    def _write_index(self) -> None:
        with atomic_path(self.root / INDEX_NAME) as temporary:
            temporary.write_text(json.dumps(self.index, indent=2))
            _readable_by_all(temporary)

    def close(self) -> None:
        """Flush the last chunk, drop stale chunks (overwrite mode), write the index."""
        self.flush()
        for name in sorted(self._stale):
            os.remove(self.root / name)
        self._stale.clear()
        self._write_index()

    def __enter__(self) -> "ChunkWriter":
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is None:
            self.close()
