"""A full-image datamanager that runs without CUDA and serves the context views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Literal, Optional, Tuple, Type

import torch
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.datasets.base_dataset import InputDataset

from pixelsplat_ns.nerfstudio.context import (
    ContextImages,
    ContextSelectionError,
    count_dataset_frames,
    default_context_pair,
    resolve_context_names,
)


@dataclass
class PixelSplatDataManagerConfig(FullImageDatamanagerConfig):
    """Full images for rendering and scoring, plus the context views the encoder sees."""

    _target: Type = field(default_factory=lambda: PixelSplatDataManager)
    context_views: Tuple[str, ...] = ()
    """Training images given to the encoder, by file name, stem or path suffix (e.g. frame_00040 frame_00052).
    Empty: two training images context-gap apart, centred on the middle one, in file-name order."""
    context_gap: Optional[int] = None
    """Gap of the automatic pair, in training images (default: a tenth of them, at least 1)."""
    cache_images: Literal["cpu", "gpu"] = "cpu"
    """Where images are cached. 'cpu' works without CUDA here (nerfstudio pins memory, which needs CUDA)."""


class PixelSplatDataManager(FullImageDatamanager[InputDataset]):
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
                    f"pixelSplat needs two context views but the dataset {data} has {frames} image(s); "
                    "use a dataset with at least two views"
                ) from None
            raise

    def _load_images(
        self, split: Literal["train", "eval"], cache_images_device: Literal["cpu", "gpu"]
    ) -> List[Dict[str, torch.Tensor]]:
        # nerfstudio's "cpu" cache calls pin_memory(), which fails without CUDA. Its "gpu"
        # branch moves the cache to self.device, which is plain CPU memory on such machines.
        if cache_images_device == "cpu" and not torch.cuda.is_available():
            cache_images_device = "gpu"
        return super()._load_images(split, cache_images_device)

    def context_indices(self) -> List[int]:
        """Indices into the training set of the context views (see the config's rule)."""
        train_paths = [str(p) for p in self.train_dataset.image_filenames]
        if self.config.context_views:
            eval_paths = [str(p) for p in self.eval_dataset.image_filenames] if self.eval_dataset else []
            return resolve_context_names(self.config.context_views, train_paths, eval_paths)
        return default_context_pair(train_paths, self.config.context_gap)

    def context_views(self) -> ContextImages:
        """The context images (float RGB in [0, 1]) with their nerfstudio cameras."""
        indices = self.context_indices()
        cached = self.cached_train  # undistorts and updates the cameras on first access
        images = []
        for i in indices:
            image = cached[i]["image"]
            image = image.float() / 255.0 if image.dtype == torch.uint8 else image.float()
            if image.shape[-1] == 4:  # RGBA: composite on black, the renderer's background
                image = image[..., :3] * image[..., 3:]
            images.append(image[..., :3].cpu())
        if len({tuple(im.shape) for im in images}) != 1:
            raise ValueError(
                "context views have different image sizes: "
                + ", ".join(f"{self.train_dataset.image_filenames[i].name} {tuple(im.shape[:2])}" for i, im in zip(indices, images))
            )
        cameras = self.train_dataset.cameras[torch.tensor(indices)]
        return ContextImages(
            images=torch.stack(images),
            c2w=cameras.camera_to_worlds.cpu(),
            intrinsics=cameras.get_intrinsics_matrices().cpu(),
            names=[self.train_dataset.image_filenames[i].name for i in indices],
        )
