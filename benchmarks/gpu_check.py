"""What only a CUDA machine can check, in one command.

    .venv/bin/python benchmarks/gpu_check.py                       # untrained official-architecture encoder
    .venv/bin/python benchmarks/gpu_check.py --checkpoint re10k.ckpt --runs 20

Everything else in this project is tested on CPU; these three things need a GPU:

1. **encoder parity**: the official-architecture encoder (seeded deterministic weights, the
   parity fixtures' recipe, or ``--checkpoint``) on CUDA and on CPU, same 256x256 context pair
   (the pair ``benchmarks/encoder.py`` times on CPU), deterministic (top-1 depth bucket): the
   share of pixels whose depth bucket differs, and the largest difference of the Gaussians'
   means, opacities, colours (SH coefficients) and covariances over the pixels that agree.
   CUDA runs in exact float32 here (TF32 off): parity is about the code, not TF32's rounding;
2. **encoder speed**: median seconds per 256x256 pair on CUDA (torch's default precision,
   warm-up first, ``torch.cuda.synchronize`` around each run; the paper reports 0.104 s on an
   A100) and peak CUDA memory (``torch.cuda.max_memory_allocated``);
3. **rasteriser**: one seeded scene of Gaussians (SH degree 3, two cameras, a background)
   rendered with gsplat's CUDA kernels and with this project's CPU rasteriser
   (``pixelsplat_ns.rendering.rasterize``, ``backend="gsplat"`` / ``"torch"``): the largest
   colour, alpha and expected-depth differences. It runs last because gsplat compiles its
   CUDA kernels on first use (minutes, needs ``nvcc``): the encoder's figures are printed first.

Every figure is printed with its tolerance; the exit status is 0 when all are within it, 1
otherwise or when a part fails (its error is printed and the other parts still run). Without
CUDA the script prints one line and exits 0. ``--device cpu`` (not in ``--help``) is a dry run
of the same code with both sides on the CPU (the CPU rasteriser on both sides): it exercises the
script, not CUDA.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import resource
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version
from pathlib import Path

import torch
from torch import Tensor

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NO_CUDA = "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check"
PAPER_SECONDS = 0.104  # pixelSplat paper: encoder time per 256x256 pair on an A100
PARTS = ("parity", "speed", "rasteriser")
VISIBLE = 1 / 255  # a colour or alpha difference below one 8-bit step cannot be seen


@dataclass
class Figure:
    """One checked number and the largest value it may take."""

    label: str
    value: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.value <= self.tolerance  # NaN is never ok

    def line(self) -> str:
        verdict = "ok" if self.ok else "ABOVE TOLERANCE"
        return f"  {self.label}: {self.value:.3g} (tolerance {self.tolerance:.3g}) {verdict}"


# --------------------------------------------------------------------------------------
# Precision and devices
# --------------------------------------------------------------------------------------


@contextmanager
def exact_float32() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls, restored afterwards. Uses torch's
    fp32_precision API where it exists: mixing it with the legacy allow_tf32 flags raises."""
    conv, matmul = getattr(torch.backends.cudnn, "conv", None), torch.backends.cuda.matmul
    if conv is not None and hasattr(conv, "fp32_precision") and hasattr(matmul, "fp32_precision"):
        saved = conv.fp32_precision, matmul.fp32_precision
        conv.fp32_precision, matmul.fp32_precision = "ieee", "ieee"
        try:
            yield
        finally:
            conv.fp32_precision, matmul.fp32_precision = saved
    else:
        saved = torch.backends.cudnn.allow_tf32, matmul.allow_tf32
        torch.backends.cudnn.allow_tf32, matmul.allow_tf32 = False, False
        try:
            yield
        finally:
            torch.backends.cudnn.allow_tf32, matmul.allow_tf32 = saved


def precision_note() -> str:
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):
        return (
            f"cuDNN conv fp32 precision {conv.fp32_precision!r}, matmul {torch.backends.cuda.matmul.fp32_precision!r}"
        )
    return f"cuDNN TF32 {torch.backends.cudnn.allow_tf32}, matmul TF32 {torch.backends.cuda.matmul.allow_tf32}"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2  # Linux: KiB


# --------------------------------------------------------------------------------------
# Encoder: parity and speed
# --------------------------------------------------------------------------------------


def context_pair(size: int) -> tuple[Tensor, ...]:
    """The pair benchmarks/encoder.py times on CPU (the parity fixture's real pair, upsampled,
    or a synthetic one), so the CUDA and CPU timings are of the same input."""
    spec = importlib.util.spec_from_file_location("encoder_benchmark", Path(__file__).with_name("encoder.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return tuple(t.float() for t in module.inputs(size))


def load_encoder(checkpoint: Path | None) -> tuple[torch.nn.Module, str]:
    """(encoder on the CPU, prepared for inference, a description of its weights)."""
    from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config
    from pixelsplat_ns.encoder.inference import prepare_for_inference
    from pixelsplat_ns.fixture_weights import fill_deterministic
    from pixelsplat_ns.official import load_checkpoint

    if checkpoint is not None:
        checkpoint = checkpoint.expanduser()
        return prepare_for_inference(load_checkpoint(checkpoint, device="cpu")), f"weights from {checkpoint}"
    encoder = prepare_for_inference(fill_deterministic(PixelSplatEncoder(encoder_config("official"))))
    return encoder, "official architecture, untrained deterministic weights (the parity fixtures' recipe)"


def encode(encoder: torch.nn.Module, pair: tuple[Tensor, ...], device: torch.device) -> dict[str, Tensor]:
    """Deterministic Gaussians of the pair, one row per Gaussian, on the CPU."""
    with torch.inference_mode():
        out = encoder(*(t.to(device) for t in pair), deterministic=True, global_step=0)
    g = out.gaussians
    rows = {
        "means": g.means[0],
        "opacities": g.opacities[0, :, None],
        "colours (SH)": g.harmonics[0].flatten(1),
        "covariances": g.covariances[0].flatten(1),
        # Gaussians are ordered (view, row, column, surface, sample), as depth_index flattens.
        "depth bucket": out.depth_index[0].flatten()[:, None],
    }
    return {name: value.cpu() for name, value in rows.items()}


def check_parity(encoder: torch.nn.Module, pair: tuple[Tensor, ...], device: torch.device) -> list[Figure]:
    """Same encoder, same pair: CPU first, then moved to ``device`` (one copy of the weights)."""
    reference = encode(encoder.to("cpu"), pair, torch.device("cpu"))
    encoder.to(device)
    with exact_float32():
        ours = encode(encoder, pair, device)
    # Where the top depth bucket differs (a near-tie flipped by rounding) the Gaussian sits at
    # another depth: those are counted, and the values compared over the pixels that agree.
    agree = (ours["depth bucket"] == reference["depth bucket"])[:, 0]
    count = agree.numel()
    print(f"  top depth bucket differs at {count - int(agree.sum()):,} of {count:,} Gaussians")
    figures = [Figure("share of Gaussians whose depth bucket differs", 1 - agree.float().mean().item(), 0.005)]
    for name in ("means", "opacities", "colours (SH)", "covariances"):
        a, e = ours[name][agree], reference[name][agree]
        largest = (a - e).abs().max().item() if a.numel() else math.nan
        scale = e.abs().max().item() if e.numel() else math.nan
        print(f"  {name}: max |{device.type.upper()} - CPU| {largest:.3g} (largest |value| {scale:.3g})")
        figures.append(Figure(f"{name}: max |difference| / max |value|", largest / max(scale, 1e-30), 1e-3))
    return figures


def check_speed(
    encoder: torch.nn.Module, pair: tuple[Tensor, ...], device: torch.device, warmup: int, runs: int
) -> None:
    """Median wall time of a deterministic forward, inputs already on the device."""
    encoder.to(device)
    inputs = tuple(t.to(device) for t in pair)
    size = pair[0].shape[-1]
    weights_gb = sum(p.numel() * p.element_size() for p in encoder.parameters()) / 1e9
    times = []
    with torch.inference_mode():
        for run in range(warmup + runs):
            if run == warmup and device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)  # warm-up allocations (cuDNN autotuning) excluded
            synchronize(device)
            start = time.perf_counter()
            out = encoder(*inputs, deterministic=True, global_step=0)
            synchronize(device)
            if run >= warmup:
                times.append(time.perf_counter() - start)
            del out  # one result held at a time
    median = statistics.median(times)
    print(
        f"  median {median:.4f} s per {size}x{size} pair on {device_name(device)} "
        f"(min {min(times):.4f} s, {runs} runs after {warmup} warm-up; {precision_note()}); "
        f"the paper reports {PAPER_SECONDS} s on an A100"
    )
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 1e9
        print(f"  peak CUDA memory {peak:.2f} GB (torch.cuda.max_memory_allocated; weights {weights_gb:.2f} GB)")
    else:
        print(f"  peak RSS {peak_rss_gb():.2f} GB (dry run: no CUDA memory to measure; weights {weights_gb:.2f} GB)")


# --------------------------------------------------------------------------------------
# Rasteriser
# --------------------------------------------------------------------------------------


def gaussian_scene(count: int, size: int, seed: int = 0) -> dict[str, Tensor]:
    """Seeded Gaussians in front of two cameras (OpenCV world-to-camera, pixel intrinsics)."""
    generator = torch.Generator().manual_seed(seed)

    def uniform(low: float, high: float, *shape: int) -> Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator)

    means = torch.stack((uniform(-1.5, 1.5, count), uniform(-1.5, 1.5, count), uniform(1.5, 5.0, count)), dim=-1)
    # Opacities from 0: some fall under gsplat's 1/255 cut, as real scenes' do.
    sh_scale = torch.tensor([0.5] + [0.1] * 15)[:, None]
    angle = math.radians(-8.0)  # the second camera, 0.3 to the right, turns towards the scene
    c2w = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    c2w[1, :3, :3] = torch.tensor(
        [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]], dtype=torch.float64
    )
    c2w[1, 0, 3] = 0.3
    return {
        "means": means,
        "quats": torch.randn(count, 4, generator=generator),
        "scales": uniform(math.log(0.004), math.log(0.06), count, 3).exp(),
        "opacities": uniform(0.0, 1.0, count),
        "colors": torch.randn(count, 16, 3, generator=generator) * sh_scale,  # SH degree 3, gsplat's layout
        "viewmats": torch.linalg.inv(c2w).float(),
        "Ks": torch.tensor([[float(size), 0.0, size / 2], [0.0, float(size), size / 2], [0.0, 0.0, 1.0]]).repeat(
            2, 1, 1
        ),
        "backgrounds": torch.tensor([[0.1, 0.2, 0.3], [0.0, 0.0, 0.0]]),
    }


def render(scene: dict[str, Tensor], size: int, device: torch.device, backend: str) -> tuple[Tensor, Tensor, Tensor]:
    """(colour [C, H, W, 3], alpha [C, H, W], expected depth [C, H, W]) on the CPU."""
    from pixelsplat_ns.rendering import rasterize

    inputs = {name: value.to(device) for name, value in scene.items()}
    with torch.no_grad():
        colours, alphas, _ = rasterize(
            **inputs, width=size, height=size, sh_degree=3, render_mode="RGB+ED", backend=backend
        )
    synchronize(device)
    return colours[..., :3].cpu(), alphas[..., 0].cpu(), colours[..., 3].cpu()


def check_rasteriser(count: int, size: int, device: torch.device) -> list[Figure]:
    scene = gaussian_scene(count, size)
    backend = "gsplat" if device.type == "cuda" else "torch"  # gsplat has no CPU kernels
    if backend == "gsplat":
        print("  gsplat compiles its CUDA kernels on first use (minutes, needs nvcc) ...", flush=True)
    ours = render(scene, size, device, backend)
    reference = render(scene, size, torch.device("cpu"), "torch")
    print(f"  {count:,} Gaussians, 2 cameras of {size}x{size}, SH degree 3: {backend} on {device} vs torch on cpu")
    figures = []
    for name, a, e in (("colour", ours[0], reference[0]), ("alpha", ours[1], reference[1])):
        difference = (a - e).abs()
        visible = int((difference > VISIBLE).sum())
        print(
            f"  {name}: max |difference| {difference.max().item():.3g}, mean {difference.mean().item():.3g}, "
            f"{visible:,} of {difference.numel():,} values differ by more than 1/255"
        )
        # Isolated pixels may differ where a Gaussian sits exactly on the 1/255 opacity or 1e-4
        # transmittance threshold (README, Measured): a small share, not the maximum, is the test.
        figures.append(
            Figure(f"{name}: share of values differing by more than 1/255", visible / difference.numel(), 1e-3)
        )
        figures.append(Figure(f"{name}: mean |difference|", difference.mean().item(), 1e-4))
    covered = (reference[1] > 0.5) & (ours[1] > 0.5)  # expected depth is only meaningful under opaque pixels
    relative = ((ours[2] - reference[2]).abs() / reference[2].abs().clamp_min(1e-6))[covered]
    largest = relative.max().item() if relative.numel() else math.nan
    print(f"  expected depth (alpha > 0.5, {relative.numel():,} pixels): max relative difference {largest:.3g}")
    share = (relative > 1e-3).float().mean().item() if relative.numel() else math.nan
    figures.append(Figure("expected depth: share of pixels differing by more than 0.1%", share, 1e-3))
    return figures


# --------------------------------------------------------------------------------------


def run_part(name: str, part: Callable[[], list[Figure] | None], figures: list[Figure], failures: list[str]) -> None:
    """Run one part; a failure is reported and the other parts still run."""
    print(f"[{name}]", flush=True)
    try:
        checked = part() or []
    except Exception as error:  # reported and counted; the next part still runs
        traceback.print_exc()
        print(f"  FAILED: {type(error).__name__}: {error}")
        failures.append(name)
        return
    for figure in checked:
        print(figure.line())
    figures.extend(checked)
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--checkpoint",
        type=Path,
        default=None,
        help="encoder checkpoint (official re10k.ckpt / acid.ckpt, or this project's); "
        "default: the official architecture with untrained deterministic weights",
    )
    parser.add_argument("--size", type=int, default=256, help="side of the square context images (default 256)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed encoder runs before timing (default 3)")
    parser.add_argument("--runs", type=int, default=10, help="timed encoder runs; the median is printed (default 10)")
    parser.add_argument("--gaussians", type=int, default=50_000, help="Gaussians in the rasteriser's scene")
    parser.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="what to check (default: all)")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help=argparse.SUPPRESS)  # cpu: dry run
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA)
        return 0
    if args.runs < 1 or args.warmup < 0 or args.size < 1 or args.gaussians < 1:
        parser.error("--runs, --size and --gaussians must be positive and --warmup 0 or more")
    device = torch.device(args.device)
    side = "CUDA" if device.type == "cuda" else "CPU (dry run)"

    if device.type == "cuda":
        capability = ".".join(map(str, torch.cuda.get_device_capability(device)))
        print(f"gpu_check: {device_name(device)} (compute capability {capability}), torch {torch.__version__}, "
              f"CUDA {torch.version.cuda}, gsplat {version('gsplat')}")  # fmt: skip
    else:
        print("gpu_check: DRY RUN, both sides on the CPU: this exercises the script, it says nothing about CUDA")
    figures: list[Figure] = []
    failures: list[str] = []
    if "parity" in args.parts or "speed" in args.parts:
        try:
            encoder, weights = load_encoder(args.checkpoint)
        except (ValueError, OSError) as error:  # a missing or unreadable checkpoint: named, no traceback
            print(f"gpu_check: error: {error}")
            return 2
        multiple = encoder.image_multiple
        if args.size % multiple:
            parser.error(f"--size must be a multiple of {multiple} for this encoder, got {args.size}")
        pair = context_pair(args.size)
        print(f"encoder: {weights}; context pair 2x{args.size}x{args.size}")
        if "parity" in args.parts:
            run_part(f"encoder parity: {side} vs CPU", partial(check_parity, encoder, pair, device), figures, failures)
        if "speed" in args.parts:
            part = partial(check_speed, encoder, pair, device, args.warmup, args.runs)
            run_part("encoder speed", part, figures, failures)
            del part
        del encoder  # frees its CUDA memory before the rasteriser runs
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "rasteriser" in args.parts:
        part = partial(check_rasteriser, args.gaussians, args.size, device)
        run_part(f"rasteriser: {side} vs CPU", part, figures, failures)

    above = [figure.label for figure in figures if not figure.ok]
    if failures or above:
        print(f"gpu_check: {len(above)} of {len(figures)} figures above tolerance, failed parts: {failures or 'none'}")
        return 1
    print(f"gpu_check: all {len(figures)} figures within tolerance")
    return 0


if __name__ == "__main__":
    sys.exit(main())
