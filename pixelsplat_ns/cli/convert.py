"""``pixelsplat-ns convert``: nerfstudio-format scenes -> pixelSplat's chunked training format.

Writes ``<output-dir>/<split>/NNNNNN.torch`` chunk files and ``index.json`` in the layout
of the reference's RealEstate10K/ACID datasets, ready for multi-scene training.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
from rich.console import Console

from pixelsplat_ns.cli.progress import progress_bar


@dataclass
class Convert:
    """Convert nerfstudio-format scenes (one scene folder or a folder of them) into chunk files."""

    data: tyro.conf.Positional[Path]
    """A scene folder or a folder of scene folders (each with a transforms.json, or what --dataparser reads)."""
    output_dir: Path
    """Dataset root; chunks go to <output-dir>/<split>/ with an index.json."""
    split: str = "train"
    """Split folder to write (train or test)."""
    dataparser: str | None = None
    """Read scenes with this nerfstudio dataparser (e.g. colmap, nerfstudio-data, blender-data) instead of
    reading transforms.json directly. Poses are kept as stored either way (no re-orientation or scaling)."""
    chunk_size_mb: float = 100.0
    """Size limit per chunk file, in MB (a single larger scene gets a chunk of its own)."""
    image_format: Literal["original", "jpeg", "png"] = "original"
    """original: keep JPEG/PNG files byte for byte (others become PNG); jpeg or png: re-encode every frame."""
    jpeg_quality: int = 95
    """JPEG quality when re-encoding as JPEG."""
    max_long_side: int | None = None
    """Downscale frames whose long side exceeds this many pixels (normalised intrinsics are unchanged)."""
    min_frames: int = 2
    """Scenes with fewer frames are skipped with a warning."""
    mode: Literal["new", "append", "overwrite"] = "new"
    """new: refuse a split folder that already holds chunks; append: add scenes to it; overwrite: replace it."""

    def main(self) -> None:
        import warnings

        from pixelsplat_ns.data.scenes import DataWarning

        console = Console()
        with warnings.catch_warnings():
            # Skipped scenes are reported once each, as console lines above the progress bar.
            warnings.simplefilter("always", DataWarning)
            show_other = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, DataWarning):
                    console.print(f"[yellow]warning:[/] {message}", markup=True, highlight=False)
                else:
                    show_other(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            try:
                summary = self.run(console)
            except (FileNotFoundError, FileExistsError, ValueError) as error:
                console.print(f"[bold red]pixelsplat: error: {error}")
                raise SystemExit(2) from None
        console.print(
            f"[bold green]converted[/] {summary['scenes']} scene(s), {summary['frames']} frames into "
            f"{summary['chunks']} chunk(s) in {summary['root']}"
            + (f" ([yellow]{summary['skipped']} skipped, see warnings[/])" if summary["skipped"] else "")
        )

    def run(self, console: Console | None = None) -> dict:
        """Convert; returns counts (scenes, frames, chunks, skipped) and the split folder."""
        import warnings

        from pixelsplat_ns.data.chunks import ChunkWriter, encode_frame, scene_to_chunk_item
        from pixelsplat_ns.data.scenes import DataWarning, ImageDecodeError, SceneFolderSource

        if self.chunk_size_mb <= 0:
            raise ValueError(f"--chunk-size-mb must be positive, got {self.chunk_size_mb}")
        if not self.data.exists():
            raise FileNotFoundError(f"input folder {self.data} does not exist")
        source = SceneFolderSource(self.data, self.dataparser, self.min_frames)
        shards = source.shards()
        root = self.output_dir / self.split
        counts = {"scenes": 0, "frames": 0, "skipped": 0}
        progress = progress_bar(console)
        with ChunkWriter(root, int(self.chunk_size_mb * 2**20), self.mode) as writer, progress:
            task = progress.add_task("converting scenes", total=len(shards))
            for shard in shards:
                progress.update(task, description=f"converting {shard}")
                scenes = list(source.scenes(shard))  # empty (with a warning) when unusable
                for scene in scenes:
                    try:
                        frames = [
                            encode_frame(scene.images, i, self.image_format, self.jpeg_quality, self.max_long_side)
                            for i in range(len(scene))
                        ]
                    except (ImageDecodeError, OSError) as error:
                        warnings.warn(f"skipping scene {scene.key!r}: {error}", DataWarning, stacklevel=1)
                        continue
                    writer.add(scene_to_chunk_item(scene, frames))
                    counts["scenes"] += 1
                    counts["frames"] += len(scene)
                progress.advance(task)
            progress.update(task, description="converted")
        counts["skipped"] = len(shards) - counts["scenes"]
        return {**counts, "chunks": len(writer.written), "root": root}


def entrypoint() -> None:
    tyro.cli(Convert).main()


if __name__ == "__main__":
    entrypoint()
