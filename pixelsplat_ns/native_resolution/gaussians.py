"""Pixel-aligned Gaussians at the context photos' own resolution.

The encoder runs at its input size (the scale its checkpoint was trained at, e.g. 96x64 for a
384x256 photo with the bundled encoder; 512 px long side otherwise) and predicts one Gaussian
per *encoder* pixel. Rendered at the
photos' own resolution those Gaussians each cover several output pixels, so every render
is a smear, even at the context cameras. Here every full-resolution pixel gets its own
Gaussian instead:

* depth and opacity: the encoder's, carried to the pixel by joint bilateral upsampling
  guided by the full-resolution photo (``upsampling.py``), depth as inverse z-depth; with two
  views the depth can then be refined where the two photos agree (``stereo.py``, opt-in);
* colour: the pixel's own colour, so its camera sees its photo again; with two views, towards
  the other camera the colour that photo shows where the Gaussian lands (``colours.py``);
* shape: aligned with its camera's axes, with standard deviations ``scale`` times the
  pixel's footprint at its depth across the ray and their mean along it (the official
  adapter's footprint rule, at this resolution), so that seen from its camera each Gaussian
  covers its pixel and little more.

The result is in the encoder's world frame (``ContextViews``); callers map it back with
``cameras.gaussians_to_caller_frame`` like the encoder's own Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Float, Int64
from torch import Tensor

from pixelsplat_ns.cameras import ContextViews
from pixelsplat_ns.encoder import EncoderOutput
from pixelsplat_ns.gaussians import Gaussians, build_covariance, matrix_to_quaternion
from pixelsplat_ns.geometry import camera_directions, pixel_centers, pixel_footprint, transform
from pixelsplat_ns.rendering.sh import SH_C0

from .colours import two_view_harmonics
from .stereo import refine_depths
from .upsampling import joint_bilateral_upsample


@dataclass
class NativeGaussians:
    """Gaussians of every full-resolution context pixel, with where each came from."""

    gaussians: Gaussians
    """Ordered (view, row, column) of the full-resolution grid, flattened per batch element."""
    encoder_pixels: Int64[Tensor, "batch gaussian 3"]
    """(view, row, column) of the encoder pixel nearest to each Gaussian's pixel."""
    depths: Float[Tensor, "batch view height width"]
    """Upsampled depth (distance along the unit ray, encoder units)."""


def most_opaque_sample(
    output: EncoderOutput, image_shape: tuple[int, int]
) -> tuple[Float[Tensor, "batch view h w"], Float[Tensor, "batch view h w"]]:
    """(depth, opacity) per encoder pixel: of its surfaces and samples, the most opaque one."""
    h, w = image_shape
    _b, v, _, surfaces, samples = output.depths.shape
    depths = rearrange(output.depths, "b v r srf spp -> b v r (srf spp)")
    opacities = rearrange(
        output.gaussians.opacities, "b (v r srf spp) -> b v r (srf spp)", v=v, srf=surfaces, spp=samples
    )
    best = opacities.argmax(dim=-1, keepdim=True)
    depth = depths.gather(-1, best)[..., 0]
    opacity = opacities.gather(-1, best)[..., 0]
    shape = {"h": h, "w": w}
    return rearrange(depth, "b v (h w) -> b v h w", **shape), rearrange(opacity, "b v (h w) -> b v h w", **shape)


def _forward(intrinsics: Float[Tensor, "batch 3 3"], shape: tuple[int, int]) -> Float[Tensor, "batch h w"]:
    """z component of each pixel's unit ray: distance along the ray times it is z-depth."""
    xy = pixel_centers(*shape, intrinsics.device, intrinsics.dtype)
    return camera_directions(xy, intrinsics[:, None, None])[..., 2]


def encoder_positions(
    encoder_intrinsics: Float[Tensor, "3 3"],
    encoder_shape: tuple[int, int],
    full_intrinsics: Float[Tensor, "3 3"],
    full_shape: tuple[int, int],
) -> Float[Tensor, "height width 2"]:
    """Each full-resolution pixel centre in encoder pixel coordinates (x, y): the same ray
    projected with the encoder's intrinsics (both grids are views of one camera)."""
    height, width = full_shape
    xy = pixel_centers(height, width, full_intrinsics.device, full_intrinsics.dtype)
    homogeneous = torch.cat((xy, torch.ones_like(xy[..., :1])), dim=-1)
    mapping = encoder_intrinsics @ torch.linalg.inv(full_intrinsics)
    projected = homogeneous @ mapping.T
    h, w = encoder_shape
    return projected[..., :2] / projected[..., 2:] * projected.new_tensor((w, h))


def native_resolution_gaussians(
    output: EncoderOutput,
    views: ContextViews,
    scale: float = 0.25,
    opacity_gain: float = 100.0,
    two_view_colours: bool = True,
    stereo: bool = False,
) -> NativeGaussians:
    """One Gaussian per full-resolution context pixel (``views.full_image``).

    ``scale``: standard deviation in units of the pixel's footprint at its depth.
    ``opacity_gain``: the encoder's opacities are multiplied by it (clamped to 0.99): a
    single layer of Gaussians per view must be near-opaque to give its photo back, while
    pixelSplat's opacities are a depth bucket's probability (divided by its samples per
    pixel), which is low wherever the encoder is unsure.
    ``two_view_colours``: with two views, each Gaussian's colour is its own pixel's towards its
    camera and the other photo's towards the other camera (degree-1 SH, ``colours.py``).
    ``stereo``: with two views, the upsampled depths are refined where the two photos agree
    (``stereo.py``). The defaults are ``ns-train pixelsplat``'s per-Gaussian ones (the
    backdrop and the colour correction are separate steps).
    """
    if views.full_image is None or views.full_intrinsics is None:
        raise ValueError(
            "native-resolution Gaussians need ContextViews with full_image (prepare_context(gaussian_long_side=...))"
        )
    b, v, _, h, w = views.image.shape
    height, width = views.full_image.shape[-2:]
    depth, opacity = most_opaque_sample(output, (h, w))
    view_depths, view_opacities, view_rays, view_positions = [], [], [], []
    for view in range(v):
        positions = torch.stack(
            [
                encoder_positions(views.intrinsics[i, view], (h, w), views.full_intrinsics[i, view], (height, width))
                for i in range(b)
            ]
        )
        # Inverse z-depth is affine in the image over a plane, so interpolating it (rather
        # than the distance along each ray) is exact on planes, also past the encoder's crop.
        z_low = depth[:, view] * _forward(views.intrinsics[:, view], (h, w))
        low = torch.stack((1 / z_low, opacity[:, view]), dim=1)
        upsampled = torch.cat(
            [
                joint_bilateral_upsample(
                    low[i : i + 1], views.image[i : i + 1, view], views.full_image[i : i + 1, view], positions[i]
                )
                for i in range(b)
            ]
        )
        # The full-resolution rays in the camera frame, once: their z turns z-depth into
        # distance along the ray, and the camera's pose turns them into world rays.
        xy = pixel_centers(height, width, upsampled.device, upsampled.dtype)
        camera_rays = camera_directions(xy, views.full_intrinsics[:, view, None, None])  # b h w 3
        view_depths.append(1 / (upsampled[:, 0] * camera_rays[..., 2]))  # along the ray
        view_opacities.append((upsampled[:, 1] * opacity_gain).clamp(0.0, 0.99))
        view_rays.append(camera_rays)
        view_positions.append(positions)
    all_depths = torch.stack(view_depths, dim=1)  # b v h w
    if stereo and v == 2:
        refined = [
            refine_depths(views.full_image[i], all_depths[i], views.extrinsics[i], views.full_intrinsics[i])
            for i in range(b)
        ]
        # Up to reach times nearer: never in front of the camera's near plane, where pruning would drop it.
        all_depths = torch.maximum(torch.stack(refined), views.near[:, :, None, None])

    means, colours, opacities, scales, rotations, pixels = [], [], [], [], [], []
    for view in range(v):
        view_depth, camera_rays, positions = all_depths[:, view], view_rays[view], view_positions[view]
        extrinsics = views.extrinsics[:, view, None, None]  # b 1 1 4 4
        directions = transform(extrinsics, camera_rays, 0.0)
        origins = extrinsics[..., :3, 3]
        means.append(rearrange(origins + directions * view_depth[..., None], "b h w xyz -> b (h w) xyz"))

        footprint = pixel_footprint(views.full_intrinsics[:, view], (height, width))  # b 2 at depth 1
        footprint = torch.cat((footprint, footprint.mean(dim=-1, keepdim=True)), dim=-1)  # along the ray: their mean
        view_scales = scale * footprint[:, None, None, :] * view_depth[..., None]
        scales.append(rearrange(view_scales, "b h w xyz -> b (h w) xyz"))
        rotation = matrix_to_quaternion(views.extrinsics[:, view, :3, :3])  # the camera's axes, wxyz
        rotations.append(rotation[:, None, :].expand(b, height * width, 4))

        colour = rearrange(views.full_image[:, view], "b c h w -> b (h w) c")
        colours.append(((colour - 0.5) / SH_C0)[..., None])  # official basis, degree 0: [b n 3 1]
        opacities.append(rearrange(view_opacities[view], "b h w -> b (h w)"))

        nearest = positions.floor().long()
        col = nearest[..., 0].clamp(0, w - 1)
        row = nearest[..., 1].clamp(0, h - 1)
        pixels.append(rearrange(torch.stack((torch.full_like(row, view), row, col), dim=-1), "b h w c -> b (h w) c"))

    harmonics = torch.cat(colours, dim=1)
    if two_view_colours and v == 2:
        all_means, sources = torch.cat(means, dim=1), torch.cat(pixels, dim=1)[..., 0]
        own = harmonics[..., 0] * SH_C0 + 0.5
        harmonics = torch.stack(
            [
                two_view_harmonics(
                    all_means[i],
                    sources[i],
                    own[i],
                    views.full_image[i],
                    all_depths[i],
                    views.extrinsics[i],
                    views.full_intrinsics[i],
                )
                for i in range(b)
            ]
        )
    scales_all = torch.cat(scales, dim=1)
    rotations_all = torch.cat(rotations, dim=1)
    gaussians = Gaussians(
        means=torch.cat(means, dim=1),
        covariances=build_covariance(scales_all, rotations_all),
        harmonics=harmonics,
        opacities=torch.cat(opacities, dim=1),
        scales=scales_all,
        rotations=rotations_all,
    )
    return NativeGaussians(gaussians, torch.cat(pixels, dim=1), all_depths)
