"""``pixelsplat-ns evaluate``: the official evaluation protocol on a test split.

    pixelsplat-ns evaluate --data datasets/re10k --index evaluation_index_re10k.json \
        --encoder-checkpoint re10k.ckpt --output outputs/eval-re10k.json
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from rich.console import Console

from pixelsplat_ns.cli.progress import progress_bar


@dataclass
class Evaluate:
    """Score an encoder with fixed context/target views per scene (PSNR, SSIM, LPIPS)."""

    data: Path
    """Test data: a chunk folder (its test/ split is used if present) or nerfstudio scene folders."""
    index: Path
    """Evaluation index: scene key -> {"context": [i, j], "target": [...]} (official format)."""
    output: Path = Path("outputs/evaluation.json")
    """Results file, rewritten after every scene; an existing file of the same run is resumed."""
    encoder_checkpoint: Path | None = None
    """Encoder weights (official re10k.ckpt / acid.ckpt, or this project's); default: the bundled encoder."""
    image_shape: tuple[int, int] = (256, 256)
    """Evaluation resolution (the published protocol: 256 x 256)."""
    lpips: Literal["vgg", "alex", "none"] = "vgg"
    """LPIPS network (the paper reports VGG); skipped with a warning if its weights are not on disk."""
    limit: int | None = None
    """Evaluate at most this many new scenes in this run (resume later for the rest)."""
    device: str = "cpu"
    """Where the encoder and renderer run."""

    def main(self) -> None:
        from pixelsplat_ns.errors import PixelSplatInputError
        from pixelsplat_ns.evaluation import format_summary, load_evaluation_index, run_evaluation
        from pixelsplat_ns.weights import BUNDLED_ENCODER, load_encoder

        console = Console()
        bar = progress_bar(console)
        task: list = []

        def progress(key: str, done: int, total: int) -> None:
            if not task:
                task.append(bar.add_task("evaluating scenes", total=total))
            bar.update(task[0], completed=done, total=total, description=f"evaluated {key}")

        try:
            load_evaluation_index(self.index)  # fail on a bad index before loading weights
            encoder = load_encoder("tiny", self.encoder_checkpoint, device=self.device, for_inference=True)
            name = str((self.encoder_checkpoint or BUNDLED_ENCODER).resolve())
            with bar:
                results = run_evaluation(
                    encoder, self.data, self.index, self.output, name, tuple(self.image_shape),
                    lpips_net=None if self.lpips == "none" else self.lpips, limit=self.limit, device=self.device,
                    progress=progress,
                )  # fmt: skip
        except (PixelSplatInputError, FileNotFoundError) as error:
            console.print(f"[bold red]error:[/bold red] {error}")
            raise SystemExit(2) from None
        console.print(format_summary(results.summary()))
        console.print(f"results: {self.output}")
