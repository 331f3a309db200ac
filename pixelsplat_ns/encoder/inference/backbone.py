"""The backbone and its projection at inference: projection(ReLU(backbone(images))) built
per image in bands of rows. Each band sums the backbone's terms (``levels`` upsampled,
``patch_terms`` repeated) and is projected at once, so the wide [n, d_out, h, w] map of
the network's ``FullResolutionFeatures.forward`` never exists in memory."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from jaxtyping import Float, Int64
from torch import Tensor, nn

from ..backbone import FullResolutionFeatures
from .resnet import pointwise_conv

ROW_BAND = 32


def _linear_taps(
    out_size: int, in_size: int, start: int, stop: int, device: torch.device, dtype: torch.dtype
) -> tuple[Int64[Tensor, " n"], Int64[Tensor, " n"], Float[Tensor, " n"]]:
    """Bilinear (align_corners=True) taps for output positions [start, stop): (lower index,
    upper index, upper weight), as PyTorch's upsampling computes them."""
    scale = (in_size - 1) / (out_size - 1) if out_size > 1 else 0.0
    source = torch.arange(start, stop, device=device, dtype=dtype) * torch.tensor(scale, dtype=dtype)
    lower = source.long().clamp(max=in_size - 1)
    upper = (lower + 1).clamp(max=in_size - 1)
    return lower, upper, source - lower


def _upsampled_band(
    groups: list[list[tuple[Tensor, nn.Conv2d]]], size: tuple[int, int], top: int, bottom: int, device: torch.device
) -> Float[Tensor, "d_out rows w"]:
    """Rows [top, bottom) of the sum of the upsampled, projected levels (one image)."""
    h, w = size
    band = None
    for group in groups:
        h_in, w_in = group[0][0].shape[-2:]
        lower, upper, weight_y = _linear_taps(h, h_in, top, bottom, device, group[0][0].dtype)
        first, last = int(lower[0]), int(upper[-1]) + 1
        rows = None
        for stage, conv in group:  # only the source rows this band reads
            projected = pointwise_conv(stage[:, :, first:last], conv.weight, conv.bias)[0].contiguous()
            rows = projected if rows is None else rows.add_(projected)
        below, above = rows.index_select(1, lower - first), rows.index_select(1, upper - first)
        vertical = torch.lerp(below, above, weight_y[None, :, None])
        # Horizontally, the rows are plain full-width linear upsampling (the 1-D kernel
        # gives the same values as the 2-D one, in half the time).
        c, rows_out, _ = vertical.shape
        upsampled = F.interpolate(vertical.reshape(1, c * rows_out, w_in), w, mode="linear", align_corners=True).view(
            c, rows_out, w
        )
        band = upsampled if band is None else band.add_(upsampled)
    return band


def project_features(
    backbone: FullResolutionFeatures,
    images: Float[Tensor, "n 3 h w"],
    projection: nn.Linear,
    keep_features: bool = False,
) -> tuple[Float[Tensor, "n d_feature h w"], Float[Tensor, "n d_out h w"] | None]:
    """projection(ReLU(backbone(images))) channels-first, computed band by band; with
    ``keep_features`` also backbone(images) (which then does exist in memory)."""
    n, _, h, w = images.shape
    device = images.device
    patch_terms = backbone.patch_terms(images)  # all images at once (a transformer batches well)
    out = images.new_empty((n, projection.out_features, h, w))
    kept = images.new_empty((n, backbone.d_out, h, w)) if keep_features else None
    for i in range(n):
        groups = backbone.levels(images[i : i + 1])
        for top in range(0, h, ROW_BAND):
            bottom = min(top + ROW_BAND, h)
            band = _upsampled_band(groups, (h, w), top, bottom, device)
            for term in patch_terms:
                p = h // term.shape[2]
                patches = term[i, :, top // p : -(-bottom // p), 0, :, 0]  # c, patch rows, w/p
                patches = patches.repeat_interleave(p, dim=1)[:, top % p : top % p + bottom - top]
                band.view(backbone.d_out, bottom - top, w // p, p).add_(patches[..., None])
            if kept is not None:
                kept[i, :, top:bottom] = band
            band.relu_()
            projected = torch.addmm(projection.bias[:, None], projection.weight, band.view(backbone.d_out, -1))
            out[i, :, top:bottom] = projected.view(-1, bottom - top, w)
            del band, projected
        del groups
    return out, kept
