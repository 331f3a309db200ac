"""``pixelsplat-ns synthesize``: procedural training scenes with exact geometry.

Writes ``<output-dir>/scene_00000 ...``, each an ordinary nerfstudio scene folder
(``images/frame_*.png`` + ``transforms.json``), ready for
``ns-train pixelsplat-pretrain --data <output-dir>``. See
:mod:`pixelsplat_ns.data.procedural` for what the scenes are made of.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from pixelsplat_ns.cli.progress import progress_bar


@dataclass
class Synthesize:
    """Write procedural scenes (textured rooms and boxes seen along camera arcs) as nerfstudio scene folders."""

    output_dir: Path
    """New (or empty) folder that receives scene_00000, scene_00001, ..."""
    num_scenes: int = 100
    """How many scenes to write."""
    frames: int = 24
    """Frames per scene, along an arc of 30-90 degrees (at least 2)."""
    image_size: tuple[int, int] = (128, 128)
    """Frame height and width in pixels."""
    textures: tuple[Path, ...] = ()
    """Photos for the surfaces' textures (image files, or folders searched recursively); none: procedural only."""
    seed: int = 0
    """Scene i is drawn from (seed, i): the same command writes the same bytes."""

    def check_inputs(self) -> list[Path]:
        """Fail before anything is written; returns the texture image files."""
        from pixelsplat_ns.data.procedural import texture_image_files
        from pixelsplat_ns.errors import PixelSplatInputError

        numbers = {"--num-scenes": self.num_scenes, "--frames": self.frames}
        numbers.update({"--image-size (height)": self.image_size[0], "--image-size (width)": self.image_size[1]})
        for flag, value in numbers.items():
            if value <= 0:
                raise PixelSplatInputError(f"{flag} must be positive, got {value}")
        if self.frames < 2:
            raise PixelSplatInputError(f"--frames must be at least 2 (a scene needs two views), got {self.frames}")
        if self.output_dir.exists() and (not self.output_dir.is_dir() or any(self.output_dir.iterdir())):
            raise PixelSplatInputError(f"output folder {self.output_dir} already exists and is not empty")
        return texture_image_files(self.textures)

    def main(self) -> None:
        from pixelsplat_ns.errors import PixelSplatInputError

        console = Console()
        try:
            photos = self.check_inputs()
        except PixelSplatInputError as error:
            console.print(f"[bold red]pixelsplat: error: {error}", highlight=False, soft_wrap=True)
            raise SystemExit(2) from None
        seconds = self.run(photos, console)
        console.print(
            f"[bold green]wrote[/] {self.num_scenes} scene(s) of {self.frames} frames to {self.output_dir} "
            f"({seconds / self.num_scenes:.2f} s per scene); train with: "
            f"ns-train pixelsplat-pretrain --data {self.output_dir}",
            highlight=False,
        )

    def run(self, photos: list[Path], console: Console | None = None) -> float:
        """Write the scenes (inputs already checked); returns the seconds it took."""
        from pixelsplat_ns.data.procedural import ProceduralConfig, write_scene

        config = ProceduralConfig(image_shape=self.image_size, num_frames=self.frames)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        progress = progress_bar(console)
        start = time.perf_counter()
        with progress:
            task = progress.add_task("synthesizing scenes", total=self.num_scenes)
            for index in range(self.num_scenes):
                write_scene(self.output_dir / f"scene_{index:05d}", (self.seed, index), config, photos)
                progress.advance(task)
        return time.perf_counter() - start
