"""``ns-train pixelsplat-pretrain``: learn the encoder across many scenes.

Each step draws (context views, target views) examples from chunk files or nerfstudio
scene folders (``pixelsplat_ns.data``), predicts Gaussians from the context views,
renders the targets and minimises MSE (+ LPIPS once it is enabled), as the reference
pixelSplat training does. Encoder checkpoints in this project's format are written beside
nerfstudio's, for ``ns-train pixelsplat --pipeline.model.encoder-checkpoint``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from nerfstudio.data.datamanagers.base_datamanager import DataManager, DataManagerConfig
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from pytorch_msssim import SSIM

from pixelsplat_ns.data import ExampleConfig, example_loader, open_scene_source
from pixelsplat_ns.data.examples import global_rank_world
from pixelsplat_ns.losses import cross_view_photometric_loss
from pixelsplat_ns.metrics import build_lpips, psnr
from pixelsplat_ns.views import render_views

# ----------------------------------------------------------------------------- data


@dataclass
class PretrainDataManagerConfig(DataManagerConfig):
    """Examples from many scenes: chunk files (RE10K/ACID format) or nerfstudio scene folders."""

    _target: type = field(default_factory=lambda: PretrainDataManager)
    data: Path | None = None
    """Training scenes: a chunk split folder, a folder of nerfstudio scenes, or one scene."""
    eval_data: Path | None = None
    """Validation scenes (default: the 'test' split next to a chunk folder, else the training scenes)."""
    examples: ExampleConfig = field(default_factory=ExampleConfig)
    """View sampling, resolution and bounds of the examples."""
    batch_size: int = 1
    """Examples per step."""
    num_workers: int = 0
    """DataLoader worker processes."""


class PretrainDataManager(DataManager):
    config: PretrainDataManagerConfig

    def __init__(
        self,
        config: PretrainDataManagerConfig,
        device: str = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ) -> None:
        self.config = config
        self.device = device
        self.local_rank = local_rank
        # Shards follow the global rank: on several machines, local ranks repeat.
        self.rank, self.world_size = global_rank_world(local_rank, world_size)
        self.test_mode = test_mode
        if config.data is None:
            raise ValueError("pixelsplat-pretrain needs --data: a chunk split folder or a folder of nerfstudio scenes")
        self.train_source = open_scene_source(config.data, split="train")
        eval_path = config.eval_data or config.data
        try:
            self.eval_source = open_scene_source(eval_path, split="test")
        except FileNotFoundError:
            self.eval_source = self.train_source
        self.train_dataset = self.train_source  # nerfstudio's trainer only checks these exist
        self.eval_dataset = self.eval_source
        self._train_iter: Iterator | None = None
        self._eval_iter: Iterator | None = None
        super().__init__()

    def _loader(self, stage: Literal["train", "test"], start_step: int) -> Iterator:
        source = self.train_source if stage == "train" else self.eval_source
        return iter(
            example_loader(
                source,
                self.config.examples,
                self.config.batch_size if stage == "train" else 1,
                num_workers=self.config.num_workers if stage == "train" else 0,
                stage=stage,
                start_step=start_step,
                rank=self.rank,
                world_size=self.world_size,
            )
        )

    def _to_device(self, batch: dict) -> dict:
        return {
            key: (
                {k: v.to(self.device) for k, v in value.items()}
                if isinstance(value, dict)
                else value.to(self.device)
                if isinstance(value, torch.Tensor)
                else value
            )
            for key, value in batch.items()
        }

    def next_train(self, step: int) -> tuple[dict, dict]:
        if self._train_iter is None:
            self._train_iter = self._loader("train", step)
        batch = self._to_device(next(self._train_iter))
        return batch, batch

    def next_eval(self, step: int) -> tuple[dict, dict]:
        if self._eval_iter is None:
            self._eval_iter = self._loader("test", 0)
        try:
            batch = next(self._eval_iter)
        except StopIteration:  # one pass over the validation scenes done: start again
            self._eval_iter = self._loader("test", 0)
            batch = next(self._eval_iter)
        batch = self._to_device(batch)
        return batch, batch

    def next_eval_image(self, step: int) -> tuple[dict, dict]:
        return self.next_eval(step)

    def get_train_rays_per_batch(self) -> int:
        h, w = self.config.examples.image_shape
        return self.config.batch_size * self.config.examples.num_target_views * h * w

    def get_eval_rays_per_batch(self) -> int:
        return self.get_train_rays_per_batch()

    def get_datapath(self) -> Path:
        assert self.config.data is not None
        return self.config.data

    def setup_train(self) -> None:
        return None

    def setup_eval(self) -> None:
        return None

    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {}


# ----------------------------------------------------------------------------- model


@dataclass
class PretrainModelConfig(ModelConfig):
    """The pixelSplat encoder, trained end to end through the rasteriser."""

    _target: type = field(default_factory=lambda: PretrainModel)
    encoder: Literal["tiny", "official"] = "tiny"
    """Encoder architecture."""
    init_checkpoint: Path | None = None
    """Start from these encoder weights (official or project checkpoint) instead of random ones."""
    lpips_weight: float = 0.05
    """Weight of the LPIPS loss (the reference uses 0.05)."""
    lpips_start_step: int = 0
    """Step from which LPIPS joins the loss (skipped when its AlexNet weights are absent)."""
    encoder_checkpoint_every: int = 500
    """Write an encoder checkpoint (project format) every this many steps, and at the end."""
    gaussians_per_pixel: int | None = None
    """Depths sampled per pixel while training (default: the architecture's, 3 as in the reference).
    Fewer makes CPU training cheaper; it is stored with the checkpoint."""
    depth_consistency_weight: float = 0.0
    """Weight of the cross-view photometric loss on the predicted depth (pixelsplat_ns/losses.py): each
    context view's depth must warp the other context photo onto it. 0 (the reference): off."""
    sampling_seed: int = 0
    """Seed of the training-time depth sampling, drawn afresh from (seed, step, rank) at every step,
    so that a resumed run (--load-dir) samples exactly as an uninterrupted one."""


class PretrainModel(Model):
    config: PretrainModelConfig

    def populate_modules(self) -> None:
        from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config
        from pixelsplat_ns.official import load_checkpoint

        if self.config.init_checkpoint is not None:
            self.encoder = load_checkpoint(self.config.init_checkpoint)
        else:
            self.encoder = PixelSplatEncoder(encoder_config(self.config.encoder))
        if self.config.gaussians_per_pixel is not None:
            self.encoder.cfg.gaussians_per_pixel = self.config.gaussians_per_pixel
        self.lpips = build_lpips()
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.step = 0
        self.rank = 0  # set by the pipeline under DDP
        self.checkpoint_dir: Path | None = None  # set from the trainer: <run>/encoders

    def record_examples(self, examples: ExampleConfig) -> None:
        """Recorded in the encoder checkpoints: inference feeds images the way training did."""
        self.encoder.cfg.near_disparity = examples.near_disparity
        self.encoder.cfg.train_image_shape = tuple(examples.image_shape)

    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"encoder": list(self.encoder.parameters())}

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> list[TrainingCallback]:
        def set_step(step: int) -> None:
            self.step = step

        if attributes.trainer is not None:
            # Beside nerfstudio_models/, whose older *.ckpt files nerfstudio deletes at each save.
            self.checkpoint_dir = attributes.trainer.checkpoint_dir.parent / "encoders"
        return [
            TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], set_step),
            TrainingCallback(
                [TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                self.save_encoder,
                update_every_num_iters=self.config.encoder_checkpoint_every,
            ),
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN], self.save_encoder),
        ]

    def save_encoder(self, step: int) -> Path | None:
        """Write the encoder in this project's checkpoint format (atomically)."""
        from pixelsplat_ns.official import save_checkpoint

        if self.checkpoint_dir is None:
            return None
        path = self.checkpoint_dir / f"encoder-step-{step:09d}.ckpt"
        save_checkpoint(self.encoder, path, step=step)
        return path

    def render(self, batch: dict, deterministic: bool) -> dict[str, torch.Tensor]:
        """Predict Gaussians from each example's context, render its targets: ``rgb`` [b, t, h, w, 3];
        while training with ``depth_consistency_weight``, also ``depth_consistency`` (a scalar)."""
        from pixelsplat_ns.data.sampling import example_generator

        context, target = batch["context"], batch["target"]
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices):  # the caller's RNG stays untouched
            # slot -1: bits of their own, not the example sampler's (slots 0, 1, ...)
            generator = example_generator(self.config.sampling_seed, self.step, self.rank, slot=-1)
            seed = int(torch.randint(2**62, (), generator=generator))
            torch.manual_seed(seed)  # this step's depth samples, whatever ran before
            output = self.encoder(
                context["image"],
                context["extrinsics"],
                context["intrinsics"],
                context["near"],
                context["far"],
                deterministic=deterministic,
                global_step=self.step,
            )
        rgb = render_views(output.gaussians, target["extrinsics"], target["intrinsics"], target["image"].shape[-2:])
        outputs = {"rgb": rgb}
        if self.training and self.config.depth_consistency_weight > 0:
            outputs["depth_consistency"] = cross_view_photometric_loss(
                context["image"], context["extrinsics"], context["intrinsics"], context["near"], context["far"],
                output.depth_pdf, output.depth_offset,
            )  # fmt: skip
        return outputs

    def get_outputs(self, batch: dict) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self.render(batch, deterministic=not self.training)

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:  # type: ignore[override]
        return self.get_outputs(batch)

    @staticmethod
    def _targets(batch: dict) -> torch.Tensor:
        return batch["target"]["image"].permute(0, 1, 3, 4, 2)  # b t 3 h w -> b t h w 3

    def get_metrics_dict(self, outputs: dict, batch: dict) -> dict[str, torch.Tensor]:
        return {"psnr": psnr(outputs["rgb"].detach(), self._targets(batch))}

    def get_loss_dict(self, outputs: dict, batch: dict, metrics_dict: dict | None = None) -> dict[str, torch.Tensor]:
        prediction, truth = outputs["rgb"], self._targets(batch)
        losses = {"mse": F.mse_loss(prediction, truth)}
        if "depth_consistency" in outputs:
            losses["depth_consistency"] = self.config.depth_consistency_weight * outputs["depth_consistency"]
        if self.lpips is not None and self.config.lpips_weight > 0 and self.step >= self.config.lpips_start_step:
            flat = lambda x: x.flatten(0, 1).permute(0, 3, 1, 2)  # noqa: E731  (b t h w 3 -> bt 3 h w)
            losses["lpips"] = self.config.lpips_weight * self.lpips(flat(prediction), flat(truth))
        return losses

    def get_image_metrics_and_images(
        self, outputs: dict, batch: dict
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        prediction, truth = outputs["rgb"][0], self._targets(batch)[0]  # t h w 3
        p, t = prediction.permute(0, 3, 1, 2), truth.permute(0, 3, 1, 2)
        metrics = {
            "psnr": float(psnr(p, t)),
            "ssim": float(self.ssim(t, p)),
        }
        if self.lpips is not None:
            metrics["lpips"] = float(self.lpips(p, t))
        context = batch["context"]["image"][0].permute(0, 2, 3, 1)  # v h w 3
        images = {
            "targets": torch.cat([torch.cat(list(truth), dim=1), torch.cat(list(prediction), dim=1)], dim=0),
            "context": torch.cat(list(context), dim=1),
        }
        return metrics, images


# ----------------------------------------------------------------------------- pipeline


@dataclass
class PretrainPipelineConfig(VanillaPipelineConfig):
    _target: type = field(default_factory=lambda: PretrainPipeline)
    datamanager: PretrainDataManagerConfig = field(default_factory=PretrainDataManagerConfig)
    model: PretrainModelConfig = field(default_factory=PretrainModelConfig)
    num_eval_examples: int = 8
    """Validation examples scored by get_average_eval_image_metrics."""


class PretrainPipeline(VanillaPipeline):
    """A VanillaPipeline whose data are examples from many scenes, not one dataparser."""

    def __init__(
        self,
        config: PretrainPipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler=None,
    ) -> None:
        torch.nn.Module.__init__(self)
        self.config = config
        self.test_mode = test_mode
        self.world_size = world_size
        self.datamanager = config.datamanager.setup(
            device=device, test_mode=test_mode, world_size=world_size, local_rank=local_rank
        )
        self._model = config.model.setup(
            scene_box=None, num_train_data=0, metadata={}, device=device, grad_scaler=grad_scaler
        )
        self.model.to(device)
        self.model.rank = self.datamanager.rank  # global: seeds differ on every machine's processes
        self.model.record_examples(config.datamanager.examples)
        if world_size > 1:
            self._model = torch.nn.parallel.DistributedDataParallel(
                self._model,
                device_ids=[local_rank] if str(device).startswith("cuda") else None,
                find_unused_parameters=True,
            )

    @torch.no_grad()
    def get_eval_image_metrics_and_images(self, step: int) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        self.eval()
        batch, _ = self.datamanager.next_eval_image(step)
        metrics, images = self.model.get_image_metrics_and_images(self.model(batch), batch)
        self.train()
        metrics["num_rays"] = batch["target"]["image"][0, :, 0].numel()  # the trainer's speed readout
        return metrics, images

    @torch.no_grad()
    def get_average_eval_image_metrics(
        self, step: int | None = None, output_path: Path | None = None, get_std: bool = False
    ) -> dict[str, float]:
        self.eval()
        totals: dict[str, list[float]] = {}
        for i in range(self.config.num_eval_examples):
            batch, _ = self.datamanager.next_eval(i)
            metrics, _ = self.model.get_image_metrics_and_images(self.model(batch), batch)
            for key, value in metrics.items():
                totals.setdefault(key, []).append(value)
        self.train()
        return {key: sum(values) / len(values) for key, values in totals.items()}
