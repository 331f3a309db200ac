"""Per-scene fine-tuning on the path users take: does the prediction start beat a random start?

For every held-out scene, a window of 8 consecutive frames in its middle is cut into a
nerfstudio scene: frames 2 and 5 of the window are the context pair, frames 3 and 4 (between
them) the test views (nerfstudio's filename eval split), the other six the training views.
Then, for each start, as a user would:

* ``ns-train pixelsplat --pipeline.model.initialization prediction`` (the encoder's Gaussians),
  ``... random`` (splatfacto's random cube) and, with ``--starts``, ``... points`` (the prediction's
  points seeding splatfacto), with every other setting at its default,
  for the largest ``--report`` step's iterations, keeping a checkpoint at every reported step;
* each checkpoint loaded back as ``ns-eval``/``ns-render`` load it (``eval_setup``), the test
  views rendered at the images' own resolution and scored: PSNR and pixelSplat's SSIM
  (11x11 Gaussian window, sigma 1.5). Step 0 is a run with 0 iterations (the start itself).

Printed: per scene and start, test PSNR/SSIM after each reported step and the wall time to
reach it (training from the command's start, prediction included; these machines are shared:
compare the two starts of one run, not across runs).

    .venv/bin/python benchmarks/finetune.py
    .venv/bin/python benchmarks/finetune.py --scenes strecha-castle-p19 --report 0 100 300
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from feedforward import model_overrides  # benchmarks/ is the script's folder
from rich.console import Console
from rich.table import Table

from pixelsplat_ns.metrics import psnr, ssim
from pixelsplat_ns.nerfstudio.context import to_float_image

HELD_OUT = ("llff-fern", "strecha-entry-p10", "strecha-castle-p19", "strecha-castle-p30")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WINDOW, CONTEXT, TEST = 8, (2, 5), (3, 4)


def cut_window(source: Path, destination: Path) -> tuple[Path, tuple[str, str]]:
    """The 8-frame window in the middle of a scene as a nerfstudio scene (test frames named
    ``*_eval``), and the file names of its context pair."""
    meta = json.loads((source / "transforms.json").read_text())
    if len(meta["frames"]) < WINDOW:
        raise SystemExit(f"{source.name} has {len(meta['frames'])} frames; the benchmark needs {WINDOW}")
    first = (len(meta["frames"]) - WINDOW) // 2
    (destination / "images").mkdir(parents=True)
    frames, names = [], []
    for k in range(WINDOW):
        frame = dict(meta["frames"][first + k])
        name = f"frame_{first + k:05d}_{'eval' if k in TEST else 'train'}{Path(frame['file_path']).suffix}"
        os.symlink((source / frame["file_path"]).resolve(), destination / "images" / name)
        frame["file_path"] = f"images/{name}"
        frames.append(frame)
        if k in CONTEXT:
            names.append(name)
    (destination / "transforms.json").write_text(
        json.dumps({**{k: v for k, v in meta.items() if k != "frames"}, "frames": frames})
    )
    return destination, (names[0], names[1])


@torch.no_grad()
def test_scores(config_path: Path, step: int | None, image: Path | None = None) -> tuple[float, float]:
    """Mean test PSNR/SSIM of a run's checkpoint at ``step`` (None: its latest), loaded as ns-eval loads it;
    with ``image``, the test views written there too (a row per view: ground truth | render)."""
    from nerfstudio.utils.eval_utils import eval_setup

    def at_step(config):
        config.load_step = step
        return config

    with contextlib.redirect_stdout(io.StringIO()):
        _, pipeline, _, _ = eval_setup(config_path, test_mode="test", update_config_callback=at_step)
    model, data = pipeline.model, pipeline.datamanager
    model.eval()
    scores, rows = [], []
    for index in range(len(data.eval_dataset)):
        rendered = model.get_outputs_for_camera(data.eval_dataset.cameras[index : index + 1])["rgb"].cpu().clamp(0, 1)
        truth = to_float_image(data.cached_eval[index]["image"])[..., :3]
        scores.append((float(psnr(rendered, truth)), float(ssim(rendered, truth))))
        rows.append(torch.cat((truth, rendered), dim=1))
    if image is not None:
        from PIL import Image

        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((torch.cat(rows) * 255).round().byte().numpy()).save(image)
    return sum(s[0] for s in scores) / len(scores), sum(s[1] for s in scores) / len(scores)


def train(
    scene: Path,
    context: tuple[str, str],
    start: str,
    steps: int,
    save_after: list[int],
    output_dir: Path,
    flags: dict,
    rates: dict[str, float],
    gaussians_of: int | None = None,
) -> tuple[Path, float]:
    """``ns-train pixelsplat`` on the window (defaults but for the start), keeping a checkpoint
    after each number of iterations in ``save_after``, predicting the Gaussians ns-train picks for
    a run of ``gaussians_of`` iterations (default: ``steps``); (config path, start time)."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
    from nerfstudio.scripts.train import main as train_main

    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config
    from pixelsplat_ns.nerfstudio.model import PixelSplatModel
    from pixelsplat_ns.nerfstudio.trainer import close_event_writers

    config = pixelsplat_trainer_config()
    config.data = scene
    config.output_dir = output_dir
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.steps_per_save = 1 << 30  # checkpoints only where scored: nerfstudio's own fall on refinement steps
    config.save_only_latest_checkpoint = False
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    config.pipeline.datamanager.context_views = context
    config.pipeline.model.initialization = start  # type: ignore[assignment]
    for name, value in flags.items():
        setattr(config.pipeline.model, name, value)
    for group, rate in rates.items():
        config.optimizers[group]["optimizer"].lr = rate
    config.max_num_iterations = steps if gaussians_of is None else gaussians_of
    config.resolve_start()
    config.max_num_iterations = steps
    config.set_timestamp()
    config.timestamp = f"{config.timestamp}-{start}-{steps}"
    callbacks = PixelSplatModel.get_training_callbacks

    def with_checkpoints(model, attributes):
        # Saved after iteration index n - 1, i.e. after n updates (nerfstudio's step n is n + 1 updates,
        # taken right after splatfacto's refinement at multiples of refine-every).
        def save(step: int) -> None:
            if step + 1 in save_after:
                attributes.trainer.save_checkpoint(step)

        return [*callbacks(model, attributes), TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], save)]

    PixelSplatModel.get_training_callbacks = with_checkpoints  # type: ignore[method-assign]
    began = time.time()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            train_main(config)
    finally:
        PixelSplatModel.get_training_callbacks = callbacks  # type: ignore[method-assign]
    close_event_writers()  # else the next run writes this one's tensorboard file too
    return config.get_base_dir() / "config.yml", began


def run_start(
    scene: Path,
    context: tuple[str, str],
    start: str,
    report: list[int],
    work: Path,
    flags: dict,
    rates: dict[str, float],
    images: Path | None = None,
) -> dict[int, tuple[float, float, float]]:
    """{step: (PSNR, SSIM, wall seconds)} for one start; with ``images``, its test views at each step
    written to ``images/<scene>-<start>-<step>.png``."""

    def image(step: int) -> Path | None:
        return None if images is None else images / f"{scene.name}-{start}-{step}.png"

    results: dict[int, tuple[float, float, float]] = {}
    if 0 in report:
        # Step 0 scores the Gaussians fine-tuning starts from: ns-train picks them by the run's length.
        config_path, began = train(scene, context, start, 0, [], work, flags, rates, gaussians_of=max(report))
        took = time.time() - began
        results[0] = (*test_scores(config_path, None, image(0)), took)
    later = sorted(step for step in report if step > 0)
    if later:
        config_path, began = train(scene, context, start, later[-1], later, work, flags, rates)
        checkpoints = config_path.parent / "nerfstudio_models"
        for step in later:
            path = checkpoints / f"step-{step - 1:09d}.ckpt"
            results[step] = (*test_scores(config_path, step - 1, image(step)), path.stat().st_mtime - began)
    shutil.rmtree(work, ignore_errors=True)
    return results


def learning_rates(items: list[str]) -> dict[str, float]:
    """``GROUP=RATE`` flags as initial learning rates of ``ns-train pixelsplat``'s optimiser groups."""
    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config

    groups = pixelsplat_trainer_config().optimizers
    rates: dict[str, float] = {}
    for item in items:
        group, _, rate = item.partition("=")
        try:
            rates[group] = float(rate)
        except ValueError:
            rate = ""
        if group not in groups or not rate:
            raise SystemExit(f"--lr {item!r}: expected GROUP=RATE with GROUP one of {', '.join(groups)}")
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=list(HELD_OUT), help=f"scene folders under {DATA}")
    parser.add_argument("--report", type=int, nargs="+", default=[0, 100, 300, 1000, 2000], help="steps to score")
    parser.add_argument(
        "--starts", nargs="+", default=["prediction", "random"], choices=["prediction", "points", "random"]
    )
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="model config overrides for every start, e.g. gaussian_resolution=encoder")  # fmt: skip
    parser.add_argument("--lr", nargs="*", default=[], metavar="GROUP=RATE",
                        help="initial learning rate of an optimiser group for every start, e.g. means=1.6e-5")  # fmt: skip
    parser.add_argument("--images", type=Path, default=None, metavar="DIR",
                        help="write each start's test views at each reported step (ground truth | render) here")  # fmt: skip
    args = parser.parse_args()
    torch.set_num_threads(2)
    flags = model_overrides(args.set)
    rates = learning_rates(args.lr)

    console = Console(width=200)
    table = Table(title="fine-tuning through ns-train / ns-eval's loader, native resolution: test PSNR / SSIM (wall s)")
    table.add_column("scene")
    table.add_column("start")
    for step in args.report:
        table.add_column(f"{step} steps", justify="right")
    totals: dict[str, dict[int, list[tuple[float, float, float]]]] = {}
    with tempfile.TemporaryDirectory(prefix="pixelsplat-finetune-") as work:
        for name in args.scenes:
            scene, context = cut_window(DATA / name, Path(work) / name)
            for start in args.starts:
                results = run_start(
                    scene, context, start, args.report, Path(work) / "outputs", flags, rates, args.images
                )
                for step, value in results.items():
                    totals.setdefault(start, {}).setdefault(step, []).append(value)
                table.add_row(
                    name,
                    start,
                    *[f"{results[s][0]:.2f} / {results[s][1]:.3f} ({results[s][2]:.0f})" for s in args.report],
                )
                console.print(
                    f"{name} {start}: "
                    + ", ".join(f"{s}: {results[s][0]:.2f}/{results[s][1]:.3f}" for s in args.report)
                )
    for start, per_step in totals.items():
        cells = []
        for step in args.report:
            values = per_step[step]
            cells.append(
                " / ".join(f"{sum(v[i] for v in values) / len(values):.{d}f}" for i, d in ((0, 2), (1, 3)))
                + f" ({sum(v[2] for v in values) / len(values):.0f})"
            )
        table.add_row("mean", start, *cells, style="bold")
    console.print(table)


if __name__ == "__main__":
    main()
