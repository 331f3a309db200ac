"""One pixel's path through the encoder, for inspection (viewer walkthrough, notebooks).

``trace_pixel`` gathers, for a pixel of a context view, what the encoder did with it: its
ray, the points sampled along its epipolar line in every other view (where they land in
that image, the 3D point and depth each stands for, the cross-attention each transformer
layer and head gave them: ``pixelsplat_ns.epipolar.trace``), the depth distribution over
buckets, and the Gaussian that came out. Everything is read from an :class:`EncoderOutput` computed with
``return_attention=True``; nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float
from torch import Tensor

from ..epipolar.trace import EpipolarTrace, trace_ray
from ..geometry import relative_disparity_to_depth, world_rays
from .encoder import EncoderOutput


@dataclass
class PixelTrace:
    view: int
    pixel: tuple[int, int]
    """(row, column) at full resolution."""
    ray_origin: Float[Tensor, " 3"]
    ray_direction: Float[Tensor, " 3"]
    """Unit direction of the pixel-centre ray (world)."""
    transformer_pixel: tuple[int, int] | None
    """(row, column) of the ray at the epipolar transformer's resolution (None without one)."""
    epipolar: list[EpipolarTrace]
    bucket_depths: Float[Tensor, "surface bucket"]
    """Depth of each bucket's centre (buckets are uniform in disparity between near and far)."""
    depth_pdf: Float[Tensor, "surface bucket"]
    depths: Float[Tensor, "surface sample"]
    """Depths the Gaussians of this pixel were placed at."""
    gaussian_indices: list[int]
    """Indices into ``output.gaussians`` of this pixel's Gaussians (per surface, sample)."""


def trace_pixel(
    output: EncoderOutput,
    extrinsics: Float[Tensor, "batch view 4 4"],
    intrinsics: Float[Tensor, "batch view 3 3"],
    near: Float[Tensor, "batch view"],
    far: Float[Tensor, "batch view"],
    image_shape: tuple[int, int],
    view: int,
    row: int,
    col: int,
    batch: int = 0,
) -> PixelTrace:
    """Everything the encoder computed for pixel (row, col) of context view ``view``.

    The inputs are the encoder's (OpenCV camera-to-world, normalised intrinsics)."""
    h, w = image_shape
    if not (0 <= row < h and 0 <= col < w):
        raise ValueError(f"pixel ({row}, {col}) is outside the {h}x{w} image")
    if not 0 <= view < output.depth_pdf.shape[1]:
        raise ValueError(f"view {view} does not exist: the encoder saw {output.depth_pdf.shape[1]} views")
    ray = row * w + col
    xy = torch.tensor(((col + 0.5) / w, (row + 0.5) / h), dtype=extrinsics.dtype, device=extrinsics.device)
    origin, direction = world_rays(xy, extrinsics[batch, view], intrinsics[batch, view])

    pdf = output.depth_pdf[batch, view, ray]  # surface bucket
    buckets = pdf.shape[-1]
    centres = (torch.arange(buckets, dtype=pdf.dtype, device=pdf.device) + 0.5) / buckets
    bucket_depths = relative_disparity_to_depth(centres, near[batch, view], far[batch, view]).expand_as(pdf)
    surfaces, samples = output.depths.shape[-2:]
    first = (view * h * w + ray) * surfaces * samples  # Gaussians are ordered (view, row, column, surface, sample)

    epipolar, low_pixel = [], None
    sampling = output.sampling
    if sampling is not None:
        hd, wd = sampling.shape
        low_pixel = (row * hd // h, col * wd // w)
        epipolar = trace_ray(sampling, output.attention, batch, view, low_pixel[0] * wd + low_pixel[1])
    return PixelTrace(
        view=view,
        pixel=(row, col),
        ray_origin=origin,
        ray_direction=direction,
        transformer_pixel=low_pixel,
        epipolar=epipolar,
        bucket_depths=bucket_depths,
        depth_pdf=pdf,
        depths=output.depths[batch, view, ray],
        gaussian_indices=list(range(first, first + surfaces * samples)),
    )
