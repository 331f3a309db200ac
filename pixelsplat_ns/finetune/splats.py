"""Per-scene Gaussians in the form an optimiser updates (gsplat / splatfacto storage), and
the initialisations the fine-tuning benchmark compares.

Storage follows splatfacto: means, log-scales, wxyz quaternions, SH coefficients in gsplat's
basis ``[n, K, 3]`` and logit opacities. Cameras are pixelSplat's: OpenCV camera-to-world
extrinsics and intrinsics normalised by the image size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.cameras import denormalize_intrinsics
from pixelsplat_ns.encoder.geometry import pixel_centers
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.gaussians import Gaussians, official_to_gsplat_sh
from pixelsplat_ns.rendering import rasterize

SH_C0 = 0.28209479177387814  # gsplat's degree-0 basis constant


@dataclass
class Splats:
    """Optimisable Gaussians (one scene)."""

    means: Float[Tensor, "n 3"]
    log_scales: Float[Tensor, "n 3"]
    quats: Float[Tensor, "n 4"]
    sh: Float[Tensor, "n k 3"]  # gsplat basis
    logit_opacities: Float[Tensor, "n"]

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        expected = {"means": (n, 3), "log_scales": (n, 3), "quats": (n, 4), "logit_opacities": (n,)}
        for name, shape in expected.items():
            if tuple(getattr(self, name).shape) != shape:
                raise PixelSplatInputError(f"Splats.{name} has shape {tuple(getattr(self, name).shape)}, expected {shape}")
        k = self.sh.shape[1] if self.sh.ndim == 3 else -1
        if self.sh.ndim != 3 or self.sh.shape[0] != n or self.sh.shape[2] != 3 or math.isqrt(k) ** 2 != k:
            raise PixelSplatInputError(f"Splats.sh has shape {tuple(self.sh.shape)}, expected ({n}, (degree + 1)^2, 3)")

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return math.isqrt(self.sh.shape[1]) - 1

    def tensors(self) -> dict[str, Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    def trainable(self) -> "Splats":
        """A copy whose tensors are leaves that require gradients."""
        return Splats(**{name: value.detach().clone().requires_grad_(True) for name, value in self.tensors().items()})


def splats_from_gaussians(gaussians: Gaussians, sh_degree: int = 3) -> Splats:
    """The encoder's prediction for one scene (batch element 0) as optimisable Gaussians:
    the rendered images are unchanged (SH converted to gsplat's basis, degree-4 band dropped)."""
    if gaussians.means.shape[0] != 1:
        raise PixelSplatInputError(f"expected the Gaussians of one scene (batch 1), got a batch of {gaussians.means.shape[0]}")
    scales, rotations = gaussians.scales_and_rotations()
    opacities = gaussians.opacities[0].clamp(1e-6, 1 - 1e-6)
    return Splats(
        means=gaussians.means[0].detach().clone(),
        log_scales=scales[0].detach().clamp_min(1e-10).log(),
        quats=rotations[0].detach().clone(),
        sh=official_to_gsplat_sh(gaussians.harmonics[0], sh_degree).detach().clone(),
        logit_opacities=torch.logit(opacities.detach()),
    )


def _k_nearest_distance(points: Float[Tensor, "n 3"], k: int = 3) -> Float[Tensor, "n"]:
    """Mean distance to the k nearest other points (splatfacto's initial scale rule)."""
    n = len(points)
    if n < 2:
        return torch.ones(n, dtype=points.dtype, device=points.device)
    k = min(k, n - 1)
    chunk = max(1, 2**25 // n)  # distance blocks of at most 128 MB
    out = []
    for start in range(0, n, chunk):
        d = torch.cdist(points[start : start + chunk], points)
        out.append(d.topk(k + 1, largest=False).values[:, 1:].mean(dim=1))
    return torch.cat(out)


def _initial_splats(means: Tensor, colors: Tensor, sh_degree: int, generator: torch.Generator) -> Splats:
    n = len(means)
    scales = _k_nearest_distance(means).clamp_min(1e-7)
    quats = torch.randn((n, 4), generator=generator)
    sh = torch.zeros((n, (sh_degree + 1) ** 2, 3))
    sh[:, 0] = (colors - 0.5) / SH_C0
    return Splats(
        means=means,
        log_scales=scales.log()[:, None].repeat(1, 3),
        quats=quats / quats.norm(dim=-1, keepdim=True),
        sh=sh,
        logit_opacities=torch.full((n,), math.log(0.1 / 0.9)),
    )


def random_splats(
    count: int, extrinsics: Float[Tensor, "view 4 4"], sh_degree: int = 3, seed: int = 0, spread: float = 1.5
) -> Splats:
    """Optimisation from scratch as splatfacto starts without points: ``count`` Gaussians
    uniform in a cube around the cameras (half-side ``spread`` times the cameras' extent,
    at least ``spread``), random colours, scales from neighbour distances, opacity 0.1."""
    generator = torch.Generator().manual_seed(seed)
    centres = extrinsics[:, :3, 3].detach().cpu().float()
    middle = centres.mean(dim=0)
    extent = max(float((centres - middle).norm(dim=-1).max()), 1.0)
    means = middle + (torch.rand((count, 3), generator=generator) * 2 - 1) * spread * extent
    splats = _initial_splats(means, torch.rand((count, 3), generator=generator), sh_degree, generator)
    return _to(splats, extrinsics.device)


def pixel_splats(
    images: Float[Tensor, "view 3 h w"],
    extrinsics: Float[Tensor, "view 4 4"],
    intrinsics: Float[Tensor, "view 3 3"],
    near: Float[Tensor, "view"],
    far: Float[Tensor, "view"],
    sh_degree: int = 3,
    seed: int = 0,
) -> Splats:
    """A stronger start from scratch: one Gaussian per context pixel, on its ray at a
    random depth in [near, far] (uniform in disparity, as the encoder's buckets), with the
    pixel's colour. Everything pixelSplat predicts except the learned depth and shape."""
    device = images.device
    images, extrinsics, intrinsics, near, far = (t.detach().cpu().float() for t in (images, extrinsics, intrinsics, near, far))
    generator = torch.Generator().manual_seed(seed)  # CPU draws: the same start on every device
    v, _, h, w = images.shape
    xy = pixel_centers(h, w).reshape(-1, 2)  # normalised image coordinates, row-major
    pixels = torch.cat((xy, torch.ones_like(xy[:, :1])), dim=-1)
    means, colors = [], []
    for view in range(v):
        directions = pixels @ torch.linalg.inv(intrinsics[view]).T  # camera frame, z = 1
        t = torch.rand(len(pixels), generator=generator)
        disparity = (1 - t) / near[view] + t / far[view]
        points = directions / disparity[:, None]
        means.append(points @ extrinsics[view, :3, :3].T + extrinsics[view, :3, 3])
        colors.append(images[view].reshape(3, -1).T)
    return _to(_initial_splats(torch.cat(means), torch.cat(colors), sh_degree, generator), device)


def _to(splats: Splats, device: torch.device) -> Splats:
    return Splats(**{name: value.to(device) for name, value in splats.tensors().items()})


def render_splats(
    splats: Splats,
    extrinsics: Float[Tensor, "view 4 4"],
    intrinsics: Float[Tensor, "view 3 3"],
    image_shape: tuple[int, int],
) -> Float[Tensor, "view h w 3"]:
    """Render into pixelSplat-convention cameras (black background), differentiably."""
    h, w = image_shape
    image, _, _ = rasterize(
        means=splats.means,
        quats=splats.quats,
        scales=splats.log_scales.exp(),
        opacities=torch.sigmoid(splats.logit_opacities),
        colors=splats.sh,
        viewmats=torch.linalg.inv(extrinsics),
        Ks=denormalize_intrinsics(intrinsics, w, h),
        width=w,
        height=h,
        sh_degree=splats.sh_degree,
    )
    return image
