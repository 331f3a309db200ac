"""Context views in nerfstudio's conventions, and the rule that picks them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath

import numpy as np
import torch
from jaxtyping import Float
from PIL import Image
from torch import Tensor

from pixelsplat_ns.errors import PixelSplatInputError


class ContextSelectionError(PixelSplatInputError):
    """The dataset or the requested names cannot give usable context views."""


@dataclass
class ContextImages:
    """The encoder's input as nerfstudio holds it (converted in ``pixelsplat_ns.cameras``)."""

    images: Float[Tensor, "view h w 3"]  # RGB in [0, 1], composited on black where alpha < 1
    c2w: Float[Tensor, "view 3 4"]  # OpenGL camera-to-world, dataparser world frame
    intrinsics: Float[Tensor, "view 3 3"]  # pixels, pixel centres at +0.5
    names: list[str]
    alpha: Float[Tensor, "view h w 1"] | None = None  # opacity, when any context image has an alpha channel


def _matches(name: str, path: str) -> bool:
    pure = PurePath(path)
    return name in (pure.name, pure.stem, str(pure)) or str(pure).endswith("/" + name.lstrip("/"))


def resolve_context_names(
    requested: Sequence[str], train_paths: Sequence[str], eval_paths: Sequence[str] = ()
) -> list[int]:
    """Indices into ``train_paths`` of the images named in ``requested`` (file names,
    stems or path suffixes). Eval images are refused: they are what ns-eval scores."""
    indices = []
    for name in requested:
        hits = [i for i, path in enumerate(train_paths) if _matches(name, path)]
        if len(hits) == 1:
            if hits[0] in indices:
                raise ContextSelectionError(f"context view '{name}' is named twice; give two different images")
            indices.append(hits[0])
            continue
        if len(hits) > 1:
            raise ContextSelectionError(
                f"context view '{name}' matches {len(hits)} training images "
                f"({', '.join(PurePath(train_paths[i]).name for i in hits[:4])}); give a longer path"
            )
        if any(_matches(name, path) for path in eval_paths):
            raise ContextSelectionError(
                f"context view '{name}' is in the dataparser's eval split, which ns-eval and ns-render score; "
                "choose training images as context"
            )
        examples = ", ".join(PurePath(p).name for p in list(train_paths)[:5])
        raise ContextSelectionError(f"context view '{name}' is not a training image of this dataset (e.g. {examples})")
    return indices


def default_context_pair(train_paths: Sequence[str], gap: int | None = None) -> list[int]:
    """The automatic choice: in file-name (capture) order, two training images ``gap``
    apart (default: a tenth of the training images, at least 1), centred on the middle
    one, so that held-out frames between them are natural targets."""
    n = len(train_paths)
    if n < 2:
        names = ", ".join(PurePath(p).name for p in train_paths) or "none"
        raise ContextSelectionError(
            f"this method needs two context views but the dataset has {n} training image(s) ({names}); "
            "add images or use a dataset with at least two views"
        )
    order = sorted(range(n), key=lambda i: str(train_paths[i]))
    gap = max(1, round(n / 10)) if gap is None else gap
    if gap < 1:
        raise ContextSelectionError(f"context gap must be at least 1, got {gap}")
    gap = min(gap, n - 1)
    first = min(max(0, n // 2 - gap // 2), n - 1 - gap)
    return [order[first], order[first + gap]]


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".exr", ".webp"}


def count_dataset_frames(data: Path) -> int | None:
    """Frames in a dataset folder when its layout tells (transforms.json or an images/
    folder), else None. Used to explain a dataparser failure on a too-small dataset."""
    data = Path(data)
    transforms = data / "transforms.json" if data.is_dir() else data
    if transforms.is_file() and transforms.suffix == ".json":
        import json

        try:
            return len(json.loads(transforms.read_text()).get("frames", []))
        except (OSError, ValueError):
            return None
    images = data / "images"
    if images.is_dir():
        return sum(1 for p in images.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    return None


# ------------------------------------------------------------------------------------------
# Images as nerfstudio should read them
# ------------------------------------------------------------------------------------------

_AS_RGB = {"L", "1", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_AS_RGBA = {"LA", "La", "PA", "RGBa"}
_SIXTEEN_BIT_GREY = {"I;16", "I;16L", "I;16B", "I;16N"}


def image_to_rgb8(image: Image.Image, name: str) -> Image.Image:
    """A PIL image in 8-bit RGB or RGBA with the same content: greyscale (8- or 16-bit) and
    palette images expand to RGB (RGBA when they carry transparency), 16-bit values scale by
    255/65535 (Pillow already reads 16-bit colour PNGs as 8-bit RGB(A)). nerfstudio's own reader
    keeps only the low byte of 16-bit greyscale and the palette indices of palette images.
    Refuses 32-bit integer and float pixels, whose range no file states."""
    if image.mode in ("RGB", "RGBA"):
        return image
    if image.mode in _AS_RGB:
        return image.convert("RGB")
    if image.mode in _AS_RGBA:
        return image.convert("RGBA")
    if image.mode == "P":
        return image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in _SIXTEEN_BIT_GREY:
        values = np.asarray(image).astype(np.uint32)
        return Image.fromarray(((values * 255 + 32767) // 65535).astype(np.uint8), "L").convert("RGB")
    raise PixelSplatInputError(
        f"image {name} has {image.mode!r} pixels (32-bit integer or float), whose range the file does not state; "
        "give 8- or 16-bit images (PNG, JPEG, TIFF)"
    )


def common_size(sizes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The size (h, w) context views of different sizes are brought to: the smallest one's
    (by pixel count), so that no view is upsampled."""
    return min(sizes, key=lambda size: (size[0] * size[1], size))


def to_float_image(image: Tensor) -> Float[Tensor, "h w c"]:
    """A cached nerfstudio image (uint8 or float) as float in [0, 1]."""
    return image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
