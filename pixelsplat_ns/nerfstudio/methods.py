"""``ns-train pixelsplat``: the method nerfstudio finds through its entry point."""

from __future__ import annotations

import torch
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from pixelsplat_ns.nerfstudio.datamanager import PixelSplatDataManagerConfig
from pixelsplat_ns.nerfstudio.model import PixelSplatModelConfig
from pixelsplat_ns.nerfstudio.pipeline import PixelSplatPipelineConfig
from pixelsplat_ns.nerfstudio.pretrain import (
    PretrainDataManagerConfig,
    PretrainModelConfig,
    PretrainPipelineConfig,
)
from pixelsplat_ns.nerfstudio.schedulers import (
    PlainFloatCosineDecaySchedulerConfig,
    PlainFloatExponentialDecaySchedulerConfig,
)
from pixelsplat_ns.nerfstudio.trainer import PixelSplatTrainerConfig
from pixelsplat_ns.nerfstudio.wide_baseline import WideBaselineModelConfig, WideBaselinePipelineConfig
from pixelsplat_ns.nerfstudio.wide_baseline_pretrain import (
    WideBaselinePretrainModelConfig,
    WideBaselinePretrainPipelineConfig,
)


def _adam(lr: float) -> AdamOptimizerConfig:
    return AdamOptimizerConfig(lr=lr, eps=1e-15)


def _default_machine() -> MachineConfig:
    return MachineConfig(device_type="cuda" if torch.cuda.is_available() else "cpu")


def pixelsplat_trainer_config() -> PixelSplatTrainerConfig:
    """Feed-forward by default (0 iterations); --max-num-iterations N fine-tunes the
    predicted Gaussians with splatfacto's L1 + SSIM loss on the training images."""
    return PixelSplatTrainerConfig(
        method_name="pixelsplat",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=0,
        mixed_precision=False,
        machine=_default_machine(),
        pipeline=PixelSplatPipelineConfig(
            datamanager=PixelSplatDataManagerConfig(dataparser=NerfstudioDataParserConfig(), cache_images_type="uint8"),
            model=PixelSplatModelConfig(),
        ),
        optimizers={
            "means": {
                "optimizer": _adam(1.6e-4),
                "scheduler": PlainFloatExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=30000),
            },
            "features_dc": {"optimizer": _adam(0.0025), "scheduler": None},
            "features_rest": {"optimizer": _adam(0.0025 / 20), "scheduler": None},
            "opacities": {"optimizer": _adam(0.05), "scheduler": None},
            "scales": {"optimizer": _adam(0.005), "scheduler": None},
            "quats": {"optimizer": _adam(0.001), "scheduler": None},
            "camera_opt": {
                "optimizer": _adam(1e-4),
                "scheduler": PlainFloatExponentialDecaySchedulerConfig(
                    lr_final=5e-7, max_steps=30000, warmup_steps=1000, lr_pre_warmup=0
                ),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


pixelsplat_method = MethodSpecification(
    config=pixelsplat_trainer_config(),
    description="pixelSplat (CVPR 2024): 3D Gaussians from two posed images in one forward pass, "
    "optionally fine-tuned; renders on CPU or CUDA.",
)


def pixelsplat_pretrain_config() -> PixelSplatTrainerConfig:
    """Encoder training across scenes: Adam at 1.5e-4 with 2000 warm-up steps then cosine
    decay, gradients clipped at 0.5, MSE + 0.05 LPIPS, as in the reference."""
    return PixelSplatTrainerConfig(
        method_name="pixelsplat-pretrain",
        steps_per_eval_image=500,
        steps_per_eval_batch=500,
        steps_per_save=2000,
        steps_per_eval_all_images=5000,
        max_num_iterations=300000,
        mixed_precision=False,
        machine=_default_machine(),
        pipeline=PretrainPipelineConfig(
            datamanager=PretrainDataManagerConfig(),
            model=PretrainModelConfig(),
        ),
        optimizers={
            "encoder": {
                "optimizer": AdamOptimizerConfig(lr=1.5e-4, max_norm=0.5),
                "scheduler": PlainFloatCosineDecaySchedulerConfig(
                    warm_up_end=2000, learning_rate_alpha=0.01, max_steps=300000
                ),
            }
        },
        vis="tensorboard",
    )


pixelsplat_pretrain_method = MethodSpecification(
    config=pixelsplat_pretrain_config(),
    description="pixelSplat encoder training on many scenes (RE10K/ACID chunks or nerfstudio scene folders).",
)


def wide_baseline_trainer_config() -> PixelSplatTrainerConfig:
    """Feed-forward by default (0 iterations): renders any camera from the two context views;
    --max-num-iterations N fine-tunes the network on random rays of the training images."""
    return PixelSplatTrainerConfig(
        method_name="wide-baseline",
        steps_per_eval_image=0,  # every pixel is a network evaluation: score with ns-eval instead
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000000,
        max_num_iterations=0,
        mixed_precision=False,
        machine=_default_machine(),
        pipeline=WideBaselinePipelineConfig(
            datamanager=PixelSplatDataManagerConfig(dataparser=NerfstudioDataParserConfig(), cache_images_type="uint8"),
            model=WideBaselineModelConfig(),
        ),
        optimizers={
            "network": {
                "optimizer": AdamOptimizerConfig(lr=1e-5, max_norm=1.0),
                "scheduler": None,
            }
        },
        viewer=ViewerConfig(num_rays_per_chunk=1024),
        vis="viewer",
    )


wide_baseline_method = MethodSpecification(
    config=wide_baseline_trainer_config(),
    description="Du et al. (CVPR 2023): novel views from two posed images by cross-attention over epipolar "
    "samples, with pseudo-depth; official checkpoints load; renders on CPU.",
)


def wide_baseline_pretrain_config() -> PixelSplatTrainerConfig:
    """Network training across scenes, on the pretraining data of pixelsplat-pretrain: Adam at
    1e-4 with warm-up then cosine decay, gradients clipped at 1, MSE on random target rays."""
    return PixelSplatTrainerConfig(
        method_name="wide-baseline-pretrain",
        steps_per_eval_image=500,
        steps_per_eval_batch=500,
        steps_per_save=2000,
        steps_per_eval_all_images=5000,
        max_num_iterations=300000,
        mixed_precision=False,
        machine=_default_machine(),
        pipeline=WideBaselinePretrainPipelineConfig(
            datamanager=PretrainDataManagerConfig(),
            model=WideBaselinePretrainModelConfig(),
        ),
        optimizers={
            "network": {
                "optimizer": AdamOptimizerConfig(lr=1e-4, max_norm=1.0),
                "scheduler": PlainFloatCosineDecaySchedulerConfig(
                    warm_up_end=500, learning_rate_alpha=0.01, max_steps=300000
                ),
            }
        },
        vis="tensorboard",
    )


wide_baseline_pretrain_method = MethodSpecification(
    config=wide_baseline_pretrain_config(),
    description="Du et al.'s wide-baseline renderer trained on many scenes (RE10K/ACID chunks or nerfstudio scene folders).",
)
