"""Cost of native-resolution Gaussians on CPU: a 2 x (960 x 540) context pair.

The demo scene's frames are upscaled to 960 x 540 (intrinsics scaled to match) and cut
into a nerfstudio scene; then, in one process per --gaussian-resolution:

* prediction: the encoder plus the Gaussians users meet (``PixelSplatModel.predict_gaussians``);
* first render: the first context camera at 960 x 540 (``get_outputs_for_camera``);
* viewer frame: median of repeated renders at 960 px wide from a camera between the pair,
  what ``ns-viewer`` does once the camera stops;
* peak RSS of the process (includes about 0.6 GB for importing PyTorch and nerfstudio).

    .venv/bin/python benchmarks/native_cost.py
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from pixelsplat_ns.cli.demo import DEMO_SCENE


def make_scene(destination: Path, size: tuple[int, int] = (960, 540)) -> Path:
    """The demo scene with every frame upscaled to ``size`` (width, height)."""
    meta = json.loads((DEMO_SCENE / "transforms.json").read_text())
    (destination / "images").mkdir(parents=True)
    sx, sy = size[0] / meta["w"], size[1] / meta["h"]
    for frame in meta["frames"]:
        Image.open(DEMO_SCENE / frame["file_path"]).resize(size, Image.BICUBIC).save(destination / frame["file_path"])
    meta.update(
        w=size[0], h=size[1], fl_x=meta["fl_x"] * sx, fl_y=meta["fl_y"] * sy, cx=meta["cx"] * sx, cy=meta["cy"] * sy
    )
    (destination / "transforms.json").write_text(json.dumps(meta))
    return destination


def measure(scene: Path, mode: str, repeats: int) -> dict:
    from nerfstudio.utils.rich_utils import CONSOLE

    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config

    CONSOLE.quiet = True
    config = pixelsplat_trainer_config()
    config.pipeline.datamanager.data = scene
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    config.pipeline.datamanager.context_views = ("frame_00040_train", "frame_00045_train")
    config.pipeline.model.gaussian_resolution = mode
    pipeline = config.pipeline.setup(device="cpu", test_mode="test")  # test mode: nothing predicted yet
    model, data = pipeline.model, pipeline.datamanager
    model.eval()
    started = time.perf_counter()
    model.predict_gaussians()
    prediction = time.perf_counter() - started
    with torch.no_grad():
        camera = data.train_dataset.cameras[data.context_indices()[0] : data.context_indices()[0] + 1]
        started = time.perf_counter()
        model.get_outputs_for_camera(camera)
        first = time.perf_counter() - started
        between = data.eval_dataset.cameras[0:1]
        frames = []
        for _ in range(repeats):
            started = time.perf_counter()
            model.get_outputs_for_camera(between)
            frames.append(time.perf_counter() - started)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    return {"mode": mode, "gaussians": model.num_points, "prediction": prediction, "first": first,
            "frame": statistics.median(frames), "peak_gb": peak}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", nargs="+", default=["native", "encoder"], choices=["native", "encoder"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("SCENE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.child:
        print(json.dumps(measure(Path(args.child[0]), args.child[1], args.repeats)))
        return
    with tempfile.TemporaryDirectory(prefix="pixelsplat-cost-") as work:
        scene = make_scene(Path(work) / "scene")
        print(
            f"{'mode':8} {'Gaussians':>10} {'prediction':>11} {'first render':>13} {'viewer frame':>13} {'peak RSS':>9}"
        )
        for mode in args.modes:  # one process each, so peak memory is the mode's own
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(scene), mode, "--repeats", str(args.repeats)],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            r = json.loads(out.stdout.strip().splitlines()[-1])
            print(
                f"{r['mode']:8} {r['gaussians']:>10,} {r['prediction']:>10.2f}s {r['first']:>12.2f}s "
                f"{r['frame']:>12.2f}s {r['peak_gb']:>8.2f}G"
            )


if __name__ == "__main__":
    main()
