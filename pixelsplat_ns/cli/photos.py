"""``pixelsplat-ns photos A B``: two photos in, a 3D scene out.

Finds the intrinsics (EXIF, the user's value or a default field of view, refined from the
matches when guessed) and the relative pose of the two photos (``pixelsplat_ns.photos``), writes
them as a nerfstudio scene (``DIR/scene``), predicts the Gaussians with ``ns-train pixelsplat``
(feed-forward), and writes ``DIR/splat.ply`` and a fly-through video ``DIR/path.mp4``.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro


@dataclass
class Photos:
    """Two photos in, a 3D scene out: pose them, predict the Gaussians, export a PLY and a video."""

    image_a: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="IMAGE_A")]
    """The first photo (its camera is the scene's origin)."""
    image_b: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="IMAGE_B")]
    """The second photo, of the same subject from a little to the side."""
    output_dir: Path = Path("outputs/photos")
    """Where scene/, the run, splat.ply and path.mp4 go."""
    focal_px: float | None = None
    """Focal length in pixels (when the photos carry no EXIF focal length)."""
    fov_deg: float | None = None
    """Horizontal field of view in degrees (when the photos carry no EXIF focal length)."""
    encoder: Literal["tiny", "official"] = "tiny"
    """Encoder architecture when no checkpoint is given."""
    encoder_checkpoint: Path | None = None
    """Trained encoder weights (official re10k.ckpt / acid.ckpt, or this project's)."""
    video_frames: int = 48
    """Frames of path.mp4 (from a quarter baseline before A to a quarter after B)."""
    video_long_side: int = 640
    """Long side of the video frames, in pixels (at most the photos' own)."""

    def check_inputs(self) -> None:
        from pixelsplat_ns.errors import PixelSplatInputError
        from pixelsplat_ns.official import read_encoder_weights

        if self.focal_px is not None and self.fov_deg is not None:
            raise PixelSplatInputError("give --focal-px or --fov-deg, not both")
        if self.encoder_checkpoint is not None:
            read_encoder_weights(self.encoder_checkpoint)
        if self.video_frames < 2:
            raise PixelSplatInputError(f"video-frames must be at least 2, got {self.video_frames}")
        if self.video_long_side < 16:
            raise PixelSplatInputError(f"video-long-side must be at least 16 pixels, got {self.video_long_side}")

    def main(self) -> None:
        from nerfstudio.utils.rich_utils import CONSOLE

        from pixelsplat_ns.errors import PixelSplatInputError, PixelSplatOutputError
        from pixelsplat_ns.photos import estimate_pair_poses

        try:
            self.check_inputs()
            poses = estimate_pair_poses(self.image_a, self.image_b, focal_px=self.focal_px, fov_deg=self.fov_deg)
        except (PixelSplatInputError, FileNotFoundError) as error:
            CONSOLE.print(f"[bold red]pixelsplat: error: {error}")
            raise SystemExit(2) from None
        for note in poses.notes:
            CONSOLE.print(f"pixelsplat: {note}")
        width = poses.image_size[0]
        focal_a, focal_b = poses.focal_px
        focals = f"{focal_a:.1f} px" if abs(focal_a - focal_b) < 1e-6 else f"{focal_a:.1f} px (A), {focal_b:.1f} px (B)"
        CONSOLE.print(
            f"pixelsplat: intrinsics: focal {focals} ({poses.fov_deg[0]:.1f} degrees horizontal field of view at "
            f"{width}x{poses.image_size[1]}), principal point at the image centre; from {poses.focal_source}"
        )
        CONSOLE.print(
            f"pixelsplat: relative pose from {poses.num_inliers} of {poses.num_matches} matches "
            f"(median Sampson error {poses.median_sampson_px:.2f} px, median triangulation angle "
            f"{poses.median_parallax_deg:.1f} degrees)"
        )
        try:
            self.run(poses)
        except PixelSplatInputError as error:
            CONSOLE.print(f"[bold red]pixelsplat: error: {error}")
            raise SystemExit(2) from None
        except PixelSplatOutputError as error:
            CONSOLE.print(f"[bold red]pixelsplat: error: {error}")
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            CONSOLE.print(f"pixelsplat: interrupted; {self.output_dir} is as it was")
            raise SystemExit(130) from None

    def run(self, poses) -> None:
        """Write the scene, predict, export (poses already estimated)."""
        import os

        from nerfstudio.scripts.train import main as train_main
        from nerfstudio.utils.eval_utils import eval_setup
        from nerfstudio.utils.rich_utils import CONSOLE

        from pixelsplat_ns.export import export_splat_ply
        from pixelsplat_ns.io import output_errors
        from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config
        from pixelsplat_ns.nerfstudio.trainer import close_event_writers
        from pixelsplat_ns.photos.scene import frame_names, write_scene_folder

        output_dir = self.output_dir
        scene_dir = output_dir / "scene"
        created = [folder for folder in (output_dir, *output_dir.parents) if not folder.exists()]
        names = frame_names(self.image_a, self.image_b)
        config = pixelsplat_trainer_config()
        config.data = scene_dir
        config.output_dir = output_dir / "runs"
        config.experiment_name = "scene"
        config.max_num_iterations = 0
        config.vis = "tensorboard"
        config.viewer.quit_on_train_completion = True
        config.pipeline.datamanager.context_views = tuple(Path(name).stem for name in names)
        config.pipeline.model.encoder = self.encoder
        config.pipeline.model.encoder_checkpoint = self.encoder_checkpoint
        config.set_timestamp()
        run_dir = config.get_base_dir()
        run_created = [folder for folder in (run_dir, *run_dir.parents) if not folder.exists()]
        ply_path, video_path = output_dir / "splat.ply", output_dir / "path.mp4"
        # The PLY and the video are written here and renamed into place once everything has
        # succeeded; a previous scene/ waits here too, to be put back if this run fails.
        staging: Path | None = None
        previous: Path | None = None
        try:
            with output_errors(output_dir):
                output_dir.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(prefix=".photos.", dir=output_dir))
                if scene_dir.exists():
                    previous = staging / "previous-scene"
                    os.replace(scene_dir, previous)
            write_scene_folder(poses, scene_dir, names)
            train_main(config)
            config_path = run_dir / "config.yml"
            _, pipeline, _, _ = eval_setup(config_path, test_mode="test")
            exported = export_splat_ply(pipeline.model.gauss_params, staging / ply_path.name)
            write_path_video(pipeline, staging / video_path.name, self.video_frames, self.video_long_side)
            with output_errors(output_dir):
                for path in (ply_path, video_path):
                    os.replace(staging / path.name, path)
        except BaseException:  # nothing half-written: DIR goes back to what it was
            if previous is not None and previous.exists():
                shutil.rmtree(scene_dir, ignore_errors=True)
                os.replace(previous, scene_dir)
            elif staging is not None:  # this run made scene/ (none was there before)
                shutil.rmtree(scene_dir, ignore_errors=True)
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
            if run_dir in run_created:
                close_event_writers()  # the run's tensorboard file is still open
                shutil.rmtree(run_dir, ignore_errors=True)
            for folder in [*run_created[1:], *created]:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()
            raise
        shutil.rmtree(staging, ignore_errors=True)
        CONSOLE.print(f"[bold green]pixelsplat photos done[/]: {pipeline.model.num_points:,} Gaussians")
        CONSOLE.print(f"  scene (nerfstudio):        {scene_dir}")
        CONSOLE.print(f"  run (config + checkpoint): {run_dir}")
        CONSOLE.print(f"  Gaussians (3DGS PLY):      {ply_path} ({exported:,} Gaussians)")
        CONSOLE.print(f"  fly-through video:         {video_path} ({self.video_frames} frames)")
        CONSOLE.print(f"  look at it:                ns-viewer --load-config {config_path}")
        CONSOLE.print(f"  or predict again:          ns-train pixelsplat --data {scene_dir}")


def write_path_video(pipeline, path: Path, frames: int, long_side: int, fps: int = 24) -> None:
    """Render the model along the path from the first context camera to the second (t from -0.25
    to 1.25: positions linear, rotations slerped) and write an MP4 (OpenCV, mp4v), atomically."""
    import cv2
    import numpy as np
    import torch
    from nerfstudio.cameras.cameras import Cameras, CameraType
    from nerfstudio.utils.rich_utils import CONSOLE

    from pixelsplat_ns.cli.progress import progress_bar
    from pixelsplat_ns.errors import PixelSplatOutputError
    from pixelsplat_ns.io import atomic_path, output_errors
    from pixelsplat_ns.photos.scene import interpolate_c2w

    datamanager = pipeline.datamanager
    first, second = datamanager.context_indices()[:2]
    cameras = datamanager.train_dataset.cameras
    c2w = cameras.camera_to_worlds.cpu().double().numpy()
    poses = interpolate_c2w(c2w[first], c2w[second], np.linspace(-0.25, 1.25, frames))
    width, height = int(cameras.width[first]), int(cameras.height[first])
    factor = min(1.0, long_side / max(width, height))
    out_w, out_h = max(2, 2 * round(width * factor / 2)), max(2, 2 * round(height * factor / 2))
    sx, sy = out_w / width, out_h / height
    device = pipeline.model.device
    path_cameras = Cameras(
        camera_to_worlds=torch.from_numpy(poses).float(),
        fx=float(cameras.fx[first]) * sx,
        fy=float(cameras.fy[first]) * sy,
        cx=float(cameras.cx[first]) * sx,
        cy=float(cameras.cy[first]) * sy,
        width=out_w,
        height=out_h,
        camera_type=CameraType.PERSPECTIVE,
    ).to(device)
    with output_errors(path), atomic_path(path) as temporary:
        writer = cv2.VideoWriter(str(temporary), cv2.VideoWriter_fourcc(*"mp4v"), fps, (out_w, out_h))
        if not writer.isOpened():
            raise PixelSplatOutputError(f"cannot write {path}: OpenCV has no MP4 (mp4v) encoder here")
        progress = progress_bar(CONSOLE)
        try:
            with torch.no_grad(), progress:
                task = progress.add_task("rendering path.mp4", total=frames)
                for i in range(frames):
                    rgb = pipeline.model.get_outputs_for_camera(path_cameras[i : i + 1])["rgb"]
                    frame = (rgb.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)
                    writer.write(np.ascontiguousarray(frame[..., ::-1]))
                    progress.advance(task)
        finally:
            writer.release()
        if not temporary.is_file() or temporary.stat().st_size == 0:
            raise PixelSplatOutputError(f"cannot write {path}: OpenCV wrote an empty video")
