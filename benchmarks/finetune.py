"""Per-scene fine-tuning: does starting from the encoder's Gaussians beat optimisation from
scratch, with the same optimiser, loss and step budget?

For each scene, a window of 9 consecutive frames: frames 2 and 6 are the encoder's context
pair, frames 3 and 5 (between them, as in pixelSplat's evaluation) are held out for testing,
and the other 7 are the training views. Each start is fine-tuned on the training views
(``pixelsplat_ns.finetune``: splatfacto's loss and rates, one view per step, no densification):

* encoder: the bundled encoder's prediction from the context pair;
* encoder, every training pair: its predictions from each pair of consecutive training
  frames, merged (``splats_from_pairs``; 6x as many Gaussians);
* pixels, random depth: one Gaussian per context pixel with its colour, at a random depth
  between the near and far planes (everything the encoder gives except learned depth/shape);
* random cube: splatfacto's start without points (uniform in a cube around the cameras),
  with as many Gaussians as the single-pair start, and as the every-pair start.

Printed: mean test PSNR (dB) after each number of steps in ``--report``.

    .venv/bin/python benchmarks/finetune.py
    .venv/bin/python benchmarks/finetune.py --size 128 128 --steps 2000 --report 0 200 500 1000 2000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from pixelsplat_ns.data import ExampleConfig, example_from_indices, open_scene_source
from pixelsplat_ns.finetune import (
    FitConfig,
    fit_splats,
    pixel_splats,
    random_splats,
    render_splats,
    splats_from_gaussians,
    splats_from_pairs,
)
from pixelsplat_ns.metrics import psnr
from pixelsplat_ns.weights import BUNDLED_ENCODER, load_encoder

HELD_OUT = ("llff-fern", "strecha-entry-p10", "strecha-castle-p19", "strecha-castle-p30")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TEST, TRAIN, CONTEXT = (3, 5), (0, 1, 2, 4, 6, 7, 8), (2, 6)


def load_scene(folder: Path):
    source = open_scene_source(folder)
    return next(iter(source.scenes(source.shards()[0])))


def scene_views(scene, shape: tuple[int, int]) -> dict:
    """Context, training and test views of the window in the middle of the scene."""
    if len(scene) < 9:
        raise SystemExit(f"{scene.key} has {len(scene)} frames; the benchmark needs 9")
    start = (len(scene) - 9) // 2
    config = ExampleConfig(image_shape=shape)
    context = torch.tensor(CONTEXT) + start
    train = example_from_indices(scene, context, torch.tensor(TRAIN) + start, config)
    test = example_from_indices(scene, context, torch.tensor(TEST) + start, config)
    return {"context": train["context"], "train": train["target"], "test": test["target"], "start": start}


def starts(scene, views: dict, encoder, shape: tuple[int, int]) -> dict:
    c = views["context"]
    with torch.inference_mode():
        inputs = [c[name][None] for name in ("image", "extrinsics", "intrinsics", "near", "far")]
        predicted = encoder(*inputs, deterministic=True).gaussians
    encoded = splats_from_gaussians(predicted)
    frames = [views["start"] + i for i in TRAIN]
    every_pair = splats_from_pairs(
        encoder, scene, list(zip(frames[:-1], frames[1:])), tuple(views["start"] + i for i in CONTEXT),
        ExampleConfig(image_shape=shape),
    )  # fmt: skip
    cameras = torch.cat((c["extrinsics"], views["train"]["extrinsics"]))
    degree = encoded.sh_degree
    return {
        f"encoder ({len(encoded):,})": encoded,
        f"encoder, every training pair ({len(every_pair):,})": every_pair,
        f"pixels, random depth ({len(encoded):,})": pixel_splats(
            c["image"], c["extrinsics"], c["intrinsics"], c["near"], c["far"], sh_degree=degree
        ),
        f"random cube ({len(encoded):,})": random_splats(len(encoded), cameras, sh_degree=degree),
        f"random cube ({len(every_pair):,})": random_splats(len(every_pair), cameras, sh_degree=degree),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=list(HELD_OUT), help=f"scene folders under {DATA}")
    parser.add_argument("--size", type=int, nargs=2, default=(64, 64), metavar=("H", "W"))
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--report", type=int, nargs="+", default=(0, 100, 300, 1000), help="steps to score at")
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_ENCODER)
    parser.add_argument("--lr-means", type=float, default=FitConfig.lr_means, help="position rate per unit of camera extent")
    args = parser.parse_args()
    torch.set_num_threads(2)
    report = sorted({s for s in args.report if s <= args.steps}) or [args.steps]
    shape = tuple(args.size)
    encoder = load_encoder("tiny", args.checkpoint)

    scores: dict[str, dict[int, list[float]]] = {}
    seconds: dict[str, float] = {}
    for name in args.scenes:
        scene = load_scene(DATA / name)
        views = scene_views(scene, shape)
        test, train = views["test"], views["train"]
        truth = test["image"].permute(0, 2, 3, 1)
        for method, start in starts(scene, views, encoder, shape).items():
            per_step = scores.setdefault(method, {step: [] for step in report})

            def score(step: int, splats, per_step=per_step, test=test, truth=truth) -> None:
                if step in per_step:
                    rendered = render_splats(splats, test["extrinsics"], test["intrinsics"], shape).clamp(0, 1)
                    per_step[step] += [float(psnr(rendered[i], truth[i])) for i in range(len(truth))]

            began = time.perf_counter()
            fit_splats(start, train["image"], train["extrinsics"], train["intrinsics"], FitConfig(steps=args.steps, lr_means=args.lr_means), score)
            seconds[method] = seconds.get(method, 0.0) + time.perf_counter() - began
        last = {m: v[report[-1]][-len(TEST):] for m, v in scores.items()}
        print(f"{name}, {report[-1]} steps: " + ", ".join(f"{m} {sum(v) / len(v):.2f}" for m, v in last.items()), flush=True)

    table = Table(title=f"test PSNR (dB) after fine-tuning, {len(args.scenes)} scenes x {len(TEST)} held-out views, {shape[0]}x{shape[1]}")
    table.add_column("start")
    for step in report:
        table.add_column(f"{step} steps", justify="right")
    table.add_column("seconds", justify="right")
    for method, per_step in scores.items():
        table.add_row(method, *(f"{sum(v) / len(v):.2f}" for v in per_step.values()), f"{seconds[method]:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
