"""Feed-forward quality on held-out scenes, measured the way a user runs it.

For every held-out scene (default: the real scenes the bundled encoder never trains on)
and every pair of frames (i, i + gap), a nerfstudio scene is cut with the pair as its
training images and the frames between them as its eval split; then, as a user would:

* ``ns-train pixelsplat`` with its defaults (0 iterations: feed-forward), once per mode:
  ``--pipeline.model.gaussian-resolution encoder`` and ``native``, and the encoder with
  untrained (seeded random) weights; mode ``wide-baseline``: ``ns-train wide-baseline`` with its
  defaults (targets only: it has no Gaussians, and every pixel costs a network evaluation);
* the run is loaded back as ``ns-render dataset`` / ``ns-eval`` load it (``eval_setup``) and
  renders the eval frames (targets) and the two context cameras at the images' own size.

Printed per scene and overall: PSNR/SSIM (pixelSplat's SSIM: 11x11 Gaussian window, sigma
1.5) on the targets, PSNR at the context cameras against the context photos, PSNR of one view's
Gaussians alone at the other context camera (cross-view: whether the two views' depths agree),
and the same for copying the context photo nearest to the target camera (the baseline to beat).

    .venv/bin/python benchmarks/feedforward.py
    .venv/bin/python benchmarks/feedforward.py --modes encoder native --scenes llff-fern --stride 4
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import io
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from pixelsplat_ns.cli.progress import progress_bar
from pixelsplat_ns.metrics import psnr, ssim
from pixelsplat_ns.nerfstudio.context import to_float_image

# Real scenes the bundled encoder never trains on (configs/train_bundled_encoder.sh), the demo's among them.
HELD_OUT = ("llff-fern", "strecha-entry-p10", "strecha-castle-p19", "strecha-castle-p30", "pavilion-chair-midday")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def cut_pair(source: Path, first: int, gap: int, destination: Path) -> Path:
    """A nerfstudio scene of frames first..first+gap: the two ends as training images (the
    context pair), the frames between as the eval split (nerfstudio's filename split)."""
    meta = json.loads((source / "transforms.json").read_text())
    (destination / "images").mkdir(parents=True)
    frames = []
    for i in range(first, first + gap + 1):
        frame = dict(meta["frames"][i])
        name = f"frame_{i:05d}_{'train' if i in (first, first + gap) else 'eval'}{Path(frame['file_path']).suffix}"
        os.symlink((source / frame["file_path"]).resolve(), destination / "images" / name)
        frame["file_path"] = f"images/{name}"
        frames.append(frame)
    (destination / "transforms.json").write_text(
        json.dumps({**{k: v for k, v in meta.items() if k != "frames"}, "frames": frames})
    )
    return destination


def model_overrides(items: list[str]) -> dict[str, object]:
    """``FIELD=VALUE`` flags as model config overrides: Python literals (numbers, True/False/None,
    tuples) as such, anything else as a word (a Literal choice)."""
    from dataclasses import fields

    from pixelsplat_ns.nerfstudio.model import PixelSplatModelConfig

    names = {f.name for f in fields(PixelSplatModelConfig)}
    flags: dict[str, object] = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in names or not value:
            raise SystemExit(f"--set {item!r}: expected FIELD=VALUE with a field of PixelSplatModelConfig")
        try:
            flags[name] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            flags[name] = value
    return flags


def score(rendered: torch.Tensor, truth: torch.Tensor) -> tuple[float, float]:
    """(PSNR, SSIM) of two [h, w, 3] images in [0, 1]."""
    return float(psnr(rendered.clamp(0, 1), truth)), float(ssim(rendered.clamp(0, 1), truth))


@torch.no_grad()
def run_pair(
    scene: Path, mode: str, output_dir: Path, checkpoint: Path | None, flags: dict[str, object]
) -> dict[str, list[tuple[float, float]]]:
    """ns-train pixelsplat (defaults, feed-forward) then the ns-render/ns-eval load path."""
    from nerfstudio.scripts.train import main as train_main
    from nerfstudio.utils.eval_utils import eval_setup

    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config, wide_baseline_trainer_config

    wide = mode == "wide-baseline"  # the second method (its bundled small network), on the same pairs
    config = wide_baseline_trainer_config() if wide else pixelsplat_trainer_config()
    config.data = scene
    config.output_dir = output_dir
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    if not wide:
        config.pipeline.model.gaussian_resolution = "native" if mode == "native" else "encoder"
        config.pipeline.model.untrained = mode == "untrained"  # the same architecture with seeded random weights
        config.pipeline.model.encoder_checkpoint = checkpoint
        for name, value in flags.items():
            setattr(config.pipeline.model, name, value)
    config.set_timestamp()
    with contextlib.redirect_stdout(io.StringIO()):
        train_main(config)
        _, pipeline, _, _ = eval_setup(config.get_base_dir() / "config.yml", test_mode="test")
    model, data = pipeline.model, pipeline.datamanager
    model.eval()
    scores: dict[str, list[tuple[float, float]]] = {"target": [], "context": [], "copy": []}
    context = data.context_views()
    for index in range(len(data.eval_dataset)):
        camera = data.eval_dataset.cameras[index : index + 1]
        truth = to_float_image(data.cached_eval[index]["image"])[..., :3]
        scores["target"].append(score(model.get_outputs_for_camera(camera)["rgb"].cpu(), truth))
        nearest = (context.c2w[:, :3, 3] - camera.camera_to_worlds[0, :3, 3]).norm(dim=-1).argmin()
        scores["copy"].append(score(context.images[nearest], truth))
    if wide:  # no Gaussians, and a context camera costs as much to render as a target
        return scores
    scores["cross"] = []
    everything = {name: value.detach().clone() for name, value in model.gauss_params.items()}
    for view, index in enumerate(data.context_indices()):
        camera = data.train_dataset.cameras[index : index + 1]
        truth = to_float_image(data.cached_train[index]["image"])[..., :3]
        scores["context"].append(score(model.get_outputs_for_camera(camera)["rgb"].cpu(), truth))
        # Depth consistency: the other view's Gaussians alone, seen from this context camera.
        others = model.gaussian_pixels[:, 0] != view
        for name, value in everything.items():
            model.gauss_params[name] = torch.nn.Parameter(value[others])
        scores["cross"].append(score(model.get_outputs_for_camera(camera)["rgb"].cpu(), truth))
        for name, value in everything.items():
            model.gauss_params[name] = torch.nn.Parameter(value)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=list(HELD_OUT), help=f"scene folders under {DATA}")
    parser.add_argument("--gap", type=int, default=3, help="context pair (i, i + gap), targets between")
    parser.add_argument("--stride", type=int, default=2, help="step between consecutive pairs' first frames")
    parser.add_argument("--modes", nargs="+", default=["encoder", "native", "untrained"],
                        choices=["encoder", "native", "untrained", "wide-baseline"],
                        help="encoder / native: --pipeline.model.gaussian-resolution; untrained: random weights; "
                        "wide-baseline: ns-train wide-baseline (its bundled network)")  # fmt: skip
    parser.add_argument("--encoder-checkpoint", type=Path, default=None, help="default: the bundled encoder")
    parser.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                        help="model config overrides for every mode, e.g. encoder_long_side=160")  # fmt: skip
    args = parser.parse_args()
    flags = model_overrides(args.set)
    torch.set_num_threads(2)

    console = Console(width=200)
    columns = ["scene", "targets"]
    for mode in args.modes:
        columns += [f"{mode}: target PSNR", f"{mode}: SSIM", f"{mode}: at context", f"{mode}: cross-view"]
    columns += ["copy nearest: PSNR", "copy nearest: SSIM"]
    table = Table(
        title=f"feed-forward through ns-train/ns-render, native resolution, pairs (i, i+{args.gap}), targets between"
    )
    for column in columns:
        table.add_column(column, justify="right")
    everything: dict[str, list[tuple[float, float]]] = {}
    started = time.perf_counter()
    frames_of = {name: len(json.loads((DATA / name / "transforms.json").read_text())["frames"]) for name in args.scenes}
    pairs = sum(len(range(0, frames - args.gap, args.stride)) for frames in frames_of.values())
    progress = progress_bar(console)
    task = progress.add_task("pairs", total=pairs)
    with tempfile.TemporaryDirectory(prefix="pixelsplat-feedforward-") as work, progress:
        for name in args.scenes:
            source = DATA / name
            frames = frames_of[name]
            per_scene: dict[str, list[tuple[float, float]]] = {}
            for first in range(0, frames - args.gap, args.stride):
                scene = cut_pair(source, first, args.gap, Path(work) / f"{name}-{first}")
                for mode in args.modes:
                    scores = run_pair(scene, mode, Path(work) / "outputs", args.encoder_checkpoint, flags)
                    for key, values in scores.items():
                        if key == "copy" and mode != args.modes[0]:
                            continue
                        label = key if key == "copy" else f"{mode}:{key}"
                        per_scene.setdefault(label, []).extend(values)
                shutil.rmtree(Path(work) / "outputs", ignore_errors=True)
                progress.update(task, advance=1, description=f"{name} ({first}, {first + args.gap})")
            for key, values in per_scene.items():
                everything.setdefault(key, []).extend(values)
            table.add_row(name, *_row(per_scene, args.modes))
    table.add_row("all", *_row(everything, args.modes), style="bold")
    console.print(table)
    console.print(f"encoder: {args.encoder_checkpoint or 'bundled'}; {time.perf_counter() - started:.0f} s")


# (score, metric, digits) per mode: target PSNR and SSIM, PSNR at the context cameras, and PSNR
# of the other view's Gaussians alone at each context camera (how well the two views' depths agree).
TABLE_CELLS = (("target", 0, 2), ("target", 1, 3), ("context", 0, 2), ("cross", 0, 2))


def _row(scores: dict[str, list[tuple[float, float]]], modes: list[str]) -> list[str]:
    def mean(key: str, metric: int) -> float:
        values = [value[metric] for value in scores[key]]
        return sum(values) / max(1, len(values))

    row = [str(len(scores["copy"]))]
    for mode in modes:
        row += [
            f"{mean(f'{mode}:{key}', metric):.{digits}f}" if scores.get(f"{mode}:{key}") else "-"
            for key, metric, digits in TABLE_CELLS
        ]
    return [*row, f"{mean('copy', 0):.2f}", f"{mean('copy', 1):.3f}"]


if __name__ == "__main__":
    main()
