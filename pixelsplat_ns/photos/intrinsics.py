"""Reading two photos and deciding their focal length (EXIF, the user's value, or a default).

Pixel coordinates here are nerfstudio's: pixel centres at +0.5, the image spans [0, w] x [0, h],
and the principal point is the image centre (w / 2, h / 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from pixelsplat_ns.errors import PixelSplatInputError

DEFAULT_FOV_DEG = 60.0
"""Horizontal field of view assumed when neither EXIF nor the user gives the focal length."""

FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)  # 35 mm film: the reference of FocalLengthIn35mmFilm

# EXIF tags (in the Exif sub-IFD).
_EXIF_IFD = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_LENGTH_35MM = 0xA405
_FOCAL_PLANE_X_RESOLUTION = 0xA20E
_FOCAL_PLANE_RESOLUTION_UNIT = 0xA210
_PIXEL_X_DIMENSION = 0xA002
_PIXEL_Y_DIMENSION = 0xA003
_UNIT_MM = {2: 25.4, 3: 10.0, 4: 1.0, 5: 1e-3}  # inch, centimetre, millimetre, micrometre


@dataclass
class Photo:
    """One photo as read: RGB uint8 [h, w, 3] (EXIF orientation applied) and its EXIF focal."""

    path: Path
    image: np.ndarray
    exif_focal_px: float | None
    exif_focal_source: str | None

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.image.shape[1], self.image.shape[0]


def focal_from_fov(fov_deg: float, width: int) -> float:
    """Focal length in pixels of a camera whose horizontal field of view is ``fov_deg``."""
    return 0.5 * width / math.tan(math.radians(fov_deg) / 2)


def fov_from_focal(focal_px: float, width: int) -> float:
    """Horizontal field of view (degrees) of a focal length in pixels."""
    return math.degrees(2 * math.atan(0.5 * width / focal_px))


def _rational(value) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def exif_focal_px(exif: Image.Exif, width: int, height: int) -> tuple[float | None, str | None]:
    """Focal length in pixels of an image of ``width`` x ``height`` (orientation applied) from its
    EXIF, and how it was derived; (None, None) when EXIF does not tell.

    FocalLengthIn35mmFilm is matched on the diagonal (the 35 mm frame's 43.27 mm); FocalLength is
    used with FocalPlaneXResolution/Unit (sensor pixels per unit), scaled by the ratio of the
    image's size to the EXIF PixelXDimension when the photo was resized."""
    try:
        ifd = exif.get_ifd(_EXIF_IFD)
    except Exception:  # malformed EXIF: as if there were none
        return None, None
    tags = {**dict(exif), **dict(ifd)}
    focal_35 = _rational(tags.get(_FOCAL_LENGTH_35MM))
    if focal_35 is not None:
        return focal_35 * math.hypot(
            width, height
        ) / FULL_FRAME_DIAGONAL_MM, f"EXIF FocalLengthIn35mmFilm {focal_35:g} mm"
    focal_mm = _rational(tags.get(_FOCAL_LENGTH))
    resolution = _rational(tags.get(_FOCAL_PLANE_X_RESOLUTION))
    try:  # a malformed tag is no focal length, not an error
        unit = _UNIT_MM.get(int(tags.get(_FOCAL_PLANE_RESOLUTION_UNIT, 2) or 2))
    except (TypeError, ValueError):
        return None, None
    if focal_mm is None or resolution is None or unit is None:
        return None, None
    focal = focal_mm * resolution / unit  # in sensor pixels
    sensor_width = _rational(tags.get(_PIXEL_X_DIMENSION))
    sensor_height = _rational(tags.get(_PIXEL_Y_DIMENSION))
    if sensor_width is not None and sensor_height is not None:
        # The long sides correspond whatever the orientation.
        focal *= max(width, height) / max(sensor_width, sensor_height)
    return focal, f"EXIF FocalLength {focal_mm:g} mm with FocalPlaneXResolution"


def read_photo(path: Path) -> Photo:
    """Read a photo as RGB (EXIF orientation applied), refusing an unreadable file in one line."""
    path = Path(path)
    if not path.is_file():
        raise PixelSplatInputError(f"cannot read image {path}: no such file")
    try:
        with Image.open(path) as opened:
            exif = opened.getexif()
            upright = ImageOps.exif_transpose(opened)
            image = np.asarray(upright.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:
        raise PixelSplatInputError(f"cannot read image {path}: {error}") from None
    if image.ndim != 3 or min(image.shape[:2]) < 16:
        raise PixelSplatInputError(f"image {path} is too small ({image.shape[1]}x{image.shape[0]} pixels)")
    focal, source = exif_focal_px(exif, image.shape[1], image.shape[0])
    return Photo(path, image, focal, source)


def bring_to_common_size(a: Photo, b: Photo, max_aspect_difference: float = 0.02) -> tuple[Photo, Photo, str | None]:
    """Resize the larger photo to the smaller one's size when their aspect ratios agree (its EXIF
    focal scales along); refuse photos of different shapes. Returns a note when it resized."""
    if a.size == b.size:
        return a, b, None
    (wa, ha), (wb, hb) = a.size, b.size
    if abs(math.log((wa / ha) / (wb / hb))) > max_aspect_difference:
        raise PixelSplatInputError(
            f"the two photos have different shapes ({a.path.name} {wa}x{ha}, {b.path.name} {wb}x{hb}): "
            "take both with the same camera and orientation, or crop them to the same aspect ratio"
        )
    small, large = (a, b) if wa * ha <= wb * hb else (b, a)
    width, height = small.size
    factor = width / large.size[0]
    resized = np.asarray(Image.fromarray(large.image).resize((width, height), Image.Resampling.LANCZOS))
    focal = large.exif_focal_px * factor if large.exif_focal_px is not None else None
    scaled = Photo(large.path, resized, focal, large.exif_focal_source)
    note = f"{large.path.name} ({large.size[0]}x{large.size[1]}) resized to {width}x{height}, the size of {small.path.name}"
    return (small, scaled, note) if small is a else (scaled, small, note)
