"""``pixelsplat-ns demo``: the main job on the embedded demo scene, start to finish.

Predicts Gaussians from the two context views with ``ns-train pixelsplat`` (no
fine-tuning by default), renders the held-out views between them, scores them, exports
a 3DGS PLY and prints where everything is.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Literal

from rich.table import Table

DEMO_SCENE = Path(str(files("pixelsplat_ns") / "assets" / "demo" / "pavilion-chair-midday"))
DEMO_CONTEXT = ("frame_00040_train", "frame_00045_train")


@dataclass
class Demo:
    """Run pixelSplat on the embedded demo scene: predict, render held-out views, export."""

    output_dir: Path = Path("outputs/pixelsplat-demo")
    """Where the run, the renders and the PLY go."""
    encoder: Literal["tiny", "official"] = "tiny"
    """Encoder architecture when no checkpoint is given."""
    encoder_checkpoint: Path | None = None
    """Trained encoder weights (official re10k.ckpt / acid.ckpt, or this project's)."""
    gaussian_resolution: Literal["native", "encoder"] | None = None
    """native: one Gaussian per pixel of the photos (README "Sharp Gaussians"); encoder: pixelSplat's (one per
    encoder pixel). Default: as ns-train (native, or encoder when fine-tuning)."""
    max_num_iterations: int = 0
    """Fine-tuning iterations after the feed-forward prediction (0: pure feed-forward)."""
    data: Path = DEMO_SCENE
    """The scene (nerfstudio format, file names carrying _train / _eval)."""

    def check_inputs(self) -> None:
        """Fail before anything is written: the scene must be a nerfstudio folder and the
        checkpoint (when given) a readable encoder checkpoint."""
        from pixelsplat_ns.errors import PixelSplatInputError
        from pixelsplat_ns.official import read_encoder_weights

        if not (self.data / "transforms.json").is_file():
            raise PixelSplatInputError(
                f"{self.data} is not a nerfstudio scene: it has no transforms.json "
                "(a scene folder holds transforms.json and the images it lists, e.g. from ns-process-data)"
            )
        if self.encoder_checkpoint is not None:
            read_encoder_weights(self.encoder_checkpoint)  # names the file and the problem
        if self.max_num_iterations < 0:
            raise PixelSplatInputError(f"max_num_iterations must be 0 or more, got {self.max_num_iterations}")

    def main(self) -> None:
        from nerfstudio.utils.rich_utils import CONSOLE

        from pixelsplat_ns.errors import PixelSplatInputError, PixelSplatOutputError

        try:
            self.check_inputs()
        except (PixelSplatInputError, FileNotFoundError) as error:
            CONSOLE.print(f"[bold red]pixelsplat: error: {error}")
            raise SystemExit(2) from None
        try:
            self.run()
        except PixelSplatOutputError as error:  # full disk, read-only folder: the previous files stay whole
            CONSOLE.print(f"[bold red]pixelsplat: error: {error}")
            raise SystemExit(1) from None

    def run(self) -> None:
        """The demo itself (inputs already checked)."""
        import shutil

        import torch
        from nerfstudio.scripts.train import main as train_main
        from nerfstudio.utils.eval_utils import eval_setup
        from nerfstudio.utils.rich_utils import CONSOLE

        from pixelsplat_ns.export import export_splat_ply
        from pixelsplat_ns.io import save_image
        from pixelsplat_ns.metrics import psnr, ssim
        from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config

        config = pixelsplat_trainer_config()
        config.data = self.data
        config.output_dir = self.output_dir
        config.experiment_name = "demo"
        config.max_num_iterations = self.max_num_iterations
        config.vis = "tensorboard"
        config.viewer.quit_on_train_completion = True
        config.pipeline.datamanager.dataparser.eval_mode = "filename"
        config.pipeline.datamanager.context_views = DEMO_CONTEXT
        config.pipeline.model.encoder = self.encoder
        config.pipeline.model.encoder_checkpoint = self.encoder_checkpoint
        config.pipeline.model.gaussian_resolution = self.gaussian_resolution
        config.set_timestamp()
        run_dir = config.get_base_dir()
        created = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
        try:
            train_main(config)
        except BaseException:  # nothing half-written: the folders this attempt created go
            if run_dir in created and not any(run_dir.rglob("*.ckpt")):  # never a run that saved weights
                shutil.rmtree(run_dir, ignore_errors=True)
            for folder in created[1:]:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            raise
        config_path = run_dir / "config.yml"
        _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
        model, datamanager = pipeline.model, pipeline.datamanager
        renders_dir = run_dir / "renders"
        table = Table(title="pixelSplat demo: held-out views between the context pair")
        for column in ("view", "PSNR (dB)", "SSIM", "copy nearest: PSNR (dB)", "copy nearest: SSIM"):
            table.add_column(column)
        context = datamanager.context_views()
        context_centres = context.c2w[:, :3, 3]
        scores, rows = [], []
        for index, filename in enumerate(datamanager.eval_dataset.image_filenames):
            camera = datamanager.eval_dataset.cameras[index : index + 1]
            outputs = model.get_outputs_for_camera(camera)
            truth = datamanager.cached_eval[index]["image"].float()
            truth = truth / 255.0 if truth.max() > 1.5 else truth
            rgb = outputs["rgb"].cpu()
            nearest = (context_centres - camera.camera_to_worlds[0, :3, 3]).norm(dim=-1).argmin()
            score, structure = float(psnr(rgb, truth[..., :3])), float(ssim(rgb, truth[..., :3]))
            copy = context.images[nearest]
            baseline, baseline_structure = float(psnr(copy, truth[..., :3])), float(ssim(copy, truth[..., :3]))
            scores.append((score, structure))
            save_image(renders_dir / f"{filename.stem}_rgb.png", rgb.numpy())
            depth = outputs["depth"].cpu()[..., 0]
            depth = (depth - depth.min()) / (depth.max() - depth.min()).clamp_min(1e-8)
            depth = depth[..., None].expand(-1, -1, 3)
            save_image(renders_dir / f"{filename.stem}_depth.png", depth.numpy())
            rows.append(torch.cat((context.images[nearest], truth[..., :3], rgb, depth), dim=1))
            table.add_row(
                filename.name, f"{score:.2f}", f"{structure:.3f}", f"{baseline:.2f}", f"{baseline_structure:.3f}"
            )
        CONSOLE.print(table)
        comparison_path = run_dir / "comparison.png"
        save_image(comparison_path, torch.cat(rows, dim=0).numpy())

        ply_path = run_dir / "splat.ply"
        exported = export_splat_ply(model.gauss_params, ply_path)

        mean_psnr = sum(value for value, _ in scores) / len(scores)
        mean_ssim = sum(value for _, value in scores) / len(scores)
        CONSOLE.print(
            f"[bold green]pixelsplat demo done[/]: {model.num_points:,} Gaussians, "
            f"mean PSNR {mean_psnr:.2f} dB, SSIM {mean_ssim:.3f}"
        )
        CONSOLE.print(f"  run (config + checkpoint): {run_dir}")
        CONSOLE.print(f"  held-out renders:          {renders_dir}")
        CONSOLE.print(
            f"  comparison:                {comparison_path} (per held-out view: nearest context | truth | render | depth)"
        )
        CONSOLE.print(f"  Gaussians (3DGS PLY):      {ply_path} ({exported:,} Gaussians)")
        CONSOLE.print(f"  look at it:                ns-viewer --load-config {config_path}")
