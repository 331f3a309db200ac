"""pixelSplat and Du et al.'s wide-baseline renderer side by side: same data, same steps, same CPU.

Both small configurations (pixelSplat's ``tiny`` encoder, the ``small`` wide-baseline network)
are trained from scratch with their pretraining commands (``ns-train pixelsplat-pretrain`` /
``ns-train wide-baseline-pretrain``) on the same procedural scenes (``pixelsplat-ns
synthesize``), with the same example sampling, seed, batch size, resolution and number of
steps; then each is evaluated, in a process of its own (peak memory), with the official
protocol's scoring (``pixelsplat_ns.evaluation.protocol.score_views``: PSNR, SSIM with an 11x11
Gaussian window, LPIPS when its weights are on disk) on held-out real scenes that neither saw:
context frames i and i+3 in the middle of each scene, targets i+1 and i+2, all at
``--image-size`` squared. Timings: encoding the context pair, and rendering one target frame
(mean), on 2 CPU threads; the bundled models are scored the same way for reference.

Written: ``--output`` (JSON) and the Markdown table beside it (``.md``).

    .venv/bin/python benchmarks/compare_methods.py                       # 1000 steps each
    .venv/bin/python benchmarks/compare_methods.py --steps 100 --scenes llff-fern
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
HELD_OUT = ("llff-fern", "strecha-entry-p10", "strecha-castle-p19", "strecha-castle-p30")
METHODS = {"pixelsplat": "pixelsplat-pretrain", "wide-baseline": "wide-baseline-pretrain"}


def bin_path(name: str) -> str:
    return str(Path(sys.executable).with_name(name))


def training_scenes(work: Path, count: int) -> Path:
    """Procedural scenes with exact geometry, textured with scikit-image's sample photos."""
    scenes = work / "procedural"
    if scenes.is_dir():
        return scenes
    import skimage.data

    textures = work / "textures"
    textures.mkdir(parents=True, exist_ok=True)
    folder = Path(skimage.data.__file__).parent
    for name in ("astronaut", "brick", "chelsea", "coffee", "grass", "gravel", "rocket"):
        for path in folder.glob(f"{name}.*"):
            (textures / path.name).write_bytes(path.read_bytes())
    subprocess.run(
        [bin_path("pixelsplat-ns"), "synthesize", "--output-dir", str(scenes), "--num-scenes", str(count),
         "--frames", "24", "--image-size", "128", "128", "--textures", str(textures), "--seed", "0"],
        check=True,
    )  # fmt: skip
    return scenes


def train(method: str, scenes: Path, out: Path, steps: int, size: int) -> tuple[Path, float]:
    """One pretraining run; its last checkpoint (project format) and wall time."""
    command = METHODS[method]
    shared = [
        "--data", str(scenes), "--output-dir", str(out), "--experiment-name", method, "--timestamp", "run",
        "--max-num-iterations", str(steps), "--machine.seed", "0", "--vis", "tensorboard",
        "--steps-per-eval-batch", "1000000", "--steps-per-eval-image", "1000000",
        "--steps-per-eval-all-images", "1000000", "--steps-per-save", "1000000",
        "--pipeline.datamanager.examples.image-shape", str(size), str(size),
        "--pipeline.datamanager.examples.num-target-views", "2",
        "--pipeline.datamanager.examples.min-gap", "2", "--pipeline.datamanager.examples.max-gap", "8",
    ]  # fmt: skip
    if method == "pixelsplat":
        extra = ["--pipeline.model.encoder", "tiny", "--pipeline.model.gaussians-per-pixel", "1",
                 "--pipeline.model.encoder-checkpoint-every", str(steps),
                 "--optimizers.encoder.scheduler.warm-up-end", str(min(100, steps // 4)),
                 "--optimizers.encoder.scheduler.max-steps", str(steps),
                 "--optimizers.encoder.optimizer.lr", "3e-4"]  # fmt: skip
        pattern = "encoders/encoder-step-*.ckpt"
    else:
        extra = ["--pipeline.model.architecture", "small", "--pipeline.model.checkpoint-every", str(steps),
                 "--optimizers.network.scheduler.warm-up-end", str(min(100, steps // 4)),
                 "--optimizers.network.scheduler.max-steps", str(steps),
                 "--optimizers.network.optimizer.lr", "3e-4"]  # fmt: skip
        pattern = "networks/network-step-*.ckpt"
    start = time.perf_counter()
    subprocess.run([bin_path("ns-train"), command, *shared, *extra], check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    checkpoints = sorted((out / method / command / "run").glob(pattern))
    if not checkpoints:
        raise SystemExit(f"compare_methods: {method} training wrote no checkpoint")
    return checkpoints[-1], seconds


def evaluate(method: str, checkpoint: str | None, scenes: list[str], size: int) -> dict:
    """Scores and timings of one model on the held-out scenes (run in its own process)."""
    from pixelsplat_ns.data import ExampleConfig, example_from_indices, open_scene_source
    from pixelsplat_ns.evaluation.protocol import score_views
    from pixelsplat_ns.metrics import build_lpips
    from pixelsplat_ns.views import render_views

    torch.set_num_threads(2)
    path = Path(checkpoint) if checkpoint else None
    if method == "pixelsplat":
        from pixelsplat_ns.weights import load_encoder

        model = load_encoder("tiny", path, for_inference=True)
    else:
        from pixelsplat_ns.widebaseline.weights import load_network

        model = load_network("small", path)
    lpips = build_lpips("vgg")
    config = ExampleConfig(image_shape=(size, size))
    rows, encode_s, render_s = {}, [], []
    for name in scenes:
        source = open_scene_source(DATA / name)
        scene = next(source.scenes(next(iter(source.shards()))))
        i = len(scene) // 2 - 2
        example = example_from_indices(scene, torch.tensor([i, i + 3]), torch.tensor([i + 1, i + 2]), config)
        context, target = example["context"], example["target"]
        with torch.inference_mode():
            start = time.perf_counter()
            if method == "pixelsplat":
                inputs = [context[k][None] for k in ("image", "extrinsics", "intrinsics", "near", "far")]
                encoded = model(*inputs, deterministic=True).gaussians
            else:
                from pixelsplat_ns.cameras import widebaseline_examples

                views = widebaseline_examples(
                    context["image"][None],
                    context["extrinsics"][None],
                    context["intrinsics"][None],
                    model.cfg.image_size,
                )
                encoded = model.encode(views.images, views.c2w)
            encode_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            if method == "pixelsplat":
                rendered = render_views(encoded, target["extrinsics"][None], target["intrinsics"][None], (size, size))[
                    0
                ]
            else:
                from pixelsplat_ns.widebaseline.predict import render_example_targets

                rendered = render_example_targets(
                    model, context["image"][None], context["extrinsics"][None], context["intrinsics"][None],
                    target["extrinsics"][None], target["intrinsics"][None], (size, size), features=encoded,
                )[0]  # fmt: skip
            render_s.append((time.perf_counter() - start) / target["image"].shape[0])
        scores = score_views(rendered, target["image"].permute(0, 2, 3, 1), lpips)
        rows[name] = scores.to_json()
    flat = {k: [v for row in rows.values() for v in (row[k] or [])] for k in ("psnr", "ssim", "lpips")}
    return {
        "method": method,
        "checkpoint": checkpoint or "bundled",
        "scenes": rows,
        "psnr": sum(flat["psnr"]) / len(flat["psnr"]),
        "ssim": sum(flat["ssim"]) / len(flat["ssim"]),
        "lpips": sum(flat["lpips"]) / len(flat["lpips"]) if flat["lpips"] else None,
        "encode_s": sum(encode_s) / len(encode_s),
        "render_s_per_frame": sum(render_s) / len(render_s),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def evaluate_in_subprocess(method: str, checkpoint: Path | None, scenes: list[str], size: int) -> dict:
    command = [sys.executable, __file__, "--evaluate", method, str(checkpoint or ""), "--image-size", str(size),
               "--scenes", *scenes]  # fmt: skip
    result = subprocess.run(command, check=True, capture_output=True, text=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def markdown(results: dict) -> str:
    def show(value, digits):
        return "n/a" if value is None else f"{value:.{digits}f}"

    lines = [
        f"Held-out scenes: {', '.join(results['scenes'])}; {results['image_size']}x{results['image_size']}; "
        f"{results['steps']} training steps each on the same {results['train_scenes']} procedural scenes.",
        "",
        "| model | training | PSNR | SSIM | LPIPS | encode (s) | render / frame (s) | peak RSS (GB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["rows"]:
        lines.append(
            f"| {row['label']} | {row['training']} | {show(row['psnr'], 2)} | {show(row['ssim'], 3)} | "
            f"{show(row['lpips'], 3)} | {show(row['encode_s'], 3)} | {show(row['render_s_per_frame'], 3)} | "
            f"{show(row['peak_rss_gb'], 2)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--scenes", nargs="+", default=list(HELD_OUT))
    parser.add_argument("--train-scenes", type=int, default=60)
    parser.add_argument("--work", type=Path, default=ROOT / "outputs" / "compare-methods")
    parser.add_argument("--output", type=Path, default=ROOT / "benchmarks" / "results" / "compare_methods.json")
    parser.add_argument("--no-bundled", action="store_true", help="skip scoring the bundled models")
    parser.add_argument("--evaluate", nargs=2, metavar=("METHOD", "CHECKPOINT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.evaluate:
        print(json.dumps(evaluate(args.evaluate[0], args.evaluate[1] or None, args.scenes, args.image_size)))
        return

    os.environ.setdefault("OMP_NUM_THREADS", "2")
    scenes = training_scenes(args.work / "data", args.train_scenes)
    rows = []
    for method in METHODS:
        checkpoint, seconds = train(method, scenes, args.work / "runs", args.steps, args.image_size)
        row = evaluate_in_subprocess(method, checkpoint, args.scenes, args.image_size)
        rows.append({**row, "label": f"{method} (small, this run)", "training": f"{seconds / 60:.1f} min"})
        print(json.dumps(rows[-1]), flush=True)
    if not args.no_bundled:
        for method in METHODS:
            row = evaluate_in_subprocess(method, None, args.scenes, args.image_size)
            rows.append({**row, "label": f"{method} (bundled)", "training": "its recipe"})
            print(json.dumps(rows[-1]), flush=True)
    results = {
        "steps": args.steps,
        "image_size": args.image_size,
        "scenes": args.scenes,
        "train_scenes": args.train_scenes,
        "rows": rows,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=1))
    args.output.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
