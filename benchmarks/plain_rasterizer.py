"""A plain PyTorch rasteriser with gsplat's conventions: the baseline of ``rasterize.py``.

What a careful first implementation looks like: gsplat's own PyTorch reference for the
projection and the SH colours (``gsplat.cuda._torch_impl``), a vectorised tile
intersection, then every 16 x 16 tile composited densely over its depth-sorted Gaussians
(alpha, exclusive cumulative product for transmittance, gsplat's 1/255 alpha cut-off and
1e-4 early stop), a few tiles at a time, with autograd for the backward pass. It is exact
to gsplat's rules; what it lacks is everything that makes the project's rasteriser fast
(per-tile early termination, chunked work bounded by the live Gaussians, hand-written
backward, native kernels).
"""

from __future__ import annotations

import math

import torch
from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics
from torch import Tensor
from torch.utils.checkpoint import checkpoint

TILE = 16


def plain_rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    sh_degree: int,
    tiles_per_batch: int = 16,
) -> tuple[Tensor, Tensor]:
    """Render one camera (``viewmats`` [1, 4, 4]); returns image [1, h, w, 3], alpha [1, h, w, 1]."""
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False)
    radii, means2d, depths, conics, _ = _fully_fused_projection(means, covars, viewmats, Ks, width, height)
    radii, means2d, depths, conics = radii[0], means2d[0], depths[0], conics[0]
    camera = torch.linalg.inv(viewmats[0])[:3, 3]
    rgb = torch.clamp_min(_spherical_harmonics(sh_degree, means - camera, colors) + 0.5, 0.0)

    # Tile intersections (gsplat's bounding box rule), sorted by tile, then depth.
    tiles_x, tiles_y = math.ceil(width / TILE), math.ceil(height / TILE)
    with torch.no_grad():
        radius = radii.to(means2d.dtype)
        low = torch.floor((means2d - radius[:, None]) / TILE).long()
        high = torch.ceil((means2d + radius[:, None]) / TILE).long()
        low[:, 0].clamp_(0, tiles_x), high[:, 0].clamp_(0, tiles_x)
        low[:, 1].clamp_(0, tiles_y), high[:, 1].clamp_(0, tiles_y)
        extent = (high - low).clamp_min(0)
        count = extent[:, 0] * extent[:, 1] * (radii > 0)
        ids = torch.repeat_interleave(torch.arange(means.shape[0]), count)
        rank = torch.arange(ids.numel()) - torch.repeat_interleave(torch.cumsum(count, 0) - count, count)
        tile_x = low[ids, 0] + rank % extent[ids, 0]
        tile_y = low[ids, 1] + rank // extent[ids, 0]
        tile = tile_y * tiles_x + tile_x
        order = torch.argsort(depths.detach()[ids], stable=True)
        order = order[torch.argsort(tile[order], stable=True)]
        ids, tile = ids[order], tile[order]
        per_tile = torch.bincount(tile, minlength=tiles_x * tiles_y)
        starts = torch.cumsum(per_tile, 0) - per_tile

    ys, xs = torch.meshgrid(torch.arange(TILE), torch.arange(TILE), indexing="ij")
    offsets = torch.stack((xs.flatten(), ys.flatten()), -1).to(means.dtype) + 0.5  # pixel centres in a tile
    image = means.new_zeros((tiles_y * TILE, tiles_x * TILE, 3))
    alpha_image = means.new_zeros((tiles_y * TILE, tiles_x * TILE))
    rows = []
    for first in range(0, tiles_x * tiles_y, tiles_per_batch):
        batch = torch.arange(first, min(first + tiles_per_batch, tiles_x * tiles_y))
        longest = int(per_tile[batch].max())
        if longest == 0:
            continue
        slot = torch.arange(longest)
        valid = slot[None] < per_tile[batch, None]  # [tiles, slots]
        index = ids[(starts[batch, None] + slot[None]).clamp(max=max(ids.numel() - 1, 0))]
        origin = torch.stack((batch % tiles_x, batch // tiles_x), -1).to(means.dtype) * TILE
        pixels = origin[:, None] + offsets[None]  # [tiles, 256, 2]
        args = (means2d[index], conics[index], opacities[index], rgb[index], pixels, valid)
        if torch.is_grad_enabled():  # recompute in the backward pass: memory stays bounded
            colour, coverage = checkpoint(_composite_tiles, *args, use_reentrant=False)
        else:
            colour, coverage = _composite_tiles(*args)
        rows.append((batch, colour, coverage))
    for batch, colour, coverage in rows:  # assemble (outside the loop: autograd-friendly writes)
        for k, t in enumerate(batch.tolist()):
            y, x = (t // tiles_x) * TILE, (t % tiles_x) * TILE
            image[y : y + TILE, x : x + TILE] = colour[k].view(TILE, TILE, 3)
            alpha_image[y : y + TILE, x : x + TILE] = coverage[k].view(TILE, TILE)
    return image[None, :height, :width], alpha_image[None, :height, :width, None]


def _composite_tiles(
    means2d: Tensor, conics: Tensor, opacities: Tensor, rgb: Tensor, pixels: Tensor, valid: Tensor
) -> tuple[Tensor, Tensor]:
    """Front-to-back compositing of [tiles, slots] depth-sorted Gaussians over each tile's
    pixels [tiles, 256, 2]; returns colour [tiles, 256, 3] and coverage [tiles, 256]."""
    delta = means2d[:, :, None] - pixels[:, None]  # [tiles, slots, 256, 2]
    conic = conics[:, :, None]
    sigma = (
        0.5 * (conic[..., 0] * delta[..., 0] ** 2 + conic[..., 2] * delta[..., 1] ** 2)
        + conic[..., 1] * delta[..., 0] * delta[..., 1]
    )
    alpha = torch.clamp_max(opacities[:, :, None] * torch.exp(-sigma), 0.999)
    keep = valid[:, :, None] & (sigma >= 0) & (alpha >= 1.0 / 255.0)
    alpha = torch.where(keep, alpha, torch.zeros_like(alpha))
    after = torch.cumprod(1 - alpha, dim=1)  # transmittance after each Gaussian
    before = torch.cat((torch.ones_like(after[:, :1]), after[:, :-1]), 1)
    alive = after.detach() > 1e-4  # gsplat stops before the Gaussian that would end it
    weight = torch.where(alive, alpha * before, torch.zeros_like(alpha))
    return torch.einsum("tsp,tsc->tpc", weight, rgb), weight.sum(1)
