"""A full-image datamanager that runs without CUDA and serves the context views."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
import torch
from nerfstudio.cameras.cameras import CameraType
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image

from pixelsplat_ns.cameras import fit_view
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.nerfstudio.context import (
    ContextImages,
    ContextSelectionError,
    common_size,
    count_dataset_frames,
    default_context_pair,
    image_to_rgb8,
    resolve_context_names,
    to_float_image,
)

# Camera types whose images nerfstudio's full-image datamanager undistorts to perspective ones
# when it caches them (only when they have distortion coefficients).
_UNDISTORTED_TYPES = (CameraType.FISHEYE.value, CameraType.FISHEYE624.value)


@dataclass
class PixelSplatDataManagerConfig(FullImageDatamanagerConfig):
    """Full images for rendering and scoring, plus the context views the encoder sees."""

    _target: type = field(default_factory=lambda: PixelSplatDataManager)
    context_views: tuple[str, ...] = ()
    """Training images given to the encoder, by file name, stem or path suffix (e.g. frame_00040 frame_00052).
    Empty: two training images context-gap apart, centred on the middle one, in file-name order."""
    context_gap: int | None = None
    """Gap of the automatic pair, in training images (default: a tenth of them, at least 1)."""
    cache_images: Literal["cpu", "gpu"] = "cpu"
    """Where images are cached. 'cpu' works without CUDA here (nerfstudio pins memory, which needs CUDA)."""


class PixelSplatDataset(InputDataset):
    """nerfstudio's dataset, reading images as they look (``image_to_rgb8``: 16-bit greyscale,
    palette, greyscale with alpha) and refusing, with one line naming the file, an unreadable
    image or one whose size is not the one its camera states."""

    def get_numpy_image(self, image_idx: int) -> npt.NDArray[np.uint8]:
        path = self._dataparser_outputs.image_filenames[image_idx]
        cameras = self._dataparser_outputs.cameras
        stated = (int(cameras.width[image_idx]), int(cameras.height[image_idx]))
        try:
            with Image.open(path) as opened:
                image = image_to_rgb8(opened, str(path))
                image.load()
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as error:  # corrupt, foreign, huge
            if isinstance(error, PixelSplatInputError):
                raise
            raise PixelSplatInputError(f"cannot read image {path}: {error}") from None
        if image.size != stated:
            raise PixelSplatInputError(
                f"image {path} is {image.size[0]}x{image.size[1]} pixels but its camera says {stated[0]}x{stated[1]} "
                "(transforms.json 'w'/'h'); give each frame its own size or resize the image"
            )
        if self.scale_factor != 1.0:
            width, height = image.size
            size = (int(width * self.scale_factor), int(height * self.scale_factor))
            image = image.resize(size, resample=Image.Resampling.BILINEAR)
        return np.array(image, dtype=np.uint8)


class PixelSplatDataManager(FullImageDatamanager[PixelSplatDataset]):
    config: PixelSplatDataManagerConfig

    def __init__(self, config: PixelSplatDataManagerConfig, *args, **kwargs) -> None:
        try:
            super().__init__(config, *args, **kwargs)
        except Exception:
            # nerfstudio's dataparsers fail obscurely on one-image datasets (e.g. a division
            # by zero when normalising poses): say what is wrong when the layout tells.
            data = config.data if config.data is not None else config.dataparser.data
            frames = count_dataset_frames(data) if data is not None else None
            if frames is not None and frames < 2:
                raise ContextSelectionError(
                    f"this method needs two context views but the dataset {data} has {frames} image(s); "
                    "use a dataset with at least two views"
                ) from None
            raise

    def _load_images(
        self, split: Literal["train", "eval"], cache_images_device: Literal["cpu", "gpu"]
    ) -> list[dict[str, torch.Tensor]]:
        # nerfstudio's "cpu" cache calls pin_memory(), which fails without CUDA. Its "gpu"
        # branch moves the cache to self.device, which is plain CPU memory on such machines.
        if cache_images_device == "cpu" and not torch.cuda.is_available():
            cache_images_device = "gpu"
        try:
            return super()._load_images(split, cache_images_device)
        except (AssertionError, NotImplementedError) as error:  # nerfstudio's checks while undistorting
            raise PixelSplatInputError(f"nerfstudio cannot load the {split} images: {error}") from None

    def context_indices(self) -> list[int]:
        """Indices into the training set of the context views (see the config's rule)."""
        train_paths = [str(p) for p in self.train_dataset.image_filenames]
        if self.config.context_views:
            eval_paths = [str(p) for p in self.eval_dataset.image_filenames] if self.eval_dataset else []
            return resolve_context_names(self.config.context_views, train_paths, eval_paths)
        return default_context_pair(train_paths, self.config.context_gap)

    def _not_pinhole(self, index: int) -> str | None:
        """Why training image ``index`` cannot be used as a pinhole view (None: it can). The encoder and the
        rasterisers are pinhole: a camera must be perspective, or a fisheye one that nerfstudio undistorts
        (one with distortion coefficients)."""
        cameras = self.train_dataset.cameras
        kind = CameraType(int(cameras.camera_type[index].item()))
        distortion = cameras.distortion_params[index] if cameras.distortion_params is not None else None
        coefficients = distortion is not None and bool((distortion != 0).any())
        name = self.train_dataset.image_filenames[index].name
        if kind == CameraType.PERSPECTIVE or (kind.value in _UNDISTORTED_TYPES and coefficients):
            return None
        if kind.value in _UNDISTORTED_TYPES:
            return (
                f"context view {name} has a {kind.name} camera without distortion coefficients, which nerfstudio "
                "does not undistort; pixelSplat needs perspective images: give the fisheye coefficients "
                "(k1-k4 in transforms.json) or undistort the images first"
            )
        return (
            f"context view {name} has a {kind.name} camera; pixelSplat needs perspective (pinhole) images, and "
            "nerfstudio undistorts only perspective and fisheye ones"
        )

    def context_views(self, long_side: int | Callable[[tuple[int, int]], int | None] | None = None) -> ContextImages:
        """The context images (float RGB in [0, 1], composited on black; their opacity in ``alpha``
        when any has an alpha channel) with their nerfstudio cameras (after nerfstudio's
        undistortion). Views of different sizes are brought to the smallest one's size (resized
        to cover it and centre-cropped; intrinsics follow). ``long_side`` (pixels, or a function
        of that common (h, w)): each view is downscaled to at most that long side on its own, so
        that huge photos are never held as a float batch."""
        indices = self.context_indices()
        for index in indices:
            if (problem := self._not_pinhole(index)) is not None:
                raise ContextSelectionError(problem)
        return self._training_views(indices, long_side, "context views")

    def sweep_views(self, count: int, long_side: int) -> ContextImages:
        """The ``count`` pinhole training views whose cameras are nearest the context cameras (the context views
        among them), at most ``long_side`` pixels on their long side: what the prediction's depths are matched
        against before fine-tuning."""
        centres = self.train_dataset.cameras.camera_to_worlds[:, :3, 3].cpu()
        distance = torch.cdist(centres, centres[torch.tensor(self.context_indices())]).min(dim=1).values
        usable = [int(i) for i in distance.argsort() if self._not_pinhole(int(i)) is None]
        return self._training_views(sorted(usable[:count]), long_side, "training views")

    def _training_views(
        self, indices: list[int], long_side: int | Callable[[tuple[int, int]], int | None] | None, what: str
    ) -> ContextImages:
        """Training images ``indices`` as pinhole views (``context_views``' rules); ``what`` they are, for messages."""
        cached = self.cached_train  # undistorts and updates the cameras on first access
        names = [self.train_dataset.image_filenames[i].name for i in indices]
        cameras = self.train_dataset.cameras[torch.tensor(indices)]
        sizes = [tuple(cached[i]["image"].shape[:2]) for i in indices]
        size = common_size(sizes)
        if len(set(sizes)) > 1:
            CONSOLE.print(
                f"pixelsplat: {what} of different sizes ("
                + ", ".join(f"{name} {w}x{h}" for name, (h, w) in zip(names, sizes, strict=True))
                + f") are resized to {size[1]}x{size[0]} (centre-cropped where the aspect ratio differs)"
            )
        cap = long_side(size) if callable(long_side) else long_side
        with_alpha = any(cached[i]["image"].shape[-1] == 4 for i in indices)
        images, alphas, intrinsics = [], [], []
        for i, k in zip(indices, cameras.get_intrinsics_matrices().cpu(), strict=True):
            image = cached[i]["image"].cpu()
            alpha = to_float_image(image[..., 3]) if image.shape[-1] == 4 else None
            planes = []
            # One colour plane at a time in float, so that a huge photo costs one float plane;
            # premultiplied (composited on black) before resizing, so transparent colours do not bleed.
            for channel in range(3):
                plane = to_float_image(image[..., channel])
                plane, fitted = fit_view((plane if alpha is None else plane * alpha)[None], k, size, cap)
                planes.append(plane)
            images.append(torch.cat(planes).permute(1, 2, 0).contiguous())
            if with_alpha:
                opacity = fit_view(alpha[None], k, size, cap)[0] if alpha is not None else torch.ones_like(planes[0])
                alphas.append(opacity.permute(1, 2, 0).contiguous())
            intrinsics.append(fitted)
        return ContextImages(
            images=torch.stack(images),
            c2w=cameras.camera_to_worlds.cpu(),
            intrinsics=torch.stack(intrinsics),
            names=names,
            alpha=torch.stack(alphas) if with_alpha else None,
        )
