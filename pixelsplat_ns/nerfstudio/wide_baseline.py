"""``ns-train wide-baseline``: Du et al.'s cross-attention renderer as a nerfstudio model.

No explicit scene: the network encodes the two context views once, then renders any ray by
cross-attending over its epipolar samples (``pixelsplat_ns.widebaseline``). The model is a
ray-based nerfstudio ``Model``, so ``ns-render``, ``ns-eval`` and ``ns-viewer`` render it through
nerfstudio's own chunking (``eval_num_rays_per_chunk`` rays at a time: bounded memory) and the
viewer lowers its resolution while the camera moves. The context views and the network's
architecture are saved with the run: a reloaded run renders from them, with its own weights. Fine-tuning (``--max-num-iterations N``)
optimises the whole network on random rays of the training images.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import torch
import torch.nn.functional as F
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.data.scene_box import OrientedBox
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from pytorch_msssim import SSIM
from torch import Tensor
from torch.cuda.amp.grad_scaler import GradScaler

from pixelsplat_ns.cameras import (
    WideBaselineViews,
    opencv_keypoints_to_pixels,
    ray_depth_to_z_depth,
    rays_to_network_frame,
    to_caller_frame,
    widebaseline_context,
)
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.metrics import build_lpips, psnr
from pixelsplat_ns.nerfstudio import atomic_export
from pixelsplat_ns.nerfstudio.context import ContextImages
from pixelsplat_ns.nerfstudio.datamanager import PixelSplatDataManagerConfig
from pixelsplat_ns.nerfstudio.pipeline import ContextPairMixin
from pixelsplat_ns.nerfstudio.wide_baseline_walkthrough import WideBaselineRun, WideBaselineWalkthrough

if TYPE_CHECKING:
    from pixelsplat_ns.widebaseline.network import WideBaselineNetwork

_CONTEXT_BUFFERS = ("context_images", "context_c2w", "context_intrinsics", "context_scale")


@dataclass
class WideBaselineModelConfig(ModelConfig):
    """Du et al. (CVPR 2023): novel views rendered by cross-attention over epipolar samples of two
    context views, with a pseudo-depth read from the attention."""

    _target: type = field(default_factory=lambda: WideBaselineModel)
    architecture: Literal["small", "official"] = "small"
    """Network architecture when no checkpoint is given (a checkpoint carries its own)."""
    checkpoint: Path | None = None
    """Network weights: an official checkpoint of Du et al. (model_current.pth, {'model': state_dict}) or one
    saved by wide-baseline-pretrain. Default: the bundled small model for --pipeline.model.architecture small."""
    untrained: bool = False
    """Ignore the bundled weights and run the network with seeded random weights (ablations, tests)."""
    seed: int = 0
    """Seed for untrained weights and for the rays drawn when fine-tuning."""
    context_baseline: float | None = 1.0
    """The world is scaled so that the context cameras are this far apart before the network sees it (its
    tanh encodings and pose embedding see raw distances); None keeps the dataset's units, as the official loaders do."""
    train_rays_per_step: int = 512
    """Fine-tuning: random rays of one training image per step."""
    eval_num_rays_per_chunk: int = 1024
    """Rays rendered at a time by ns-render, ns-eval and the viewer (memory grows with it)."""
    viewer_max_res: int = 160
    """The viewer's initial "Max res" (nerfstudio's default is 512): every pixel is a network evaluation, so a
    still frame at 512 px takes minutes on CPU; while the camera moves nerfstudio renders fewer pixels anyway."""


class WideBaselineModel(Model):
    """The network, its two context views (saved with the run) and their cached features."""

    config: WideBaselineModelConfig

    def populate_modules(self) -> None:
        # Built on first use from the configured weights (ns-train), or from a saved run's own
        # state (load_state_dict: ns-viewer, ns-render, ns-eval never re-read the weight file).
        self.network: WideBaselineNetwork | None = None
        # Persisted with the run: a reloaded run renders from the views it was trained with.
        self.register_buffer("context_images", torch.empty(0, 3, 0, 0))
        self.register_buffer("context_c2w", torch.empty(0, 4, 4))
        self.register_buffer("context_intrinsics", torch.empty(0, 3, 3))
        self.register_buffer("context_scale", torch.ones(()))
        self.context_names: list[str] = []
        self.context_train_indices: list[int] = []
        self.context_provider: Callable[[], ContextImages] | None = None
        self._features: list[Tensor] | None = None
        self.step = 0
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.lpips = build_lpips()
        # The viewer panel (pixelSplat's walkthrough, driven by this renderer); it also makes the
        # viewer open looking through the first context camera.
        self.walkthrough = WideBaselineWalkthrough(lambda: WideBaselineRun(self), max_res=self.config.viewer_max_res)

    def ensure_network(self) -> WideBaselineNetwork:
        """The network: from ``checkpoint``, the bundled model or seeded weights on first use."""
        if self.network is None:
            from pixelsplat_ns.widebaseline.weights import load_network

            self.network = load_network(
                self.config.architecture, self.config.checkpoint, seed=self.config.seed, untrained=self.config.untrained
            ).to(self.device)
        return self.network

    def get_extra_state(self) -> dict:
        """Saved with the run: the network's architecture, so that a reloaded run rebuilds it."""
        return {"network_config": self.ensure_network().cfg.to_dict()}

    def set_extra_state(self, state: dict) -> None:
        """Read in ``load_state_dict``, before the weights are loaded."""

    # ------------------------------------------------------------------ context
    def set_context_provider(self, provider: Callable[[], ContextImages]) -> None:
        """Where the context views come from (``PixelSplatDataManager.context_views``)."""
        self.context_provider = provider

    @torch.no_grad()
    def load_context(self) -> WideBaselineViews:
        """Read the context views from the provider into the saved buffers."""
        if self.context_provider is None:
            raise RuntimeError("WideBaselineModel has no context views: call set_context_provider() first")
        context = self.context_provider()
        views = widebaseline_context(
            context.images,
            context.c2w,
            context.intrinsics,
            self.ensure_network().cfg.image_size,
            self.config.context_baseline,
            names=context.names,
        )
        self.context_images = views.images[0].to(self.device)
        self.context_c2w = views.c2w[0].to(self.device)
        self.context_intrinsics = views.intrinsics[0].to(self.device)
        self.context_scale = views.scene_scale[0].to(self.device)
        self.context_names = list(context.names)
        self._features = None
        size = self.ensure_network().cfg.image_size
        CONSOLE.print(
            f"wide-baseline: context views {', '.join(context.names)}, centre-cropped and resized to {size}x{size}"
        )
        return views

    def context_views(self) -> WideBaselineViews:
        """The saved context views (loaded from the provider on first use)."""
        if self.context_images.shape[0] == 0:
            self.load_context()
        return WideBaselineViews(
            self.context_images[None], self.context_c2w[None], self.context_intrinsics[None], self.context_scale[None]
        )

    def features(self) -> list[Tensor]:
        """The context views' feature maps: cached while the network is not being trained."""
        views = self.context_views()
        network = self.ensure_network()
        if self.training and torch.is_grad_enabled():
            return network.encode(views.images, views.c2w)
        if self._features is None:
            with torch.no_grad():
                self._features = network.encode(views.images, views.c2w)
        return self._features

    def load_state_dict(self, state_dict: dict, strict: bool = True, **kwargs):  # type: ignore[override]
        """A saved run: its network rebuilt from the saved architecture, the context buffers
        resized to the saved views, then nerfstudio's loading."""
        from pixelsplat_ns.widebaseline.config import WideBaselineConfig
        from pixelsplat_ns.widebaseline.network import WideBaselineNetwork

        extra = state_dict.get("_extra_state")
        if isinstance(extra, dict) and "network_config" in extra:
            cfg = WideBaselineConfig.from_dict(extra["network_config"])
            if self.network is None or self.network.cfg != cfg:
                self.network = WideBaselineNetwork(cfg).to(self.device).eval()
        # The context buffers start empty: take the saved shapes before loading into them.
        for name in _CONTEXT_BUFFERS:
            key = next((k for k in state_dict if k == name or k.endswith("." + name)), None)
            if key is not None:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.device))
        self._features = None
        return super().load_state_dict(state_dict, strict=strict, **kwargs)

    def train(self, mode: bool = True) -> WideBaselineModel:
        self._features = None  # the weights may change while training
        return super().train(mode)

    # ------------------------------------------------------------------ rendering
    def render_rays(self, origins: Tensor, directions: Tensor):
        """Render world rays (nerfstudio's frame) of any leading shape ``[..., 3]``: the network's
        ``WideBaselineRays`` with one batch entry and the rays flattened (depths in the network's
        scaled world: divide by ``context_scale``)."""
        views = self.context_views()
        shape = origins.shape[:-1]
        o = rays_to_network_frame(origins.reshape(1, -1, 3).to(self.device), views.scene_scale[:, None, None])
        d = F.normalize(directions.reshape(1, -1, 3).to(self.device), dim=-1)
        out = self.ensure_network().render(self.features(), views.c2w, views.intrinsics, o, d)
        out.shape = shape  # type: ignore[attr-defined]
        return out

    def get_outputs(self, ray_bundle: RayBundle | Cameras) -> dict[str, Tensor]:  # type: ignore[override]
        """``rgb`` in [0, 1], ``depth`` (pseudo-depth from the attention, along the ray, in the
        dataset's units), ``entropy`` of the attention (0: one sample; 1: uniform) and ``accumulation`` (1 where the ray
        meets a context image). Given a training camera (fine-tuning), renders ``train_rays_per_step`` random pixels
        of it and returns their indices in ``pixels``."""
        pixels = None
        if isinstance(ray_bundle, Cameras):
            ray_bundle, pixels = self._random_pixel_rays(ray_bundle)
        out = self.render_rays(ray_bundle.origins, ray_bundle.directions)
        shape = ray_bundle.origins.shape[:-1]
        rgb = (out.rgb[0] + 1) / 2
        outputs = {
            "rgb": (rgb if self.training else rgb.clamp(0, 1)).reshape(*shape, 3),
            "depth": to_caller_frame(out.depth[0], self.context_scale).reshape(*shape, 1),
            # in [0, 1]: divided by the entropy of uniform attention over every sample of both views
            "entropy": (out.entropy[0] / math.log(out.attention[0].shape[0] * out.attention[0].shape[-1])).reshape(
                *shape, 1
            ),
            # 1 where the ray's epipolar lines meet a context image (nerfstudio's depth colouring reads it)
            "accumulation": out.valid[0].to(rgb.dtype).reshape(*shape, 1),
        }
        if pixels is not None:
            outputs["pixels"] = pixels
        return outputs

    def _random_pixel_rays(self, camera: Cameras) -> tuple[RayBundle, Tensor]:
        """Rays through ``train_rays_per_step`` random pixels of one camera (pixel centres)."""
        if camera.shape[0] != 1:
            raise ValueError("fine-tuning renders one camera at a time")
        h, w = int(camera.height.item()), int(camera.width.item())
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + self.step)
        count = min(self.config.train_rays_per_step, h * w)
        pixels = torch.randperm(h * w, generator=generator)[:count]
        coords = torch.stack((pixels // w, pixels % w), dim=-1).to(torch.float32) + 0.5  # (row, col) centres
        bundle = camera.to(self.device).generate_rays(camera_indices=0, coords=coords.to(self.device))
        return bundle, pixels

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box: OrientedBox | None = None) -> dict[str, Tensor]:
        return self.get_outputs_for_camera_ray_bundle(
            camera.generate_rays(camera_indices=0, keep_shape=True, obb_box=obb_box)
        )

    # ------------------------------------------------------------------ training
    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"network": list(self.ensure_network().parameters())}

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> list[TrainingCallback]:
        def set_step(step: int) -> None:
            self.step = step

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], set_step)]

    def _target(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> Tensor:
        image = batch["image"].to(self.device)
        image = image[..., :3].float() / 255 if image.dtype == torch.uint8 else image[..., :3]
        if "pixels" in outputs:
            return image.reshape(-1, 3)[outputs["pixels"].to(self.device)]
        return image

    def get_metrics_dict(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"psnr": psnr(outputs["rgb"].detach().clamp(0, 1), self._target(outputs, batch))}

    def get_loss_dict(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor], metrics_dict: dict | None = None
    ) -> dict[str, Tensor]:
        return {"mse": F.mse_loss(outputs["rgb"], self._target(outputs, batch))}

    def get_image_metrics_and_images(
        self, outputs: dict[str, Tensor], batch: dict[str, Tensor]
    ) -> tuple[dict[str, float], dict[str, Tensor]]:
        truth, prediction = self._target(outputs, batch), outputs["rgb"]
        t, p = truth.permute(2, 0, 1)[None], prediction.permute(2, 0, 1)[None]
        metrics = {"psnr": float(psnr(p, t)), "ssim": float(self.ssim(t, p))}
        if self.lpips is not None:
            metrics["lpips"] = float(self.lpips(p, t))
        depth = outputs["depth"]
        near, far = depth.quantile(0.02), depth.quantile(0.98)
        depth_image = ((depth - near) / (far - near).clamp(min=1e-6)).clamp(0, 1).expand(-1, -1, 3)
        return metrics, {"img": torch.cat([truth, prediction], dim=1), "depth": depth_image}

    # ------------------------------------------------------------------ explain
    # The model is itself ``Explainable`` (pixelsplat_ns.explain.probe): pixelsplat-ns explain
    # records its context views, renders along a path, and one probe pixel of every frame.
    probe_in_context = False

    def explain_context(self) -> list:
        """The context views as the network saw them (square crop), in nerfstudio's conventions."""
        from pixelsplat_ns.explain.probe import ContextView

        run = WideBaselineRun(self)
        c2w, k = run.nerfstudio_cameras()
        images = self.context_views().images[0]
        return [
            ContextView(name=name, c2w=c2w[v].cpu(), K=k[v].cpu(), image=images[v].permute(1, 2, 0).clamp(0, 1).cpu())
            for v, name in enumerate(run.names)
        ]

    @torch.no_grad()
    def explain_render(self, camera: Cameras) -> tuple[Tensor, Tensor]:
        """RGB and depth along the camera's axis (the pseudo-depth is a distance along each ray)."""
        camera = camera.to(self.device)
        bundle = camera.generate_rays(camera_indices=0, keep_shape=True)
        outputs = self.get_outputs_for_camera_ray_bundle(bundle)
        depth = ray_depth_to_z_depth(outputs["depth"][..., 0], bundle.directions, camera.camera_to_worlds[0])
        return outputs["rgb"], depth

    @torch.no_grad()
    def explain_probe(self, camera: Cameras, row: int, col: int):
        """Pixel (row, col) of ``camera``'s render: its epipolar samples in both context views,
        weighted by the first attention round (which sums to 1 over both views' samples)."""
        from pixelsplat_ns.explain.probe import ProbeTrace

        h, w = int(camera.height[0]), int(camera.width[0])
        if not (0 <= row < h and 0 <= col < w):
            raise PixelSplatInputError(f"probe pixel ({row}, {col}) is outside the {w}x{h} image")
        coords = torch.tensor([[row + 0.5, col + 0.5]], device=self.device)
        bundle = camera.to(self.device).generate_rays(camera_indices=0, coords=coords)
        trace = WideBaselineRun(self).trace_ray(bundle.origins[0], bundle.directions[0])
        keep = torch.isfinite(trace.points).all(-1) & torch.isfinite(trace.sample_xy).all(-1)
        weights = torch.where(keep, trace.attention, 0.0)
        weights = weights / weights.sum().clamp_min(1e-12)
        return ProbeTrace(
            origin=trace.origin,
            direction=trace.direction,
            points=trace.points[keep],
            weights=weights[keep],
            view_pixels=[opencv_keypoints_to_pixels(trace.sample_xy[v][keep[v]]) for v in range(keep.shape[0])],
            view_weights=[weights[v][keep[v]] for v in range(keep.shape[0])],
            label=(
                f"pixel ({row}, {col}): {keep.shape[1]} epipolar samples per context view, weighted by the first "
                f"attention round; pseudo-depth {trace.depth:.3g}"
            ),
        )


# ----------------------------------------------------------------------------- pipeline


@dataclass
class WideBaselinePipelineConfig(VanillaPipelineConfig):
    _target: type = field(default_factory=lambda: WideBaselinePipeline)
    datamanager: PixelSplatDataManagerConfig = field(default_factory=PixelSplatDataManagerConfig)
    model: WideBaselineModelConfig = field(default_factory=WideBaselineModelConfig)


class WideBaselinePipeline(ContextPairMixin, VanillaPipeline):
    """VanillaPipeline + context views: read from the dataset when training, restored from the
    checkpoint otherwise."""

    def __init__(
        self,
        config: WideBaselinePipelineConfig,
        device: str,
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        grad_scaler: GradScaler | None = None,
    ):
        atomic_export.install()
        try:
            super().__init__(config, device, test_mode, world_size, local_rank, grad_scaler)
            self.model.set_context_provider(self.datamanager.context_views)
            self.model.walkthrough.set_first_camera(self.first_context_camera)
            self.model.context_train_indices = self.datamanager.context_indices()
            if test_mode == "val":
                self.model.load_context()
            else:  # the saved views: named by the rule that chose them (the run's config)
                filenames = self.datamanager.train_dataset.image_filenames
                self.model.context_names = [filenames[i].name for i in self.model.context_train_indices]
            self.model.walkthrough.set_pair_choice(
                [path.name for path in self.datamanager.train_dataset.image_filenames],
                [self.datamanager.train_dataset.image_filenames[i].name for i in self.datamanager.context_indices()],
                self.context_from_pair,
            )
        except (PixelSplatInputError, FileNotFoundError) as error:  # bad input: one clear message
            CONSOLE.print(f"[bold red]wide-baseline: error: {error}")
            raise SystemExit(2) from None

    def context_from_pair(self, first: str, second: str) -> None:
        """Render from two other training images (the viewer's pair picking). Refused once
        fine-tuning has started: the network has adapted to the current pair."""
        self.switch_context_pair(
            first, second, self.model.load_context,
            "the network is being fine-tuned; pick pairs in a feed-forward run (0 iterations)",
        )  # fmt: skip
