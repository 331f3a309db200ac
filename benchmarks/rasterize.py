"""Benchmark the CPU rasteriser (``pixelsplat_ns.rendering.rasterize``, backend="torch").

Cases (render size / Gaussians): 64x64 / 8,192, 256x256 / 131,072, 512x512 / 400,000.
Scenes are pixelSplat-like: one Gaussian per context-camera pixel ray (two context
cameras), depths in [1, 10], pixel-footprint scales, random rotations and opacities, SH
degree 3; rendered from a camera between the two context views.

Each case and mode (forward, forward+backward) runs in its own subprocess so that peak
RSS (``ru_maxrss``, which includes the ~0.7 GB of importing Torch; the "import" column
is the RSS after importing and building the scene) is per measurement. Timings are
medians over repeated runs after a warm-up, with ``torch.set_num_threads(2)``: wall
clock, and process CPU time (all threads; robust to other load on the machine).

    python benchmarks/rasterize.py                 # all cases, table
    python benchmarks/rasterize.py --cases 256     # one case
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import time

CASES = {"64": (64, 8192), "256": (256, 131072), "512": (512, 400000)}


def make_scene(size: int, n: int, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    res = math.sqrt(n / 2)  # context resolution so that two views hold n rays
    f_ctx = 0.86 * res
    # two context cameras 0.4 apart along x, looking down +z (OpenCV)
    cam = torch.randint(0, 2, (n,), generator=g)
    centre = torch.stack((cam.float() * 0.4 - 0.2, torch.zeros(n), torch.zeros(n)), -1)
    pix = torch.rand(n, 2, generator=g) * res
    rays = torch.cat(((pix - res / 2) / f_ctx, torch.ones(n, 1)), -1)
    depth = 1.0 + 9.0 * torch.rand(n, 1, generator=g) ** 2
    means = centre + rays * depth
    scales = depth / f_ctx * (0.5 + 1.5 * torch.rand(n, 3, generator=g))
    quats = torch.randn(n, 4, generator=g)
    opacities = torch.rand(n, generator=g)
    sh = torch.randn(n, 16, 3, generator=g) * 0.05
    sh[:, 0] = torch.randn(n, 3, generator=g) * 0.6
    viewmats = torch.eye(4)[None].clone()
    viewmats[0, 0, 3] = 0.05
    f = 0.86 * size
    Ks = torch.tensor([[f, 0.0, size / 2], [0.0, f, size / 2], [0.0, 0.0, 1.0]])[None]
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=sh,
                viewmats=viewmats, Ks=Ks, width=size, height=size, sh_degree=3)


def run_case(case: str, mode: str, repeats: int) -> dict:
    import torch

    from pixelsplat_ns.rendering import rasterize

    torch.set_num_threads(2)
    size, n = CASES[case]
    scene = make_scene(size, n)
    grads = ("means", "quats", "scales", "opacities", "colors")
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, cpu_times = [], []
    meta = {}
    for i in range(repeats + 1):
        inputs = dict(scene)
        if mode == "fwd+bwd":
            for k in grads:
                inputs[k] = scene[k].clone().requires_grad_(True)
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "fwd":
            with torch.no_grad():
                render, alpha, meta = rasterize(**inputs, backend="torch")
        else:
            render, alpha, meta = rasterize(**inputs, backend="torch")
            (render.sum() + alpha.sum()).backward()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        if i > 0:  # first run is warm-up
            times.append(elapsed)
            cpu_times.append(cpu)
    return dict(
        case=case, mode=mode, size=size, n=n, median_s=statistics.median(times), min_s=min(times),
        cpu_s=statistics.median(cpu_times), native=meta.get("n_isects") is not None and _native_used(),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, setup_rss_mb=rss_setup,
        n_isects=meta.get("n_isects"), visible=int((meta["radii"] > 0).sum()),
    )


def _native_used() -> bool:
    from pixelsplat_ns.rendering import native

    return native.available()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--modes", nargs="*", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--child", nargs=2, metavar=("CASE", "MODE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child[0], args.child[1], args.repeats)))
        return
    rows = []
    for case in args.cases:
        for mode in args.modes:
            out = subprocess.run(
                [sys.executable, __file__, "--child", case, mode, "--repeats", str(args.repeats)],
                check=True, capture_output=True, text=True,
            )
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            r = rows[-1]
            print(f"  done {r['size']}x{r['size']} / {r['n']:,} {r['mode']}: {r['median_s']:.3f} s", file=sys.stderr)
    header = (
        f"{'image':>9} {'gaussians':>10} {'mode':>8} {'median s':>9} {'min s':>7} {'CPU s':>7}"
        f" {'peak RSS MB':>12} {'import MB':>10} {'isects':>10}"
    )
    print(f"CPU kernels: {'C++ (native)' if rows and rows[0]['native'] else 'pure PyTorch'}")
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['size']:>4}x{r['size']:<4} {r['n']:>10,} {r['mode']:>8} {r['median_s']:>9.3f} {r['min_s']:>7.3f}"
            f" {r['cpu_s']:>7.3f} {r['peak_rss_mb']:>12.0f} {r['setup_rss_mb']:>10.0f} {r['n_isects']:>10,}"
        )


if __name__ == "__main__":
    main()
