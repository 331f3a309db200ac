"""The one place where camera conventions change.

Two conventions meet in this project:

* **nerfstudio / gsplat side** — OpenGL camera-to-world matrices (camera looks along -Z,
  +Y up), pixel intrinsics with pixel centres at +0.5 (the image spans [0, w] x [0, h]),
  world units as the dataparser left them (usually auto-scaled into [-1, 1]). gsplat
  takes world-to-camera matrices in OpenCV orientation and the same pixel intrinsics.
* **pixelSplat side** — OpenCV camera-to-world matrices (camera looks along +Z, +Y
  down), intrinsics normalised by image width/height (pixel centres at (i + 0.5) / w,
  same corner convention), and near/far planes from the official bounds rule.

Everything that crosses between the two goes through the functions here, and each
conversion has a round-trip test (``tests/test_cameras.py``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import reduce
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.errors import PixelSplatInputError

# Flips the y and z camera axes: OpenGL <-> OpenCV (an involution).
_GL_CV_FLIP = (1.0, -1.0, -1.0)


def homogenize_pose(pose: Float[Tensor, "*batch 3 4"] | Float[Tensor, "*batch 4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """Append the [0, 0, 0, 1] row to 3x4 poses (4x4 poses pass through)."""
    if pose.shape[-2:] == (4, 4):
        return pose
    if pose.shape[-2:] != (3, 4):
        raise ValueError(f"expected poses of shape [..., 3, 4] or [..., 4, 4], got {tuple(pose.shape)}")
    bottom = torch.zeros((*pose.shape[:-2], 1, 4), dtype=pose.dtype, device=pose.device)
    bottom[..., 0, 3] = 1
    return torch.cat((pose, bottom), dim=-2)


def opengl_to_opencv_c2w(c2w: Float[Tensor, "*batch 3|4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """nerfstudio/OpenGL camera-to-world -> OpenCV camera-to-world (4x4)."""
    c2w = homogenize_pose(c2w).clone()
    c2w[..., :3, :3] = c2w[..., :3, :3] * c2w.new_tensor(_GL_CV_FLIP)
    return c2w


def opencv_to_opengl_c2w(c2w: Float[Tensor, "*batch 3|4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """OpenCV camera-to-world -> nerfstudio/OpenGL camera-to-world (4x4)."""
    return opengl_to_opencv_c2w(c2w)  # the axis flip is its own inverse


def opencv_keypoints_to_pixels(points: Float[Tensor, "*batch 2"]) -> Float[Tensor, "*batch 2"]:
    """OpenCV feature positions (pixel centres at integers) -> this project's and nerfstudio's
    pixel coordinates (pixel centres at +0.5)."""
    return points + 0.5


def opengl_c2w_to_viewmat(c2w: Float[Tensor, "*batch 3|4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """nerfstudio/OpenGL camera-to-world -> gsplat world-to-camera (OpenCV axes)."""
    return opencv_c2w_to_viewmat(opengl_to_opencv_c2w(c2w))


def opencv_c2w_to_viewmat(c2w: Float[Tensor, "*batch 3|4 4"]) -> Float[Tensor, "*batch 4 4"]:
    """pixelSplat's OpenCV camera-to-world (rigid) -> gsplat world-to-camera: the inverse."""
    c2w_cv = homogenize_pose(c2w)
    rotation = c2w_cv[..., :3, :3]
    translation = c2w_cv[..., :3, 3:]
    viewmat = torch.zeros_like(c2w_cv)
    viewmat[..., :3, :3] = rotation.transpose(-1, -2)
    viewmat[..., :3, 3:] = -rotation.transpose(-1, -2) @ translation
    viewmat[..., 3, 3] = 1
    return viewmat


def normalize_intrinsics(
    k_pixels: Float[Tensor, "*batch 3 3"], width: int | Tensor, height: int | Tensor
) -> Float[Tensor, "*batch 3 3"]:
    """Pixel intrinsics -> intrinsics normalised by image size (pixelSplat).

    Both sides put pixel centres at +0.5 (corner convention), so this is a pure scaling.
    """
    k = k_pixels.clone()
    k[..., 0, :] = k[..., 0, :] / torch.as_tensor(width, dtype=k.dtype, device=k.device)[..., None]
    k[..., 1, :] = k[..., 1, :] / torch.as_tensor(height, dtype=k.dtype, device=k.device)[..., None]
    return k


def denormalize_intrinsics(
    k_normalized: Float[Tensor, "*batch 3 3"], width: int | Tensor, height: int | Tensor
) -> Float[Tensor, "*batch 3 3"]:
    """Normalised intrinsics -> pixel intrinsics (inverse of ``normalize_intrinsics``)."""
    k = k_normalized.clone()
    k[..., 0, :] = k[..., 0, :] * torch.as_tensor(width, dtype=k.dtype, device=k.device)[..., None]
    k[..., 1, :] = k[..., 1, :] * torch.as_tensor(height, dtype=k.dtype, device=k.device)[..., None]
    return k


def depth_for_disparity(
    extrinsics: Float[Tensor, "batch view 4 4"],
    intrinsics: Float[Tensor, "batch view 3 3"],
    image_shape: tuple[int, int],
    disparity: float,
    min_baseline: float = 1e-6,
) -> Float[Tensor, " batch"]:
    """Depth at which the widest context baseline moves a point by ``disparity`` pixels.

    This is the official pipeline's bounds rule: with ``disparity = near_disparity *
    min(h, w)`` it gives the near plane, with 0.5 the far plane. It only depends on ratios,
    so it is invariant to the scene's scale (near and far scale with the baseline).
    """
    origins = extrinsics[..., :3, 3]
    baselines = (origins[:, None] - origins[:, :, None]).norm(dim=-1).clip(min=min_baseline)
    baseline = reduce(baselines, "b v ov -> b", "max")
    h, w = image_shape
    pixel_size = 1 / torch.tensor((w, h), dtype=intrinsics.dtype, device=intrinsics.device)
    # Size of one pixel at depth 1, in world units, for each view and axis.
    pixel_size = torch.einsum("...ij,j->...i", intrinsics[..., :2, :2].inverse(), pixel_size)
    mean_pixel_size = reduce(pixel_size, "b v xy -> b", "mean")
    return baseline / (disparity * mean_pixel_size)


def official_near_far(
    extrinsics: Float[Tensor, "batch view 4 4"],
    intrinsics: Float[Tensor, "batch view 3 3"],
    image_shape: tuple[int, int],
    near_disparity: float = 3.0,
    far_disparity: float = 0.5,
) -> tuple[Float[Tensor, "batch view"], Float[Tensor, "batch view"]]:
    """Near and far planes of the official pixelSplat data pipeline, per context view."""
    v = extrinsics.shape[1]
    near = depth_for_disparity(extrinsics, intrinsics, image_shape, near_disparity * min(image_shape))
    far = depth_for_disparity(extrinsics, intrinsics, image_shape, far_disparity)
    return near[:, None].expand(-1, v).contiguous(), far[:, None].expand(-1, v).contiguous()


@dataclass
class ContextViews:
    """Context views ready for the encoder, in pixelSplat's conventions.

    ``scene_scale`` maps the caller's world units to the encoder's: the encoder sees
    translations multiplied by it (so the context baseline is 1), and its Gaussians must
    be mapped back with ``gaussians_to_caller_frame``.
    """

    image: Float[Tensor, "batch view 3 h w"]
    extrinsics: Float[Tensor, "batch view 4 4"]  # OpenCV camera-to-world, scaled
    intrinsics: Float[Tensor, "batch view 3 3"]  # normalised
    near: Float[Tensor, "batch view"]
    far: Float[Tensor, "batch view"]
    scene_scale: float
    # The photos at the resolution of their Gaussians (``gaussian_long_side``), uncropped,
    # with their own normalised intrinsics; None when the Gaussians are the encoder's.
    full_image: Float[Tensor, "batch view 3 height width"] | None = None
    full_intrinsics: Float[Tensor, "batch view 3 3"] | None = None


def validate_context_cameras(
    c2w: Float[Tensor, "view 4 4"], names: list[str] | None = None, method: str = "pixelSplat"
) -> None:
    """Raise a ``PixelSplatInputError`` that names the problem when the context cameras are
    unusable (``method`` names who needs them in the message)."""
    names = names or [f"view {i}" for i in range(c2w.shape[0])]
    if c2w.shape[0] < 2:
        raise PixelSplatInputError(
            f"{method} needs at least two context views, got {c2w.shape[0]} ({', '.join(names)}). "
            "Give a dataset with two or more training images."
        )
    for i, name in enumerate(names):
        if not torch.isfinite(c2w[i]).all():
            raise PixelSplatInputError(
                f"context view {name} has a non-finite camera pose (NaN or inf): check its transform."
            )
    origins = c2w[:, :3, 3]
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            baseline = (origins[i] - origins[j]).norm().item()
            scale = max(origins[i].norm().item(), origins[j].norm().item(), 1.0)
            if baseline <= 1e-6 * scale:
                raise PixelSplatInputError(
                    f"context views {names[i]} and {names[j]} have identical camera positions (baseline "
                    f"{baseline:.2e}): {method} triangulates depth from the baseline between the two views, "
                    "so pick two views taken from different positions."
                )


def _downscale(
    image: Float[Tensor, "view 3 h w"], k: Float[Tensor, "view 3 3"], long_side: int | None, minimum: int = 1
) -> tuple[Float[Tensor, "view 3 h2 w2"], Float[Tensor, "view 3 3"]]:
    """Resize so the long side is at most ``long_side`` (antialiased; the pixel grid's
    corners stay aligned, so pixel intrinsics scale exactly). Never upsamples."""
    h, w = image.shape[-2:]
    if long_side is None or max(h, w) <= long_side:
        return image, k
    factor = long_side / max(h, w)
    new_h, new_w = max(round(h * factor), minimum), max(round(w * factor), minimum)
    image = F.interpolate(image, (new_h, new_w), mode="bilinear", align_corners=False, antialias=True)
    k = k.clone()
    k[:, 0, :] *= new_w / w
    k[:, 1, :] *= new_h / h
    return image, k


def fit_view(
    image: Float[Tensor, "channel h w"], k: Float[Tensor, "3 3"], size: tuple[int, int], long_side: int | None
) -> tuple[Float[Tensor, "channel h2 w2"], Float[Tensor, "3 3"]]:
    """One view (pixel intrinsics ``k``) brought to the common ``size`` (h, w): resized
    (antialiased) to cover it and centre-cropped when its size differs, then downscaled to at
    most ``long_side`` pixels. The pixel grid's corners stay aligned, so ``k`` follows exactly."""
    k = k.clone()
    height, width = size
    if tuple(image.shape[-2:]) != (height, width):
        h, w = image.shape[-2:]
        scale = max(height / h, width / w)
        new_h, new_w = max(height, round(h * scale)), max(width, round(w * scale))
        image = F.interpolate(image[None], (new_h, new_w), mode="bilinear", align_corners=False, antialias=True)[0]
        k[0, :] *= new_w / w
        k[1, :] *= new_h / h
        row, col = (new_h - height) // 2, (new_w - width) // 2
        image = image[:, row : row + height, col : col + width]
        k[0, 2] -= col
        k[1, 2] -= row
    image, k = _downscale(image[None], k[None], long_side)
    return image[0], k[0]


def prepare_context(
    images: Float[Tensor, "view h w 3"],
    c2w_opengl: Float[Tensor, "view 3|4 4"],
    k_pixels: Float[Tensor, "view 3 3"],
    image_multiple: int,
    long_side: int | None = None,
    near_disparity: float = 3.0,
    names: list[str] | None = None,
    gaussian_long_side: int | None = None,
) -> ContextViews:
    """nerfstudio context views (images [0,1] HWC, OpenGL c2w, pixel K) -> encoder input.

    Images are resized so their long side is at most ``long_side`` (keeping the pixel
    grid's corner alignment, so intrinsics scale exactly), then centre-cropped to a
    multiple of ``image_multiple`` (intrinsics shift by the crop). Translations are scaled
    so the widest context baseline is 1, and near/far follow the official rule. With
    ``gaussian_long_side``, the photos are also kept uncropped at that long side (at most
    their own size) for native-resolution Gaussians (``full_image``, ``full_intrinsics``).
    """
    if images.ndim != 4 or images.shape[-1] != 3:
        raise PixelSplatInputError(f"context images must be [view, h, w, 3] RGB, got {tuple(images.shape)}")
    c2w = homogenize_pose(c2w_opengl.to(torch.float32))
    validate_context_cameras(c2w, names)
    if not torch.isfinite(images).all():
        raise PixelSplatInputError("context images contain NaN or inf values")
    k_full = k_pixels.to(torch.float32)
    full = images.permute(0, 3, 1, 2).to(torch.float32)
    image, k = _downscale(full, k_full, long_side, image_multiple)
    h, w = image.shape[-2:]

    crop_h, crop_w = (h // image_multiple) * image_multiple, (w // image_multiple) * image_multiple
    if crop_h == 0 or crop_w == 0:
        raise PixelSplatInputError(
            f"context images of {w}x{h} pixels are smaller than the encoder's {image_multiple}-pixel patch"
        )
    row, col = (h - crop_h) // 2, (w - crop_w) // 2
    image = image[:, :, row : row + crop_h, col : col + crop_w].clamp(0, 1)
    k = k.clone()
    k[:, 0, 2] -= col
    k[:, 1, 2] -= row

    extrinsics = opengl_to_opencv_c2w(c2w)
    origins = extrinsics[:, :3, 3]
    baseline = (origins[:, None] - origins[None]).norm(dim=-1).max().item()
    scene_scale = 1.0 / baseline
    extrinsics[:, :3, 3] = origins * scene_scale
    intrinsics = normalize_intrinsics(k, crop_w, crop_h)
    near, far = official_near_far(extrinsics[None], intrinsics[None], (crop_h, crop_w), near_disparity)
    full_image = full_intrinsics = None
    if gaussian_long_side is not None:
        full, k_full = _downscale(full, k_full, gaussian_long_side)
        full_image = full.clamp(0, 1)[None]
        full_intrinsics = normalize_intrinsics(k_full, full.shape[-1], full.shape[-2])[None]
    return ContextViews(
        image[None], extrinsics[None], intrinsics[None], near, far, scene_scale, full_image, full_intrinsics
    )


def to_caller_frame(values: Tensor, scene_scale: float) -> Tensor:
    """Undo ``prepare_context``'s scaling on encoder-world points, distances or depths
    (the frames differ by a scale only)."""
    return values / scene_scale


def encoder_to_caller_c2w(extrinsics: Float[Tensor, "*batch 4 4"], scene_scale: float) -> Float[Tensor, "*batch 4 4"]:
    """The encoder's OpenCV camera-to-world (translations scaled by ``scene_scale``) -> the
    caller's (nerfstudio's) OpenGL camera-to-world: undoes ``prepare_context``'s pose changes."""
    c2w = opencv_to_opengl_c2w(extrinsics)
    c2w[..., :3, 3] = to_caller_frame(c2w[..., :3, 3], scene_scale)
    return c2w


def caller_to_encoder_c2w(c2w_opengl: Float[Tensor, "*batch 3|4 4"], scene_scale: float) -> Float[Tensor, "*batch 4 4"]:
    """The caller's (nerfstudio's) OpenGL camera-to-world -> the encoder's OpenCV one, translations
    scaled by ``scene_scale``: ``prepare_context``'s pose changes, for cameras other than the context views."""
    c2w = opengl_to_opencv_c2w(homogenize_pose(c2w_opengl.to(torch.float32)))
    c2w[..., :3, 3] = c2w[..., :3, 3] * scene_scale
    return c2w


def normalized_to_pixels(xy: Float[Tensor, "*batch 2"], width: int, height: int) -> Float[Tensor, "*batch 2"]:
    """Image coordinates normalised by the image size (pixelSplat) -> pixels (x = column, y = row).
    Both put pixel centres at +0.5 (see ``normalize_intrinsics``), as Rerun and matplotlib's
    ``extent=(0, w, h, 0)`` do, so this is a pure scaling."""
    return xy * xy.new_tensor((width, height))


def gaussians_to_caller_frame(
    means: Float[Tensor, "*batch 3"], covariances: Float[Tensor, "*batch 3 3"], scene_scale: float
) -> tuple[Float[Tensor, "*batch 3"], Float[Tensor, "*batch 3 3"]]:
    """Undo ``prepare_context``'s scaling on predicted means and covariances."""
    return to_caller_frame(means, scene_scale), covariances / scene_scale**2


# The RE10K/ACID chunk format's camera rows: fx fy cx cy (normalised), two unused values,
# then the 3x4 OpenCV world-to-camera matrix, row-major.


def chunk_cameras_to_opencv(
    cameras: Float[Tensor, "n 18"],
) -> tuple[Float[Tensor, "n 4 4"], Float[Tensor, "n 3 3"]]:
    """Chunk camera rows -> (OpenCV camera-to-world [n, 4, 4], normalised K [n, 3, 3]), float32.

    The world-to-camera matrix is inverted in float64 so the round trip with
    :func:`opencv_to_chunk_cameras` is exact to float32 rounding.
    """
    if cameras.ndim != 2 or cameras.shape[1] != 18:
        raise ValueError(f"chunk cameras must be [n, 18], got {tuple(cameras.shape)}")
    cameras = cameras.to(torch.float64)
    n = cameras.shape[0]
    intrinsics = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    intrinsics[:, 0, 0], intrinsics[:, 1, 1], intrinsics[:, 0, 2], intrinsics[:, 1, 2] = cameras[:, :4].T
    w2c = torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)
    w2c[:, :3] = cameras[:, 6:].reshape(n, 3, 4)
    return torch.linalg.inv(w2c).to(torch.float32), intrinsics.to(torch.float32)


def opencv_to_chunk_cameras(
    extrinsics: Float[Tensor, "n 4 4"], intrinsics: Float[Tensor, "n 3 3"]
) -> Float[Tensor, "n 18"]:
    """(OpenCV camera-to-world, normalised K) -> chunk camera rows (float32).

    The format has no skew: a non-zero K[0, 1] is dropped.
    """
    n = extrinsics.shape[0]
    w2c = torch.linalg.inv(extrinsics.to(torch.float64))
    k = intrinsics.to(torch.float64)
    rows = torch.zeros(n, 18, dtype=torch.float64)
    rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3] = k[:, 0, 0], k[:, 1, 1], k[:, 0, 2], k[:, 1, 2]
    rows[:, 6:] = w2c[:, :3].reshape(n, 12)
    return rows.to(torch.float32)


# ----------------------------------------------------------------------------- Du et al.
# The wide-baseline renderer (pixelsplat_ns.widebaseline) takes square images, OpenCV
# camera-to-world matrices and intrinsics in pixels of the square image with pixel centres
# at INTEGER coordinates (the official code's convention: a pixel index is its centre).


@dataclass
class WideBaselineViews:
    """Context views ready for the wide-baseline network, in its official conventions.

    ``scene_scale`` maps the caller's world units to the network's (translations are
    multiplied by it); ``rays_to_network_frame`` and ``to_caller_frame`` go there and back.
    """

    images: Float[Tensor, "batch view 3 size size"]  # RGB in [0, 1]
    c2w: Float[Tensor, "batch view 4 4"]  # OpenCV camera-to-world, translations scaled
    intrinsics: Float[Tensor, "batch view 3 3"]  # pixels of the square image, centres at integers
    scene_scale: Float[Tensor, " batch"]


def square_crop_views(
    images: Float[Tensor, "batch view 3 h w"],
    c2w_opencv: Float[Tensor, "batch view 4 4"],
    k_pixels: Float[Tensor, "batch view 3 3"],
    size: int,
    baseline: float | None = 1.0,
) -> WideBaselineViews:
    """Centre-crop to the largest square (integer offset), resize to ``size`` (antialiased) and
    move the intrinsics (pixel centres at +0.5 on input) to the official integer-centre
    convention: ``f' = f s``, ``c' = (c - offset) s - 0.5``. With ``baseline``, translations are
    scaled so that the widest context baseline of each example is that long (the official
    loaders keep dataset units: ``None``)."""
    h, w = images.shape[-2:]
    side = min(h, w)
    row, col = (h - side) // 2, (w - side) // 2
    square = images[..., row : row + side, col : col + side]
    flat = square.flatten(0, 1)
    if side != size:
        flat = F.interpolate(flat, (size, size), mode="bilinear", align_corners=False, antialias=side > size)
    scale = size / side
    k = nerfstudio_to_widebaseline_intrinsics(k_pixels.to(torch.float32), (col, row), scale)
    c2w = homogenize_pose(c2w_opencv.to(torch.float32)).clone()
    origins = c2w[..., :3, 3]
    if baseline is None:
        scene_scale = torch.ones(c2w.shape[0], dtype=c2w.dtype, device=c2w.device)
    else:
        widest = (origins[:, :, None] - origins[:, None]).norm(dim=-1).flatten(1).amax(dim=1)
        scene_scale = baseline / widest.clamp(min=1e-12)
    c2w[..., :3, 3] = origins * scene_scale[:, None, None]
    return WideBaselineViews(flat.reshape(*images.shape[:2], 3, size, size).clamp(0, 1), c2w, k, scene_scale)


def widebaseline_context(
    images: Float[Tensor, "view h w 3"],
    c2w_opengl: Float[Tensor, "view 3|4 4"],
    k_pixels: Float[Tensor, "view 3 3"],
    size: int,
    baseline: float | None = 1.0,
    names: list[str] | None = None,
) -> WideBaselineViews:
    """nerfstudio context views (images [0,1] HWC, OpenGL c2w, pixel K with +0.5 centres) ->
    the wide-baseline network's input (a batch of one)."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise PixelSplatInputError(f"context images must be [view, h, w, 3] RGB, got {tuple(images.shape)}")
    c2w = homogenize_pose(c2w_opengl.to(torch.float32))
    validate_context_cameras(c2w, names, method="the wide-baseline renderer")
    if c2w.shape[0] != 2:
        raise PixelSplatInputError(f"the wide-baseline renderer takes exactly two context views, got {c2w.shape[0]}")
    if not torch.isfinite(images).all():
        raise PixelSplatInputError("context images contain NaN or inf values")
    return square_crop_views(
        images.permute(0, 3, 1, 2)[None].to(torch.float32),
        opengl_to_opencv_c2w(c2w)[None],
        k_pixels[None],
        size,
        baseline,
    )


def widebaseline_examples(
    images: Float[Tensor, "batch view 3 h w"],
    c2w_opencv: Float[Tensor, "batch view 4 4"],
    k_normalized: Float[Tensor, "batch view 3 3"],
    size: int,
    baseline: float | None = 1.0,
) -> WideBaselineViews:
    """Training examples in pixelSplat's conventions (OpenCV c2w, normalised K) -> the
    wide-baseline network's input."""
    h, w = images.shape[-2:]
    return square_crop_views(images, c2w_opencv, denormalize_intrinsics(k_normalized, w, h), size, baseline)


def rays_to_network_frame(origins: Float[Tensor, "*batch 3"], scene_scale: float | Tensor) -> Float[Tensor, "*batch 3"]:
    """World ray origins of the caller -> the scaled world of ``WideBaselineViews`` (a rigid
    frame up to scale: unit directions are unchanged)."""
    return origins * scene_scale


def ray_depth_to_z_depth(
    depth: Float[Tensor, "*batch"], directions: Float[Tensor, "*batch 3"], c2w_opengl: Float[Tensor, "3|4 4"]
) -> Float[Tensor, "*batch"]:
    """Distance along unit rays -> depth along the camera's viewing axis (what a depth image
    means to Rerun, gsplat's expected depth): the OpenGL camera looks along its -Z axis."""
    forward = -c2w_opengl[:3, 2]
    return depth * (directions @ forward)


def widebaseline_to_nerfstudio_camera(
    c2w: Float[Tensor, "*batch 4 4"], intrinsics: Float[Tensor, "*batch 3 3"], scene_scale: float | Tensor
) -> tuple[Float[Tensor, "*batch 4 4"], Float[Tensor, "*batch 3 3"]]:
    """A wide-baseline view's camera back in nerfstudio's conventions: OpenGL camera-to-world
    in the caller's world (translation divided by ``scene_scale``), pixel intrinsics of the
    square image with pixel centres at +0.5."""
    gl = opencv_to_opengl_c2w(c2w).clone()
    gl[..., :3, 3] = gl[..., :3, 3] / scene_scale
    return gl, widebaseline_to_nerfstudio_intrinsics(intrinsics, (0.0, 0.0), 1.0)


# --------------------------------------------------------------------------------------
# Du et al.'s cross-attention renderer (widebaseline/): pixel intrinsics of the square
# encoder image with pixel centres at *integer* coordinates (OpenCV keypoint convention).
# --------------------------------------------------------------------------------------


def widebaseline_normalize_intrinsics(
    k_pixels: Float[Tensor, "*batch 3 3"], image_size: int
) -> Float[Tensor, "*batch 3 3"]:
    """Integer-centre pixel intrinsics -> the official renderer's [0, 1]^2 image plane: both
    rows divided by the image side. Pixel centres stay at i / size (half a pixel off
    ``normalize_intrinsics``), as the official epipolar segments are computed."""
    k = k_pixels.clone()
    k[..., :2, :] = k[..., :2, :] / image_size
    return k


def widebaseline_plane_to_grid(xy: Float[Tensor, "*batch 2"]) -> Float[Tensor, "*batch 2"]:
    """Official image-plane points ([0, 1]^2) -> grid_sample units ([-1, 1]^2). The features
    are then read with align_corners=False, i.e. half a pixel off the projected point: the
    official quirk, kept for parity."""
    return 2 * xy - 1


def widebaseline_grid_to_plane(grid: Float[Tensor, "*batch 2"]) -> Float[Tensor, "*batch 2"]:
    """Inverse of ``widebaseline_plane_to_grid``; times the image side, a point of the
    [0, 1]^2 plane is in the intrinsics' integer-centre pixels again."""
    return (grid + 1) / 2


def widebaseline_grid_to_pixels(grid: Float[Tensor, "*batch 2"], image_size: int) -> Float[Tensor, "*batch 2"]:
    """Grid units -> integer-centre pixels in the align_corners=True convention ((g + 1) / 2 *
    (size - 1)), which the official code uses to unproject a sample and to look up
    cross-view features."""
    return (grid + 1) / 2 * (image_size - 1)


def widebaseline_pixels_to_grid(pixels: Float[Tensor, "*batch 2"], image_size: int) -> Float[Tensor, "*batch 2"]:
    """Inverse of ``widebaseline_grid_to_pixels``: pixels / (size - 1) * 2 - 1."""
    return pixels / (image_size - 1) * 2 - 1


def nerfstudio_to_widebaseline_intrinsics(
    k_pixels: Float[Tensor, "*batch 3 3"], crop_offset: tuple[float, float], scale: float
) -> Float[Tensor, "*batch 3 3"]:
    """nerfstudio pixel intrinsics (pixel centres at +0.5) of an image centre-cropped at
    integer ``crop_offset`` (x, y) and resized by ``scale`` -> the official renderer's
    intrinsics (pixel centres at integers): f' = f s, c' = (c - offset) s - 0.5."""
    k = k_pixels.clone()
    for axis in (0, 1):
        k[..., axis, axis] = k_pixels[..., axis, axis] * scale
        k[..., axis, 2] = (k_pixels[..., axis, 2] - crop_offset[axis]) * scale - 0.5
    return k


def widebaseline_to_nerfstudio_intrinsics(
    k_pixels: Float[Tensor, "*batch 3 3"], crop_offset: tuple[float, float], scale: float
) -> Float[Tensor, "*batch 3 3"]:
    """Inverse of ``nerfstudio_to_widebaseline_intrinsics``."""
    k = k_pixels.clone()
    for axis in (0, 1):
        k[..., axis, axis] = k_pixels[..., axis, axis] / scale
        k[..., axis, 2] = (k_pixels[..., axis, 2] + 0.5) / scale + crop_offset[axis]
    return k
