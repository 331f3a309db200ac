"""Opening a training data location as a :class:`~pixelsplat_ns.data.scenes.SceneSource`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from pixelsplat_ns.data.chunks import CHUNK_SUFFIX, ChunkSource
from pixelsplat_ns.data.scenes import Scene, SceneFolderSource, SceneSource


class ConcatSource:
    """Several sources as one (like the reference's list of dataset roots)."""

    def __init__(self, sources: Sequence[SceneSource]) -> None:
        self.sources = list(sources)

    def shards(self) -> list[str]:
        return [f"{i}:{shard}" for i, source in enumerate(self.sources) for shard in source.shards()]

    def scenes(self, shard: str) -> Iterator[Scene]:
        position, _, name = shard.partition(":")
        return self.sources[int(position)].scenes(name)


def _has_chunks(folder: Path) -> bool:
    return folder.is_dir() and any(path.suffix == CHUNK_SUFFIX for path in folder.iterdir())


def open_scene_source(
    path: Path | Sequence[Path], split: str = "train", dataparser: str | None = None, min_frames: int = 2
) -> SceneSource:
    """The scenes at ``path``, whatever their storage:

    * ``path/<split>/*.torch`` or ``path/*.torch``: chunk format (:class:`ChunkSource`);
    * otherwise a nerfstudio scene folder or a folder of them (:class:`SceneFolderSource`,
      through the nerfstudio dataparser ``dataparser`` if given, e.g. ``colmap``).

    Several paths give one :class:`ConcatSource`. Raises FileNotFoundError (naming the
    path) when there is nothing to read.
    """
    if not isinstance(path, (str, Path)):
        return ConcatSource([open_scene_source(p, split, dataparser, min_frames) for p in path])
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"training data {path} does not exist")
    if _has_chunks(path / split):
        return ChunkSource(path / split, min_frames)
    if _has_chunks(path):
        return ChunkSource(path, min_frames)
    return SceneFolderSource(path, dataparser, min_frames)
