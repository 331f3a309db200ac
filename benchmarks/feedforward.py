"""Feed-forward quality on held-out scenes: encoder vs copying the nearest context view.

For every held-out scene (default: the real scenes the bundled encoder never trains on)
and every pair of frames (i, i + gap), the encoder predicts Gaussians from the pair and
renders the frames strictly between them. Printed per scene and overall: PSNR of

* the encoder under test (default: the bundled one),
* the same architecture untrained (seeded random weights),
* copying the context image nearest to the target camera (the baseline to beat).

    .venv/bin/python benchmarks/feedforward.py
    .venv/bin/python benchmarks/feedforward.py --checkpoint outputs/.../encoder-step-000003000.ckpt --gap 3
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

from pixelsplat_ns.data import ExampleConfig, SkipExample, example_from_indices, open_scene_source
from pixelsplat_ns.encoder import PixelSplatEncoder
from pixelsplat_ns.evaluation import render_targets
from pixelsplat_ns.metrics import psnr
from pixelsplat_ns.weights import BUNDLED_ENCODER, load_encoder

HELD_OUT = ("llff-fern", "strecha-entry-p10", "strecha-castle-p19", "strecha-castle-p30")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@torch.no_grad()
def evaluate_scene(scene, encoders: dict, config: ExampleConfig, gap: int, stride: int) -> dict[str, list[float]]:
    scores: dict[str, list[float]] = {name: [] for name in (*encoders, "nearest context")}
    for first in range(0, len(scene) - gap, stride):
        context = torch.tensor([first, first + gap])
        targets = torch.arange(first + 1, first + gap)
        try:
            example = example_from_indices(scene, context, targets, config)
        except SkipExample:
            continue
        c, t = example["context"], example["target"]
        truth = t["image"].permute(0, 2, 3, 1)  # t h w 3
        for name, encoder in encoders.items():
            rendered = render_targets(encoder, example, config.image_shape)
            scores[name] += [float(psnr(rendered[i], truth[i])) for i in range(len(targets))]
        centres = c["extrinsics"][:, :3, 3]
        for i in range(len(targets)):
            nearest = (centres - t["extrinsics"][i, :3, 3]).norm(dim=-1).argmin()
            scores["nearest context"].append(float(psnr(c["image"][nearest].permute(1, 2, 0), truth[i])))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, default=BUNDLED_ENCODER, help="encoder under test")
    parser.add_argument("--scenes", nargs="+", default=list(HELD_OUT), help=f"scene folders under {DATA}")
    parser.add_argument("--gap", type=int, default=3, help="context pair (i, i + gap), targets between")
    parser.add_argument("--stride", type=int, default=2, help="step between consecutive pairs' first frames")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"))
    args = parser.parse_args()
    torch.set_num_threads(2)

    trained = load_encoder("tiny", args.checkpoint)
    torch.manual_seed(0)
    untrained = PixelSplatEncoder(trained.cfg).eval()  # same architecture, seeded random weights
    encoders = {"encoder": trained, "untrained": untrained}
    config = ExampleConfig(image_shape=tuple(args.size))

    console = Console()
    table = Table(title=f"feed-forward PSNR (dB), pairs (i, i+{args.gap}), targets between, {args.size[0]}x{args.size[1]}")
    for column in ("scene", "targets", "encoder", "untrained", "nearest context", "encoder - nearest"):
        table.add_column(column, justify="right")
    everything: dict[str, list[float]] = {}
    for name in args.scenes:
        scene = _load(DATA / name)
        scores = evaluate_scene(scene, encoders, config, args.gap, args.stride)
        for key, values in scores.items():
            everything.setdefault(key, []).extend(values)
        table.add_row(name, *_row(scores))
    table.add_row("all", *_row(everything), style="bold")
    console.print(table)
    console.print(f"encoder: {args.checkpoint}")


def _load(folder: Path):
    source = open_scene_source(folder)
    shard = source.shards()[0]
    return next(iter(source.scenes(shard)))


def _row(scores: dict[str, list[float]]) -> list[str]:
    mean = {key: sum(values) / max(1, len(values)) for key, values in scores.items()}
    return [
        str(len(scores["nearest context"])),
        f"{mean['encoder']:.2f}",
        f"{mean['untrained']:.2f}",
        f"{mean['nearest context']:.2f}",
        f"{mean['encoder'] - mean['nearest context']:+.2f}",
    ]


if __name__ == "__main__":
    main()
