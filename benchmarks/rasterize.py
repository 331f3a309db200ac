"""Benchmark the CPU rasteriser (``pixelsplat_ns.rendering.rasterize``, backend="torch").

Cases (render size / Gaussians): 64x64 / 8,192, 256x256 / 131,072, 512x512 / 400,000.
Scenes are pixelSplat-like: one Gaussian per context-camera pixel ray (two context
cameras), depths in [1, 10], pixel-footprint scales, random rotations and opacities, SH
degree 3; rendered from a camera between the two context views.

The speed-up column compares against the plain PyTorch reference kept in
``plain_rasterizer.py`` (same scenes, same conventions; its images are compared at the
end).

Each case, mode (forward, forward+backward) and implementation runs in its own
subprocess so that peak
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
    return {
        "means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": sh,
        "viewmats": viewmats, "Ks": Ks, "width": size, "height": size, "sh_degree": 3,
    }  # fmt: skip


def render_with(impl: str):
    """The rasteriser under test ("project": ``rasterize(..., backend="torch")``) or the
    plain reference kept in ``plain_rasterizer.py``; both return (image, alpha, meta)."""
    if impl == "plain":
        from plain_rasterizer import plain_rasterize

        def plain(**inputs):
            image, alpha = plain_rasterize(**inputs)
            return image, alpha, {}

        return plain
    from pixelsplat_ns.rendering import rasterize

    return lambda **inputs: rasterize(**inputs, backend="torch")


def run_case(case: str, mode: str, repeats: int, impl: str = "project") -> dict:
    import torch

    rasterize = render_with(impl)

    torch.set_num_threads(2)
    size, n = CASES[case]
    scene = make_scene(size, n)
    grads = ("means", "quats", "scales", "opacities", "colors")
    rss_setup = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    times, cpu_times = [], []
    for i in range(repeats + 1):
        inputs = dict(scene)
        if mode == "fwd+bwd":
            for k in grads:
                inputs[k] = scene[k].clone().requires_grad_(True)
        t0, c0 = time.perf_counter(), time.process_time()
        if mode == "fwd":
            with torch.no_grad():
                render, alpha, _ = rasterize(**inputs)
        else:
            render, alpha, _ = rasterize(**inputs)
            (render.sum() + alpha.sum()).backward()
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
        if i > 0:  # first run is warm-up
            times.append(elapsed)
            cpu_times.append(cpu)
    return {
        "case": case, "mode": mode, "impl": impl, "size": size, "n": n, "median_s": statistics.median(times),
        "min_s": min(times), "cpu_s": statistics.median(cpu_times),
        "native": impl == "project" and _native_used(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "setup_rss_mb": rss_setup,
    }  # fmt: skip


def compare_images(case: str) -> dict:
    """Max abs difference between the project's and the plain reference's forward images."""
    import torch

    torch.set_num_threads(2)
    size, n = CASES[case]
    scene = make_scene(size, n)
    with torch.no_grad():
        ours, ours_alpha, _ = render_with("project")(**scene)
        plain, plain_alpha, _ = render_with("plain")(**scene)
    difference = (ours - plain).abs().amax(-1)
    return {
        "case": case, "image": float(difference.max()), "alpha": float((ours_alpha - plain_alpha).abs().max()),
        "over_1e-5": int((difference > 1e-5).sum()), "pixels": difference.numel(),
    }  # fmt: skip


def _native_used() -> bool:
    from pixelsplat_ns.rendering import native

    return native.available()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    parser.add_argument("--modes", nargs="*", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--plain-repeats", type=int, default=3, help="repeats of the (slow) plain reference")
    parser.add_argument("--no-plain", action="store_true", help="skip the plain reference")
    parser.add_argument("--child", nargs=3, metavar=("CASE", "MODE", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--compare", metavar="CASE", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(run_case(args.child[0], args.child[1], args.repeats, args.child[2])))
        return
    if args.compare:
        print(json.dumps(compare_images(args.compare)))
        return

    def child(*extra: str) -> dict:
        out = subprocess.run([sys.executable, __file__, *extra], check=True, capture_output=True, text=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    impls = ["project"] if args.no_plain else ["project", "plain"]
    results: dict[tuple[str, str, str], dict] = {}
    for case in args.cases:
        for mode in args.modes:
            if case == "512" and mode == "fwd+bwd":
                continue  # the viewer case: forward only
            for impl in impls:
                repeats = args.repeats if impl == "project" else args.plain_repeats
                r = child("--child", case, mode, impl, "--repeats", str(repeats))
                results[case, mode, impl] = r
                print(
                    f"  done {r['size']}x{r['size']} / {r['n']:,} {mode} {impl}: {r['median_s']:.3f} s", file=sys.stderr
                )

    native = any(r["native"] for r in results.values())
    print(f"CPU kernels: {'C++ (native)' if native else 'pure PyTorch'}; 2 threads; median of repeated runs")
    header = (
        f"{'image':>9} {'gaussians':>10} {'mode':>8} {'project s':>10} {'CPU s':>7} {'peak RSS MB':>12}"
        f" {'plain s':>8} {'plain RSS MB':>13} {'speed-up':>9}"
    )
    print(header)
    print("-" * len(header))
    for (case, mode, impl), r in results.items():
        if impl != "project":
            continue
        plain = results.get((case, mode, "plain"))
        plain_cols = (
            f" {plain['median_s']:>8.3f} {plain['peak_rss_mb']:>13.0f} {plain['median_s'] / r['median_s']:>8.1f}x"
            if plain else f" {'-':>8} {'-':>13} {'-':>9}"
        )  # fmt: skip
        print(
            f"{r['size']:>4}x{r['size']:<4} {r['n']:>10,} {mode:>8} {r['median_s']:>10.3f} {r['cpu_s']:>7.3f}"
            f" {r['peak_rss_mb']:>12.0f}{plain_cols}"
        )
    print(
        f"(RSS includes importing torch and building the scene: {results[next(iter(results))]['setup_rss_mb']:.0f} MB)"
    )
    if not args.no_plain:
        print("forward images, project versus plain reference:")
        for case in args.cases:
            c = child("--compare", case)
            print(
                f"  {CASES[case][0]}x{CASES[case][0]}: max abs difference {c['image']:.1e} (alpha {c['alpha']:.1e}); "
                f"{c['over_1e-5']} of {c['pixels']:,} pixels differ by more than 1e-5"
            )
        print("  (isolated pixels can differ where a Gaussian sits on gsplat's 1/255 alpha or 1e-4")
        print("   transmittance threshold and float rounding differs between the two orders of operations)")


if __name__ == "__main__":
    main()
