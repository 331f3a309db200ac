"""Procedural training scenes with exact geometry, written as nerfstudio scene folders.

A scene is a room (back wall, floor, optionally side walls and a ceiling) holding a few
textured boxes and panels in front of the back wall. Every surface is a dense grid of
small flat Gaussians (one per texel, opacity 1, SH degree 0) rendered with the project's
rasteriser (:func:`pixelsplat_ns.rendering.rasterize`), so images, cameras and geometry
agree: camera conventions exactly, surface positions to about half an output pixel (the
front-to-back compositing of coplanar opaque Gaussians pulls a slanted surface's texture
slightly towards its nearer side; see :func:`render_frames`). Textures are crops of the caller's photographs mixed with procedural
patterns (multi-scale noise, stripes, checkers, gradients); nothing is downloaded.

Cameras follow a smooth arc of 30-90 degrees around the scene's centre with some height,
distance and roll variation, like a hand-held capture: frames ``i`` and ``i + k`` span
small to wide baselines. Everything is a deterministic function of the seed (and the
photos given): the same seed writes the same bytes.

World frame: +Y up, the back wall faces +Z, cameras sit at +Z looking towards -Z.

    scene = build_scene(7, ProceduralConfig(), texture_image_files([Path("photos")]))
    images = render_frames(scene)  # [n, h, w, 3] in [0, 1]
    save_scene_folder(Path("scenes/scene_00007"), scene, images)

or in one call: ``write_scene(Path("scenes/scene_00007"), 7)``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange, reduce, repeat
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from pixelsplat_ns.cameras import (
    denormalize_intrinsics,
    normalize_intrinsics,
    opencv_to_opengl_c2w,
    opengl_c2w_to_viewmat,
)
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.gaussians import matrix_to_quaternion
from pixelsplat_ns.io import current_umask, save_image
from pixelsplat_ns.rendering import rasterize
from pixelsplat_ns.rendering.projection import quaternion_to_matrix
from pixelsplat_ns.rendering.sh import SH_C0

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
Seed = int | Sequence[int]


@dataclass(frozen=True)
class ProceduralConfig:
    """How procedural scenes are drawn. Ranges are (low, high), sampled uniformly per scene."""

    image_shape: tuple[int, int] = (128, 128)
    """(height, width) of the frames in pixels."""
    num_frames: int = 24
    """Frames along the camera arc (capture order)."""
    arc_degrees: tuple[float, float] = (30.0, 90.0)
    """Total angle swept by the camera arc around the scene's centre."""
    fov_degrees: tuple[float, float] = (45.0, 75.0)
    """Horizontal field of view of the pinhole camera."""
    num_objects: tuple[int, int] = (2, 6)
    """Boxes and panels in front of the back wall."""
    side_walls_probability: float = 0.6
    """Chance that the room has side walls (otherwise the background shows at the sides)."""
    ceiling_probability: float = 0.5
    """Chance that the room has a ceiling (otherwise the background shows above the walls)."""
    photo_probability: float = 0.6
    """Chance that a surface is textured with a photo crop (when photos are given)."""
    max_gaussians: int = 250_000
    """Texel budget of the whole scene (one Gaussian per texel); texels are spread so each
    surface gets about the same density per solid angle seen from the cameras."""
    footprint: float = 0.7
    """Gaussian standard deviation in the plane, in texel spacings (0.7 leaves no holes)."""
    supersample: int = 2
    """Frames are rendered this many times larger and box-filtered down (antialiasing)."""

    def __post_init__(self) -> None:
        minimums = {  # name: (value, smallest allowed)
            "image height": (self.image_shape[0], 1),
            "image width": (self.image_shape[1], 1),
            "num_frames": (self.num_frames, 2),
            "max_gaussians": (self.max_gaussians, 1),
            "supersample": (self.supersample, 1),
        }
        for name, (value, minimum) in minimums.items():
            if value < minimum:
                raise PixelSplatInputError(f"{name} must be at least {minimum}, got {value}")
        if self.footprint <= 0:
            raise PixelSplatInputError(f"footprint must be positive, got {self.footprint}")
        if self.num_objects[0] < 0 or self.num_objects[1] < self.num_objects[0]:
            raise PixelSplatInputError(f"num_objects must be a range (low <= high, low >= 0), got {self.num_objects}")


@dataclass
class Surface:
    """A textured rectangle: texel ``(i, j)`` is centred at
    ``corner + (j + 0.5) / cols * size[0] * u + (i + 0.5) / rows * size[1] * v``."""

    name: str
    corner: Float[np.ndarray, "3"]
    u: Float[np.ndarray, "3"]
    """Unit vector along the texture's columns (image right)."""
    v: Float[np.ndarray, "3"]
    """Unit vector along the texture's rows (image down), orthogonal to ``u``."""
    size: tuple[float, float]
    """Extent along ``u`` and ``v`` in world units."""
    texture: Float[np.ndarray, "rows cols 3"] | None = None
    """Shaded colours in [0, 1], one per texel (and Gaussian)."""

    @property
    def normal(self) -> Float[np.ndarray, "3"]:
        return np.cross(self.u, self.v)

    @property
    def centre(self) -> Float[np.ndarray, "3"]:
        return self.corner + 0.5 * self.size[0] * self.u + 0.5 * self.size[1] * self.v


@dataclass
class CameraPath:
    """The frames' cameras, in nerfstudio's conventions."""

    c2w: Float[np.ndarray, "n 4 4"]
    """OpenGL camera-to-world (camera looks along -Z, +Y up)."""
    k: Float[np.ndarray, "3 3"]
    """Pixel intrinsics shared by all frames; pixel centres at +0.5."""
    image_shape: tuple[int, int]
    """(height, width)."""


@dataclass
class ProceduralScene:
    """Everything a procedural scene is made of (see :func:`build_scene`)."""

    seed: tuple[int, ...]
    surfaces: list[Surface]
    cameras: CameraPath
    background: Float[np.ndarray, "3"]
    """Colour where no surface is hit (sky above wall-less or ceiling-less rooms)."""
    arc_degrees: float
    fov_degrees: float


@dataclass
class SurfaceGaussians:
    """The surfaces as Gaussians, in :func:`rasterize`'s (gsplat's) layout."""

    means: Float[Tensor, "n 3"]
    quats: Float[Tensor, "n 4"]
    scales: Float[Tensor, "n 3"]
    opacities: Float[Tensor, " n"]
    sh: Float[Tensor, "n 1 3"]
    """Degree-0 SH in gsplat's basis: colour = 0.5 + SH_C0 * sh."""


# --------------------------------------------------------------------------------------
# Textures
# --------------------------------------------------------------------------------------


def texture_image_files(paths: Sequence[Path]) -> list[Path]:
    """The readable images among ``paths`` (files, or folders searched recursively), in a
    fixed order. Raises PixelSplatInputError naming a path that does not exist or holds
    no readable image."""
    found: list[Path] = []
    for path in map(Path, paths):
        if not path.exists():
            raise PixelSplatInputError(f"texture path {path} does not exist")
        candidates = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        readable = [p for p in candidates if p.suffix.lower() in IMAGE_SUFFIXES and _is_readable_image(p)]
        if not readable:
            raise PixelSplatInputError(f"texture path {path} holds no readable image ({', '.join(IMAGE_SUFFIXES)})")
        found.extend(readable)
    return found


def _is_readable_image(path: Path) -> bool:
    try:
        with Image.open(path) as image:
            image.verify()
        return True
    except Exception:  # PIL raises many types for broken files
        return False


@lru_cache(maxsize=32)
def read_photo(path: Path, max_side: int = 512) -> Image.Image:
    """An RGB photo, downscaled so its long side is at most ``max_side`` (cached)."""
    with Image.open(path) as image:
        image = image.convert("RGB")
    factor = max_side / max(image.size)
    if factor < 1:
        size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
        image = image.resize(size, Image.Resampling.BICUBIC)
    return image


def photo_texture(
    rng: np.random.Generator, photo: Image.Image, rows: int, cols: int
) -> Float[np.ndarray, "rows cols 3"]:
    """A random crop of ``photo`` with the texture's aspect ratio, resampled to rows x cols."""
    aspect = cols / rows
    width, height = (
        (photo.height * aspect, photo.height)
        if photo.width / photo.height > aspect
        else (photo.width, photo.width / aspect)
    )
    scale = rng.uniform(0.35, 1.0)
    width, height = width * scale, height * scale
    x0, y0 = rng.uniform(0, photo.width - width), rng.uniform(0, photo.height - height)
    crop = photo.resize((cols, rows), Image.Resampling.BICUBIC, box=(x0, y0, x0 + width, y0 + height))
    return np.asarray(crop, dtype=np.float64) / 255.0


def _smooth_noise(
    rng: np.random.Generator, rows: int, cols: int, cells: int, channels: int
) -> Float[np.ndarray, "rows cols c"]:
    """Random values on a coarse grid (about ``cells`` across), bicubically upsampled."""
    grid_h = max(2, round(cells * rows / max(rows, cols)))
    grid_w = max(2, round(cells * cols / max(rows, cols)))
    coarse = torch.from_numpy(rng.uniform(-1, 1, (1, channels, grid_h, grid_w)))
    fine = F.interpolate(coarse, size=(rows, cols), mode="bicubic", align_corners=False)
    return rearrange(fine[0], "c h w -> h w c").numpy()


def procedural_texture(
    rng: np.random.Generator, rows: int, cols: int, kind: str | None = None
) -> Float[np.ndarray, "rows cols 3"]:
    """A procedural texture: ``noise`` (multi-scale coloured), ``stripes``, ``checkers`` or
    ``gradient`` (random kind when None), with a little grain so no area is flat."""
    kind = kind or str(rng.choice(["noise", "stripes", "checkers", "gradient"]))
    colours = rng.uniform(0.05, 0.95, (3, 3))
    i, j = np.meshgrid(np.arange(rows) + 0.5, np.arange(cols) + 0.5, indexing="ij")
    angle = rng.uniform(0, np.pi)
    along = j * np.cos(angle) + i * np.sin(angle)  # texels along a random direction
    if kind == "noise":
        octaves = [_smooth_noise(rng, rows, cols, 2**octave, 1) * 0.6**octave for octave in range(1, 6)]
        t = np.clip(0.5 + 0.6 * sum(octaves), 0, 1)
        texture = colours[0] * (1 - t) + colours[1] * t + 0.15 * _smooth_noise(rng, rows, cols, 16, 3)
    elif kind == "stripes":
        period = rng.uniform(3, 24)
        count = int(rng.integers(2, 4))
        texture = colours[(np.floor(along / period).astype(int) % count)]
    elif kind == "checkers":
        cell = rng.uniform(3, 16)
        across = -j * np.sin(angle) + i * np.cos(angle)
        parity = (np.floor(along / cell) + np.floor(across / cell)).astype(int) % 2
        texture = colours[parity]
    elif kind == "gradient":
        t = (along - along.min()) / max(np.ptp(along), 1e-9)
        texture = colours[0] * (1 - t[..., None]) + colours[1] * t[..., None]
        texture = texture + 0.1 * _smooth_noise(rng, rows, cols, 6, 3)
    else:
        raise ValueError(f"unknown texture kind {kind!r}")
    texture = texture + rng.normal(0, 0.025, (rows, cols, 3))
    return np.clip(texture, 0, 1)


# --------------------------------------------------------------------------------------
# Cameras and geometry
# --------------------------------------------------------------------------------------


def _normalize(vector: np.ndarray) -> np.ndarray:
    return vector / np.linalg.norm(vector, axis=-1, keepdims=True)


def camera_path(rng: np.random.Generator, config: ProceduralConfig) -> tuple[CameraPath, float, float]:
    """A smooth arc of cameras around a point near the origin, looking at it.

    Returns (cameras, arc in degrees, horizontal field of view in degrees).
    """
    h, w = config.image_shape
    fov = rng.uniform(*config.fov_degrees)
    focal = 0.5 * w / math.tan(math.radians(fov) / 2)
    k = np.array([[focal, 0.0, w / 2], [0.0, focal, h / 2], [0.0, 0.0, 1.0]])

    arc = rng.uniform(*config.arc_degrees)
    limit = max(0.0, 50.0 - arc / 2)  # keep every camera within 50 degrees of the back wall's normal
    t = np.linspace(0.0, 1.0, config.num_frames)
    if rng.random() < 0.5:
        t = t[::-1]
    azimuth = np.radians(rng.uniform(-limit, limit) + arc * (t - 0.5))

    def wobble(amplitude: float) -> np.ndarray:
        return amplitude * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * t + rng.uniform(0, 2 * np.pi))

    radius = rng.uniform(2.6, 3.6) * (1 + wobble(rng.uniform(0.0, 0.12)))
    height = rng.uniform(0.1, 0.9) + wobble(rng.uniform(0.0, 0.25))
    roll = np.radians(wobble(rng.uniform(0.0, 4.0)))
    eye = np.stack((radius * np.sin(azimuth), height, radius * np.cos(azimuth)), axis=-1)
    target = np.array([rng.uniform(-0.25, 0.25), rng.uniform(-0.35, 0.1), rng.uniform(-0.3, 0.3)])

    # OpenCV camera axes: x right, y down, z forward (towards the target), then roll.
    forward = _normalize(target - eye)
    right = _normalize(np.cross(forward, np.array([0.0, 1.0, 0.0])))
    down = np.cross(forward, right)
    cos, sin = np.cos(roll)[:, None], np.sin(roll)[:, None]
    right, down = cos * right + sin * down, cos * down - sin * right
    c2w_cv = repeat(np.eye(4), "i j -> n i j", n=len(t)).copy()
    c2w_cv[:, :3, :3] = np.stack((right, down, forward), axis=-1)
    c2w_cv[:, :3, 3] = eye
    c2w = opencv_to_opengl_c2w(torch.from_numpy(c2w_cv)).numpy()
    return CameraPath(c2w, k, (h, w)), float(arc), float(fov)


def _box_faces(name: str, centre: np.ndarray, axes: np.ndarray, half: np.ndarray, skip_bottom: bool) -> list[Surface]:
    """The faces of a box (``axes``: rotation matrix whose columns are the box's axes),
    each with its outward normal ``u x v``; the bottom face (-axis 1) is left out on request."""
    faces = []
    for axis in range(3):
        a, b = (axis + 1) % 3, (axis + 2) % 3
        for sign in (1.0, -1.0):
            if skip_bottom and axis == 1 and sign < 0:
                continue
            u, v, su, sv = (
                (axes[:, a], axes[:, b], half[a], half[b]) if sign > 0 else (axes[:, b], axes[:, a], half[b], half[a])
            )
            face_centre = centre + sign * half[axis] * axes[:, axis]
            corner = face_centre - su * u - sv * v
            faces.append(Surface(f"{name}_face{axis}{'+' if sign > 0 else '-'}", corner, u, v, (2 * su, 2 * sv)))
    return faces


def _rotation(quaternion: Float[np.ndarray, "4"]) -> Float[np.ndarray, "3 3"]:
    """wxyz quaternion -> rotation matrix (float64, gsplat's convention)."""
    return quaternion_to_matrix(torch.from_numpy(quaternion)).numpy()


def room_surfaces(rng: np.random.Generator, config: ProceduralConfig, eyes: np.ndarray) -> tuple[list[Surface], dict]:
    """Back wall (z = -back), floor (y = -floor), optional side walls (x = +-half_width) and
    ceiling (y = top), enclosing every camera. Returns the surfaces and the room's bounds."""
    back, floor, top = rng.uniform(1.4, 2.4), rng.uniform(0.7, 1.1), rng.uniform(1.7, 2.5)
    side_walls = rng.random() < config.side_walls_probability
    ceiling = rng.random() < config.ceiling_probability
    reach = np.abs(eyes[:, 0]).max()
    half_width = reach + (rng.uniform(0.4, 1.2) if side_walls else rng.uniform(1.0, 2.5))
    front = eyes[:, 2].max() + 0.3
    x, y, z = np.eye(3)
    width, depth, tall = 2 * half_width, front + back, top + floor
    surfaces = [
        Surface("back_wall", np.array([-half_width, top, -back]), x, -y, (width, tall)),
        Surface("floor", np.array([-half_width, -floor, -back]), x, z, (width, depth)),
    ]
    if side_walls:
        surfaces.append(Surface("left_wall", np.array([-half_width, top, front]), -z, -y, (depth, tall)))
        surfaces.append(Surface("right_wall", np.array([half_width, top, -back]), z, -y, (depth, tall)))
    if ceiling:
        surfaces.append(Surface("ceiling", np.array([-half_width, top, front]), x, -z, (width, depth)))
    bounds = {"back": back, "floor": floor, "top": top, "half_width": half_width}
    return surfaces, bounds


def _shape_at_origin(
    rng: np.random.Generator, name: str, towards: np.ndarray
) -> tuple[list[Surface], Float[np.ndarray, "3"], bool]:
    """A box (standing on the floor or floating, randomly turned) or a panel (facing
    ``towards``, randomly tilted) centred at the origin: (faces, half extent along the
    world axes, whether it stands on the floor)."""
    if rng.random() < 0.65:
        half = rng.uniform(0.15, 0.5, 3)
        grounded = bool(rng.random() < 0.6)
        if grounded:  # turned about the vertical only, so it rests on its bottom face
            yaw = rng.uniform(0, 2 * np.pi)
            axes = _rotation(np.array([np.cos(yaw / 2), 0.0, np.sin(yaw / 2), 0.0]))
        else:
            axes = _rotation(_normalize(rng.normal(size=4)))
        return _box_faces(f"box_{name}", np.zeros(3), axes, half, grounded), np.abs(axes) @ half, grounded
    size = rng.uniform(0.4, 1.4, 2)
    normal = _normalize(_normalize(towards) + rng.normal(0, 0.5, 3))
    u = _normalize(np.cross(normal, rng.normal(size=3)))
    v = np.cross(normal, u)
    panel = Surface(f"panel_{name}", -0.5 * size[0] * u - 0.5 * size[1] * v, u, v, (size[0], size[1]))
    return [panel], 0.5 * (np.abs(u) * size[0] + np.abs(v) * size[1]), False


def object_surfaces(
    rng: np.random.Generator, config: ProceduralConfig, eyes: np.ndarray, bounds: dict
) -> list[Surface]:
    """A few boxes and panels between the back wall and the cameras, inside the room and
    clear of every camera (an object that comes too close is drawn again)."""
    surfaces: list[Surface] = []
    count = int(rng.integers(config.num_objects[0], config.num_objects[1] + 1))
    for index in range(count):
        for _ in range(30):
            faces, extent, grounded = _shape_at_origin(rng, str(index), eyes.mean(axis=0))
            x_limit = min(1.3, bounds["half_width"] - extent[0] - 0.05)
            z_low, z_high = -bounds["back"] + extent[2] + 0.05, 0.9
            y_low, y_high = -bounds["floor"] + extent[1], min(bounds["top"] - extent[1] - 0.05, 1.0)
            if x_limit <= 0 or z_low >= z_high or y_low + 0.05 > y_high:
                continue
            y = y_low if grounded else rng.uniform(y_low + 0.05, y_high)
            centre = np.array([rng.uniform(-x_limit, x_limit), y, rng.uniform(z_low, z_high)])
            if np.linalg.norm(eyes - centre, axis=-1).min() > np.linalg.norm(extent) + 0.4:
                for face in faces:
                    face.corner = face.corner + centre
                surfaces.extend(faces)
                break
    return surfaces


def texel_spacing(surfaces: Sequence[Surface], eyes: np.ndarray, focal: float, budget: int) -> np.ndarray:
    """Texel spacing per surface: proportional to its distance from the cameras (equal
    density per solid angle), scaled so the texel count is about ``budget``, and never
    finer than 3/4 of a pixel at that distance."""
    mean_eye = eyes.mean(axis=0)
    distance = np.array([max(np.linalg.norm(s.centre - mean_eye), 0.5) for s in surfaces])
    area = np.array([s.size[0] * s.size[1] for s in surfaces])
    angle = max(math.sqrt((area / distance**2).sum() / budget), 0.75 / focal)
    return angle * distance


def build_scene(
    seed: Seed, config: ProceduralConfig = ProceduralConfig(), photos: Sequence[Path] = ()
) -> ProceduralScene:
    """Draw a scene from ``seed`` (an int or a sequence of ints, e.g. ``(run_seed, index)``).

    Surfaces are textured with crops of ``photos`` (image files, see
    :func:`texture_image_files`) or procedural patterns, and shaded by a random
    directional light (Lambertian, two-sided) so differently oriented faces differ.
    """
    entropy = (seed,) if isinstance(seed, int) else tuple(int(s) for s in seed)
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    cameras, arc, fov = camera_path(rng, config)
    eyes = cameras.c2w[:, :3, 3]
    surfaces, bounds = room_surfaces(rng, config, eyes)
    surfaces += object_surfaces(rng, config, eyes, bounds)

    spacing = texel_spacing(surfaces, eyes, cameras.k[0, 0], config.max_gaussians)
    light = _normalize(np.array([rng.normal(), rng.uniform(0.5, 1.5), rng.normal()]))
    ambient = rng.uniform(0.45, 0.7)
    photos = list(photos)
    for surface, step in zip(surfaces, spacing, strict=True):
        cols = int(np.clip(round(surface.size[0] / step), 2, 1024))
        rows = int(np.clip(round(surface.size[1] / step), 2, 1024))
        if photos and rng.random() < config.photo_probability:
            texture = photo_texture(rng, read_photo(photos[int(rng.integers(len(photos)))]), rows, cols)
        else:
            texture = procedural_texture(rng, rows, cols)
        shade = ambient + (1 - ambient) * abs(float(surface.normal @ light))
        surface.texture = np.clip(texture * shade, 0, 1)
    background = rng.uniform(0.0, 1.0, 3)
    return ProceduralScene(entropy, surfaces, cameras, background, arc, fov)


# --------------------------------------------------------------------------------------
# Gaussians and rendering
# --------------------------------------------------------------------------------------


def surface_gaussians(surfaces: Sequence[Surface], footprint: float = 0.7) -> SurfaceGaussians:
    """One flat Gaussian per texel: in-plane standard deviations ``footprint`` texel
    spacings, 2% of that across the plane, opacity 1, the texel's colour as degree-0 SH."""
    parts = []
    for surface in surfaces:
        rows, cols = surface.texture.shape[:2]
        du, dv = surface.size[0] / cols, surface.size[1] / rows
        i, j = np.meshgrid(np.arange(rows) + 0.5, np.arange(cols) + 0.5, indexing="ij")
        offsets = rearrange(np.stack((j * du, i * dv), axis=-1), "h w c -> (h w) c")
        means = surface.corner + offsets @ np.stack((surface.u, surface.v))
        rotation = torch.from_numpy(np.stack((surface.u, surface.v, surface.normal), axis=-1))
        quat = matrix_to_quaternion(rotation).numpy()
        scales = np.array([footprint * du, footprint * dv, 0.02 * footprint * min(du, dv)])
        colours = rearrange(surface.texture, "h w c -> (h w) c")
        n = rows * cols
        parts.append((means, repeat(quat, "c -> n c", n=n), repeat(scales, "c -> n c", n=n), colours))
    means, quats, scales, colours = (torch.from_numpy(np.concatenate(p)).float() for p in zip(*parts, strict=True))
    return SurfaceGaussians(
        means=means,
        quats=quats,
        scales=scales,
        opacities=torch.ones(means.shape[0]),
        sh=rearrange((colours - 0.5) / SH_C0, "n c -> n 1 c"),
    )


def render_frames(
    scene: ProceduralScene,
    render_mode: Literal["RGB", "RGB+ED"] = "RGB",
    footprint: float = 0.7,
    supersample: int = 2,
    batch: int = 8,
) -> Float[Tensor, "n h w c"]:
    """Render every frame of the scene on the CPU. ``"RGB"``: colours in [0, 1];
    ``"RGB+ED"``: plus the expected camera-z depth (0 where nothing is hit).

    Frames are rendered ``supersample`` times larger and box-filtered down: antialiased
    like photographs, and the front-to-back compositing of coplanar Gaussians (which pulls
    a slanted surface's texture by about one rendered pixel towards its nearer side)
    shrinks to a fraction of an output pixel.
    """
    gaussians = surface_gaussians(scene.surfaces, footprint)
    viewmats = opengl_c2w_to_viewmat(torch.from_numpy(scene.cameras.c2w)).float()
    h, w = scene.cameras.image_shape
    big_h, big_w = h * supersample, w * supersample
    k = torch.from_numpy(scene.cameras.k)
    k = denormalize_intrinsics(normalize_intrinsics(k, w, h), big_w, big_h).float()
    background = torch.from_numpy(scene.background).float()
    frames = []
    for start in range(0, len(viewmats), batch):
        views = viewmats[start : start + batch]
        rendered, _, _ = rasterize(
            gaussians.means,
            gaussians.quats,
            gaussians.scales,
            gaussians.opacities,
            gaussians.sh,
            views,
            repeat(k, "i j -> c i j", c=len(views)),
            big_w,
            big_h,
            sh_degree=0,
            backgrounds=repeat(background, "d -> c d", c=len(views)),
            render_mode=render_mode,
        )
        frames.append(reduce(rendered, "c (h sh) (w sw) d -> c h w d", "mean", sh=supersample, sw=supersample))
    frames = torch.cat(frames)
    frames[..., :3] = frames[..., :3].clamp(0, 1)
    return frames


# --------------------------------------------------------------------------------------
# Scene folders
# --------------------------------------------------------------------------------------


def transforms_json(scene: ProceduralScene, config: ProceduralConfig | None = None) -> dict:
    """The scene's nerfstudio ``transforms.json`` (PINHOLE, frames in capture order)."""
    h, w = scene.cameras.image_shape
    k = scene.cameras.k
    frames = [
        {"file_path": f"images/frame_{index:05d}.png", "transform_matrix": c2w.tolist()}
        for index, c2w in enumerate(scene.cameras.c2w)
    ]
    procedural = {
        "generator": "pixelsplat_ns.data.procedural",
        "seed": list(scene.seed),
        "arc_degrees": scene.arc_degrees,
        "fov_degrees": scene.fov_degrees,
        "surfaces": [s.name for s in scene.surfaces],
    }
    if config is not None:
        procedural["config"] = asdict(config)
    return {
        "camera_model": "PINHOLE",
        "fl_x": float(k[0, 0]),
        "fl_y": float(k[1, 1]),
        "cx": float(k[0, 2]),
        "cy": float(k[1, 2]),
        "w": w,
        "h": h,
        "frames": frames,
        "procedural": procedural,
    }


def save_scene_folder(
    destination: Path, scene: ProceduralScene, images: Float[Tensor, "n h w 3"], config: ProceduralConfig | None = None
) -> Path:
    """Write ``images/frame_00000.png ...`` and ``transforms.json`` into a temporary folder
    beside ``destination``, then rename it into place (no half-written scene is ever seen).
    Raises FileExistsError when ``destination`` exists and is not an empty folder."""
    destination = Path(destination)
    if destination.exists() and (not destination.is_dir() or any(destination.iterdir())):
        raise FileExistsError(f"{destination} already exists and is not an empty folder")
    destination.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))
    try:
        os.chmod(temporary, 0o777 & ~current_umask())
        for index, image in enumerate(images[..., :3].cpu().numpy()):
            save_image(temporary / "images" / f"frame_{index:05d}.png", image)
        text = json.dumps(transforms_json(scene, config), indent=2)
        (temporary / "transforms.json").write_text(text + "\n")
        os.rename(temporary, destination)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return destination


def write_scene(
    destination: Path, seed: Seed, config: ProceduralConfig = ProceduralConfig(), photos: Sequence[Path] = ()
) -> ProceduralScene:
    """Build, render and save one scene (see :func:`build_scene`, :func:`save_scene_folder`)."""
    scene = build_scene(seed, config, photos)
    save_scene_folder(
        destination, scene, render_frames(scene, footprint=config.footprint, supersample=config.supersample), config
    )
    return scene
