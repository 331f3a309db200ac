"""The pipeline that hands the datamanager's context views to the model."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor
from torch.cuda.amp.grad_scaler import GradScaler

from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.nerfstudio import atomic_export
from pixelsplat_ns.nerfstudio.datamanager import PixelSplatDataManagerConfig
from pixelsplat_ns.nerfstudio.model import PixelSplatModelConfig


class ContextPairMixin:
    """What a pipeline whose model renders from context views offers the viewer: the first
    context camera (where the viewer opens) and switching to another pair of training images."""

    def first_context_camera(self) -> tuple[Tensor, float] | None:
        """The first context view's camera (OpenGL camera-to-world, vertical fov in radians)."""
        names = self.model.context_names or []
        filenames = [path.name for path in self.datamanager.train_dataset.image_filenames]
        try:
            index = filenames.index(names[0]) if names else self.datamanager.context_indices()[0]
        except (ValueError, PixelSplatInputError):
            return None
        camera = self.datamanager.train_dataset.cameras[index]
        fov = 2 * math.atan(0.5 * float(camera.height) / float(camera.fy))
        return camera.camera_to_worlds.detach().cpu(), fov

    def switch_context_pair(self, first: str, second: str, use: Callable[[], object], refusal: str) -> None:
        """Take two other training images as context views and ``use()`` them (predict, encode);
        refused with ``refusal`` once fine-tuning has started. The names are validated first
        (unknown, eval split, identical); on failure the previous pair stays."""
        if self.model.step > 0:
            raise PixelSplatInputError(refusal)
        previous = self.datamanager.config.context_views
        self.datamanager.config.context_views = (first, second)
        try:
            indices = self.datamanager.context_indices()
            use()
        except Exception:
            self.datamanager.config.context_views = previous
            raise
        self.model.context_train_indices = indices


@dataclass
class PixelSplatPipelineConfig(VanillaPipelineConfig):
    _target: type = field(default_factory=lambda: PixelSplatPipeline)
    datamanager: PixelSplatDataManagerConfig = field(default_factory=PixelSplatDataManagerConfig)
    model: PixelSplatModelConfig = field(default_factory=PixelSplatModelConfig)


class PixelSplatPipeline(ContextPairMixin, VanillaPipeline):
    """VanillaPipeline + context views. When training, the encoder runs here, before the
    trainer builds its optimisers, so they see the predicted Gaussians. Reloaded runs
    (viewer, export, render, eval) restore the saved Gaussians and never run it."""

    def __init__(
        self,
        config: PixelSplatPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: GradScaler | None = None,
    ):
        atomic_export.install()  # inside ns-export: its PLY is written atomically
        try:
            super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
            self.model.set_context_provider(self.datamanager.context_views)
            self.model.set_sweep_provider(self.datamanager.sweep_views)
            if test_mode == "val":
                self.model.context_train_indices = self.datamanager.context_indices()
                self.model.initialize_gaussians()
            self.model.walkthrough.set_pair_choice(
                [path.name for path in self.datamanager.train_dataset.image_filenames],
                [self.datamanager.train_dataset.image_filenames[i].name for i in self.datamanager.context_indices()],
                self.predict_from_pair,
            )
            self.model.walkthrough.set_first_camera(self.first_context_camera)
        except (PixelSplatInputError, FileNotFoundError) as error:  # bad input: one clear message
            CONSOLE.print(f"[bold red]pixelsplat: error: {error}")
            raise SystemExit(2) from None

    def predict_from_pair(self, first: str, second: str) -> None:
        """Predict the Gaussians again from two other training images (the viewer's pair
        picking). Refused once fine-tuning has started: its optimisers own the Gaussians."""
        self.switch_context_pair(
            first, second, self.model.predict_gaussians,
            "the Gaussians are being fine-tuned; pick pairs in a feed-forward run (0 iterations)",
        )  # fmt: skip
