"""Tile binning for the CPU rasteriser.

gsplat assigns a Gaussian to every 16x16 tile its ``radius`` square touches
(``isect_tiles``: tiles ``floor((m - r) / 16) .. ceil((m + r) / 16)``, clamped to the
grid) and composites, per pixel, only the Gaussians binned to that pixel's tile, front to
back by depth (ties: lower Gaussian index first, as gsplat's stable radix sort).

We bin into smaller ``block x block`` tiles (``block`` divides 16, so each lies inside one
gsplat tile and inherits its Gaussian list) and additionally drop blocks where the
Gaussian's alpha cannot reach ``1/255``: alpha >= 1/255 needs
``sigma = d^T conic d / 2 <= ln(255 opacity)``, an ellipse whose x/y half-extents are
``sqrt(2 ln(255 o) cov_xx)`` and ``sqrt(2 ln(255 o) cov_yy)``. A small margin keeps the
bound conservative; the compositor still applies gsplat's exact per-pixel rules, so
this only saves work.

Shapes: ``C`` cameras, ``N`` Gaussians, ``M = C * N`` (camera, Gaussian) pairs flattened,
``V`` the pairs that can reach alpha >= 1/255 somewhere (candidates), ``n_isects`` the
(tile, Gaussian) pairs of all tile lists.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "GSPLAT_TILE_SIZE",
    "Footprints",
    "TileBins",
    "bin_gaussians",
    "gaussian_footprints",
    "gsplat_tiles_per_gauss",
]

GSPLAT_TILE_SIZE = 16


@dataclass
class TileBins:
    """Depth-sorted Gaussian lists of the ``block x block`` tiles of all cameras.

    Tiles are numbered ``camera * tiles_y * tiles_x + ty * tiles_x + tx``; tile ``t``'s
    Gaussians (flat indices into ``C * N``) are ``gauss_ids[start[t] : start[t] + count[t]]``.
    """

    block: int
    tiles_x: int
    tiles_y: int
    n_tiles: int
    gauss_ids: Int[Tensor, " n_isects"]
    start: Int[Tensor, " n_tiles"]
    count: Int[Tensor, " n_tiles"]


def _gsplat_tile_bbox(
    means2d: Float[Tensor, "G 2"], radii: Int[Tensor, " G"], tiles_x: int, tiles_y: int
) -> tuple[Int[Tensor, " G"], Int[Tensor, " G"], Int[Tensor, " G"], Int[Tensor, " G"]]:
    """gsplat's [min, max) tile rectangle ``(x0, x1, y0, y1)`` of each of ``G`` Gaussians
    (16-pixel tiles)."""
    radius = radii.to(means2d.dtype)
    tile_radius = radius / GSPLAT_TILE_SIZE
    tile_xy = means2d / GSPLAT_TILE_SIZE
    x0 = torch.floor(tile_xy[:, 0] - tile_radius).clamp(0, tiles_x).long()
    x1 = torch.ceil(tile_xy[:, 0] + tile_radius).clamp(0, tiles_x).long()
    y0 = torch.floor(tile_xy[:, 1] - tile_radius).clamp(0, tiles_y).long()
    y1 = torch.ceil(tile_xy[:, 1] + tile_radius).clamp(0, tiles_y).long()
    return x0, x1, y0, y1


@torch.no_grad()
def gsplat_tiles_per_gauss(
    means2d: Float[Tensor, "C N 2"], radii: Int[Tensor, "C N"], width: int, height: int
) -> Int[Tensor, "C N"]:
    """Number of gsplat 16x16 tiles each Gaussian is binned to (``meta["tiles_per_gauss"]``)."""
    tiles_x = math.ceil(width / GSPLAT_TILE_SIZE)
    tiles_y = math.ceil(height / GSPLAT_TILE_SIZE)
    x0, x1, y0, y1 = _gsplat_tile_bbox(means2d.reshape(-1, 2), radii.reshape(-1), tiles_x, tiles_y)
    count = (x1 - x0) * (y1 - y0) * (radii.reshape(-1) > 0)
    return count.to(torch.int32).reshape(radii.shape)


@dataclass
class Footprints:
    """Gaussians that can reach alpha >= 1/255 somewhere, with their pixel rectangles.

    ``ids`` are flat indices into ``C * N`` sorted front to back (depth, then index, as
    gsplat's stable sort), ``rects`` [C * N, 4] int32 hold ``x0, x1, y0, y1`` (pixels,
    half-open, empty for other Gaussians) and ``sigma_cut`` [C * N] a bound above which
    ``sigma`` certainly gives alpha < 1/255.
    """

    ids: Int[Tensor, " V"]
    rects: Int[Tensor, "M 4"]
    sigma_cut: Float[Tensor, " M"]


@torch.no_grad()
def gaussian_footprints(
    means2d: Float[Tensor, "C N 2"],
    cov2d: Float[Tensor, "C N 3"],
    opacities: Float[Tensor, "C N"],
    radii: Int[Tensor, "C N"],
    depths: Float[Tensor, "C N"],
    width: int,
    height: int,
) -> Footprints:
    """Pixel rectangles: gsplat's tile rectangle, cut to the alpha >= 1/255 ellipse's box."""
    n_pairs = radii.numel()  # M
    gs_tiles_x = math.ceil(width / GSPLAT_TILE_SIZE)
    gs_tiles_y = math.ceil(height / GSPLAT_TILE_SIZE)
    flat_radii = radii.reshape(-1)
    flat_opac = opacities.reshape(-1)
    # A Gaussian with opacity < 1/255 never reaches alpha >= 1/255.
    ids = torch.nonzero((flat_radii > 0) & (flat_opac >= 1.0 / 255.0)).squeeze(1)
    m2d = means2d.reshape(-1, 2)[ids]  # the candidates' means
    x0, x1, y0, y1 = _gsplat_tile_bbox(m2d, flat_radii[ids], gs_tiles_x, gs_tiles_y)

    m64 = m2d.double()  # bounds in float64, as the compiled kernel computes them
    log_level = torch.log(255.0 * flat_opac[ids].double()).clamp_min(0.0)
    cov = cov2d.reshape(-1, 3)[ids].double()
    ext_x = torch.sqrt(2.0 * log_level * cov[:, 0]) * 1.001 + 1e-3
    ext_y = torch.sqrt(2.0 * log_level * cov[:, 2]) * 1.001 + 1e-3
    # pixel p (centre p + 0.5) can be reached when |p + 0.5 - m| <= ext
    big = float(max(width, height) + 2)
    px_lo = torch.ceil((m64[:, 0] - ext_x - 0.5).clamp(-1.0, big)).long()
    px_hi = torch.floor((m64[:, 0] + ext_x - 0.5).clamp(-2.0, big)).long() + 1
    py_lo = torch.ceil((m64[:, 1] - ext_y - 0.5).clamp(-1.0, big)).long()
    py_hi = torch.floor((m64[:, 1] + ext_y - 0.5).clamp(-2.0, big)).long() + 1
    px_lo = torch.maximum(px_lo, x0 * GSPLAT_TILE_SIZE).clamp_min(0)
    px_hi = torch.minimum(px_hi, x1 * GSPLAT_TILE_SIZE).clamp_max(width)
    py_lo = torch.maximum(py_lo, y0 * GSPLAT_TILE_SIZE).clamp_min(0)
    py_hi = torch.minimum(py_hi, y1 * GSPLAT_TILE_SIZE).clamp_max(height)

    rects = torch.zeros(n_pairs, 4, dtype=torch.int32, device=means2d.device)
    rects[ids] = torch.stack((px_lo, px_hi, py_lo, py_hi), dim=-1).to(torch.int32)
    sigma_cut = torch.zeros(n_pairs, dtype=means2d.dtype, device=means2d.device)
    sigma_cut[ids] = (log_level * (1 + 1e-5) + 1e-5).to(means2d.dtype)

    # Front to back: stable sort by depth keeps ties in Gaussian-index order.
    order = torch.sort(depths.reshape(-1)[ids], stable=True).indices
    return Footprints(ids=ids[order], rects=rects, sigma_cut=sigma_cut)


@torch.no_grad()
def bin_gaussians(
    footprints: Footprints, n_cameras: int, n_per_camera: int, width: int, height: int, block: int = 8
) -> TileBins:
    """Build the per-block, depth-sorted Gaussian lists (see the module docstring)."""
    if GSPLAT_TILE_SIZE % block:
        raise ValueError(f"block must divide {GSPLAT_TILE_SIZE}, got {block}")
    ids = footprints.ids
    device = ids.device
    tiles_x, tiles_y = math.ceil(width / block), math.ceil(height / block)
    n_tiles = n_cameras * tiles_x * tiles_y
    px_lo, px_hi, py_lo, py_hi = footprints.rects[ids].long().unbind(-1)

    # each candidate's first block and number of blocks along x and y
    bx0 = torch.div(px_lo, block, rounding_mode="floor")
    by0 = torch.div(py_lo, block, rounding_mode="floor")
    nbx = (torch.div(px_hi - 1, block, rounding_mode="floor") + 1 - bx0) * (px_hi > px_lo)
    nby = (torch.div(py_hi - 1, block, rounding_mode="floor") + 1 - by0) * (py_hi > py_lo)
    per_gauss = nbx * nby

    n_isects = int(per_gauss.sum())
    # one entry per (candidate, block) pair: its candidate, then that block's position
    owner = torch.repeat_interleave(torch.arange(len(ids), device=device), per_gauss, output_size=n_isects)
    first = torch.cumsum(per_gauss, 0) - per_gauss
    local = torch.arange(n_isects, device=device) - first[owner]
    row_len = nbx[owner].clamp_min(1)
    tx = bx0[owner] + local % row_len
    ty = by0[owner] + torch.div(local, row_len, rounding_mode="floor")
    camera = torch.div(ids[owner], n_per_camera, rounding_mode="floor")
    tile = (camera * tiles_y + ty) * tiles_x + tx
    tile, perm = torch.sort(tile, stable=True)
    gauss_ids = ids[owner[perm]]

    count = torch.bincount(tile, minlength=n_tiles)
    start = torch.cumsum(count, 0) - count
    return TileBins(block, tiles_x, tiles_y, n_tiles, gauss_ids, start, count)
