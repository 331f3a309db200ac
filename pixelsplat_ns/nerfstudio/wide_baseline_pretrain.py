"""``ns-train wide-baseline-pretrain``: learn Du et al.'s network across scenes.

The same data sources, example sampling and resumable trainer as ``pixelsplat-pretrain``
(``pixelsplat_ns.nerfstudio.pretrain``); each step encodes every example's two context views
and renders random rays of its target views (as the official training renders random
pixels), minimising MSE. Network checkpoints in this project's format are written beside
nerfstudio's, for ``ns-train wide-baseline --pipeline.model.checkpoint``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from einops import rearrange
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from pytorch_msssim import SSIM
from torch import Tensor

from pixelsplat_ns.cameras import WideBaselineViews
from pixelsplat_ns.data import ExampleConfig
from pixelsplat_ns.data.sampling import example_generator
from pixelsplat_ns.geometry import pixel_centers, world_rays
from pixelsplat_ns.metrics import build_lpips, psnr
from pixelsplat_ns.nerfstudio.pretrain import PretrainPipelineConfig
from pixelsplat_ns.widebaseline.predict import example_views, render_example_targets


@dataclass
class WideBaselinePretrainModelConfig(ModelConfig):
    """Du et al.'s network, trained on random rays of the examples' target views."""

    _target: type = field(default_factory=lambda: WideBaselinePretrainModel)
    architecture: Literal["small", "official"] = "small"
    """Network architecture."""
    init_checkpoint: Path | None = None
    """Start from these weights (official or project checkpoint) instead of random ones."""
    rays_per_target: int = 256
    """Random rays rendered per target view and step."""
    context_baseline: float | None = 1.0
    """Scale each example's world so that its context cameras are this far apart (None: the data's units)."""
    checkpoint_every: int = 500
    """Write a network checkpoint (project format) every this many steps, and at the end."""
    sampling_seed: int = 0
    """Seed of the training rays, drawn afresh from (seed, step, rank) at every step (resumable)."""
    eval_num_rays_per_chunk: int = 2048
    """Rays rendered at a time when whole target images are rendered (validation)."""


class WideBaselinePretrainModel(Model):
    config: WideBaselinePretrainModelConfig

    def populate_modules(self) -> None:
        from pixelsplat_ns.widebaseline.network import WideBaselineNetwork
        from pixelsplat_ns.widebaseline.weights import architecture_config, load_network_file

        if self.config.init_checkpoint is not None:
            self.network = load_network_file(self.config.init_checkpoint)
        else:
            self.network = WideBaselineNetwork(architecture_config(self.config.architecture))
        self.lpips = build_lpips()
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.step = 0
        self.rank = 0  # set by the pipeline under DDP
        self.checkpoint_dir: Path | None = None  # set from the trainer: <run>/networks

    def record_examples(self, examples: ExampleConfig) -> None:
        """Nothing to record: the network's input size is part of its architecture."""

    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"network": list(self.network.parameters())}

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> list[TrainingCallback]:
        def set_step(step: int) -> None:
            self.step = step

        if attributes.trainer is not None:
            self.checkpoint_dir = attributes.trainer.checkpoint_dir.parent / "networks"
        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], set_step),
            TrainingCallback(
                [TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                self.save_network,
                update_every_num_iters=self.config.checkpoint_every,
            ),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN], self.save_network),
        ]

    def save_network(self, step: int) -> Path | None:
        """Write the network in this project's checkpoint format (atomically)."""
        from pixelsplat_ns.widebaseline.weights import save_network

        if self.checkpoint_dir is None:
            return None
        return save_network(self.network, self.checkpoint_dir / f"network-step-{step:09d}.ckpt", step=step)

    # ------------------------------------------------------------------ rendering
    def _views(self, batch: dict) -> tuple[WideBaselineViews, Tensor]:
        """The context views in the network's conventions and the targets' OpenCV c2w in the
        same scaled world."""
        context = batch["context"]
        return example_views(
            self.network, context["image"], context["extrinsics"], context["intrinsics"],
            batch["target"]["extrinsics"], self.config.context_baseline,
        )  # fmt: skip

    def render(self, batch: dict) -> dict[str, Tensor]:
        """Training: ``rgb`` and ``truth`` [b, rays, 3] at random pixels of the targets. Otherwise
        ``rgb`` [b, t, h, w, 3], every pixel of every target."""
        context, target = batch["context"], batch["target"]
        b, t, _, h, w = target["image"].shape
        if not self.training:
            rgb = render_example_targets(
                self.network, context["image"], context["extrinsics"], context["intrinsics"],
                target["extrinsics"], target["intrinsics"], (h, w), self.config.context_baseline,
                self.config.eval_num_rays_per_chunk,
            )  # fmt: skip
            return {"rgb": rgb}
        views, target_c2w = self._views(batch)
        z = self.network.encode(views.images, views.c2w)
        xy = pixel_centers(h, w, device=target_c2w.device)  # h w 2, normalised
        generator = example_generator(self.config.sampling_seed, self.step, self.rank, slot=-2)
        pick = torch.randint(h * w, (b, t, self.config.rays_per_target), generator=generator).to(xy.device)
        origins, directions = world_rays(
            xy.reshape(-1, 2)[pick], target_c2w[:, :, None], target["intrinsics"][:, :, None]
        )
        out = self.network.render(z, views.c2w, views.intrinsics, origins.flatten(1, 2), directions.flatten(1, 2))
        colours = rearrange(target["image"], "b t c h w -> b t (h w) c")
        truth = torch.gather(colours, 2, pick[..., None].expand(-1, -1, -1, 3)).flatten(1, 2)
        return {"rgb": (out.rgb + 1) / 2, "truth": truth}

    def get_outputs(self, batch: dict) -> dict[str, Tensor]:  # type: ignore[override]
        return self.render(batch)

    def forward(self, batch: dict) -> dict[str, Tensor]:  # type: ignore[override]
        return self.get_outputs(batch)

    def _truth(self, outputs: dict, batch: dict) -> Tensor:
        if "truth" in outputs:
            return outputs["truth"]
        return batch["target"]["image"].permute(0, 1, 3, 4, 2)  # b t 3 h w -> b t h w 3

    def get_metrics_dict(self, outputs: dict, batch: dict) -> dict[str, Tensor]:
        return {"psnr": psnr(outputs["rgb"].detach().clamp(0, 1), self._truth(outputs, batch))}

    def get_loss_dict(self, outputs: dict, batch: dict, metrics_dict: dict | None = None) -> dict[str, Tensor]:
        return {"mse": F.mse_loss(outputs["rgb"], self._truth(outputs, batch))}

    def get_image_metrics_and_images(self, outputs: dict, batch: dict) -> tuple[dict[str, float], dict[str, Tensor]]:
        prediction, truth = outputs["rgb"][0], self._truth(outputs, batch)[0]  # t h w 3
        p, t = prediction.permute(0, 3, 1, 2), truth.permute(0, 3, 1, 2)
        metrics = {"psnr": float(psnr(p, t)), "ssim": float(self.ssim(t, p))}
        if self.lpips is not None:
            metrics["lpips"] = float(self.lpips(p, t))
        context = batch["context"]["image"][0].permute(0, 2, 3, 1)
        images = {
            "targets": torch.cat([torch.cat(list(truth), dim=1), torch.cat(list(prediction), dim=1)], dim=0),
            "context": torch.cat(list(context), dim=1),
        }
        return metrics, images


@dataclass
class WideBaselinePretrainPipelineConfig(PretrainPipelineConfig):
    """``PretrainPipeline`` (examples from many scenes) with Du et al.'s network as the model."""

    model: WideBaselinePretrainModelConfig = field(default_factory=WideBaselinePretrainModelConfig)  # type: ignore[assignment]
