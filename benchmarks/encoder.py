"""Encoder speed and memory: deterministic forward of a 2x256x256 pair, inference mode
(the encoder prepared for inference, as ``load_encoder(..., for_inference=True)`` gives it).

    python benchmarks/encoder.py [--preset official] [--size 256] [--runs 3] [--threads N]

Builds the preset with the parity fixtures' deterministic weights (no checkpoint needed),
runs one warm-up pass and ``--runs`` timed passes, and prints the median seconds and the
process's peak resident memory. (The official pixelSplat code needs 24-34 s and 4.46 GB
peak for this on a 2-core CPU.)
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config
from pixelsplat_ns.encoder.inference import prepare_for_inference
from pixelsplat_ns.fixture_weights import fill_deterministic

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "pixelsplat-official" / "parity_pair_a64.pt"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


def inputs(size: int) -> tuple[torch.Tensor, ...]:
    """The fixture's real pair (cameras and images, upsampled) if present, else a synthetic pair."""
    if FIXTURE.exists():
        data = torch.load(FIXTURE, map_location="cpu", weights_only=False)["inputs"]
        images = torch.nn.functional.interpolate(
            data["image"][0], size=(size, size), mode="bilinear", align_corners=False
        )
        near = data["near"] * size / data["image"].shape[-1]  # the official near rule scales with the image size
        return images[None].clamp(0, 1), data["extrinsics"], data["intrinsics"], near, data["far"]
    extrinsics = torch.eye(4).repeat(1, 2, 1, 1)
    angle = 0.05
    extrinsics[0, 1, :3, :3] = torch.tensor(
        [[math.cos(angle), 0, -math.sin(angle)], [0, 1, 0], [math.sin(angle), 0, math.cos(angle)]]
    )
    extrinsics[0, 1, 0, 3] = 0.3
    intrinsics = torch.tensor([[1.0, 0, 0.5], [0, 1.0, 0.5], [0, 0, 1]]).repeat(1, 2, 1, 1)
    images = torch.rand(1, 2, 3, size, size, generator=torch.Generator().manual_seed(0))
    return images, extrinsics, intrinsics, torch.full((1, 2), 1.0), torch.full((1, 2), 100.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="official", choices=["official", "tiny"])
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    start = time.perf_counter()
    encoder = prepare_for_inference(fill_deterministic(PixelSplatEncoder(encoder_config(args.preset))))
    built = time.perf_counter() - start
    batch = inputs(args.size)
    print(
        f"preset {args.preset}, 2x{args.size}x{args.size}, {torch.get_num_threads()} threads, built in {built:.1f} s, "
        f"RSS after build {peak_rss_gb():.2f} GB"
    )

    times, cpu_times = [], []
    out = None
    with torch.inference_mode():
        for run in range(args.runs + 1):
            del out  # hold one result at a time
            start, cpu_start = time.perf_counter(), time.process_time()
            out = encoder(*batch, deterministic=True, global_step=0)
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu_start
            if run:  # the first pass warms up allocators and kernels
                times.append(elapsed)
                cpu_times.append(cpu)
            print(f"  {'warm-up' if run == 0 else f'run {run}'}: {elapsed:.2f} s ({cpu:.2f} s CPU)")
    n = out.gaussians.means.shape[1]
    print(
        f"median {statistics.median(times):.2f} s per forward ({statistics.median(cpu_times):.2f} s CPU, "
        f"{n:,} Gaussians), peak RSS {peak_rss_gb():.2f} GB"
    )


if __name__ == "__main__":
    main()
