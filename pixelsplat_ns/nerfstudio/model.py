"""PixelSplatModel: splatfacto's model whose Gaussians come from the pixelSplat encoder.

The model is thin on purpose: the encoder (``pixelsplat_ns.encoder``), the conventions
(``pixelsplat_ns.cameras``), the Gaussian conversions (``pixelsplat_ns.gaussians``) and
the rasteriser (``pixelsplat_ns.rendering``) hold all the maths. Subclassing
``SplatfactoModel`` keeps nerfstudio's viewer and ``ns-export gaussian-splat`` working
unchanged; what splatfacto does that cannot run here (``.cuda()`` calls, point-cloud
seeding, LPIPS downloads) is replaced; its densification runs through
``pixelsplat_ns.finetune.starts``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from einops import rearrange, repeat
from jaxtyping import Float, Int
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig
from nerfstudio.utils.rich_utils import CONSOLE
from pytorch_msssim import SSIM
from torch import Tensor
from torch.nn import Parameter

from pixelsplat_ns.cameras import (
    ContextViews,
    caller_to_encoder_c2w,
    encoder_to_caller_c2w,
    gaussians_to_caller_frame,
    normalize_intrinsics,
    opengl_c2w_to_viewmat,
    prepare_context,
    to_caller_frame,
)
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.finetune.starts import (
    moved_along_rays,
    random_cube_params,
    refinement_strategy,
    sample_points,
    seed_point_params,
    seed_spreads,
    spread_along_rays,
)
from pixelsplat_ns.gaussians import (
    Gaussians,
    concatenate_gaussians,
    covariance_to_scales_quaternions,
    official_to_gsplat_sh,
)
from pixelsplat_ns.metrics import build_lpips
from pixelsplat_ns.native_resolution import (
    backdrop_gaussians,
    correct_context_colours,
    depth_disagreement,
    keep_gaussians,
    native_resolution_gaussians,
    sweep_depths,
    visible_mask,
)
from pixelsplat_ns.nerfstudio.context import ContextImages
from pixelsplat_ns.nerfstudio.walkthrough import ContextRun, Walkthrough, encoder_gaussian_pixels
from pixelsplat_ns.rendering import rasterize
from pixelsplat_ns.weights import input_long_side, load_encoder

GAUSSIAN_PARAMS = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")


@dataclass
class PixelSplatModelConfig(SplatfactoModelConfig):
    """pixelSplat: Gaussians predicted from two context views, rendered with gsplat (CUDA) or
    the project's CPU rasteriser, optionally fine-tuned with splatfacto's photometric loss."""

    _target: type = field(default_factory=lambda: PixelSplatModel)
    encoder: Literal["tiny", "official"] = "tiny"
    """Encoder architecture when no checkpoint is given (a checkpoint carries its own)."""
    encoder_checkpoint: Path | None = None
    """Encoder weights: an official pixelSplat checkpoint (re10k.ckpt, acid.ckpt) or one saved by this project.
    Default: the bundled tiny encoder (trained on CPU) for --pipeline.model.encoder tiny."""
    untrained: bool = False
    """Ignore the bundled weights and run the encoder with seeded random weights (ablations, tests)."""
    encoder_long_side: int | None = None
    """Context images are downscaled so their long side is at most this many pixels before encoding
    (default: the scale the encoder was trained at when its checkpoint says, else 512, or 114 for the bundled one)."""
    near_disparity: float | None = None
    """Near plane rule of the official pipeline: disparity (in units of min(h, w) pixels) at the near plane
    (default: the rule the encoder was trained with, 3.0 for official checkpoints)."""
    deterministic: bool = True
    """Take each pixel's most likely depth bucket (the official test-time setting); else sample the distribution."""
    seed: int = 0
    """Seed for the untrained encoder's weights and for depth sampling."""
    background_color: Literal["random", "black", "white"] = "black"
    """Background of renders (the pixelSplat renderer uses black)."""
    num_downscales: int = 0
    """Fine-tuning renders at full resolution from the start: the Gaussians are already in place."""
    sh_degree: int = 3
    """SH degree stored in splatfacto's parameters (gsplat renders at most 3; the official degree-4 band is unused)."""
    rasterize_backend: Literal["auto", "gsplat", "torch"] = "auto"
    """auto: gsplat's CUDA kernels for CUDA tensors, the project's PyTorch rasteriser otherwise."""
    gaussian_resolution: Literal["native", "encoder"] | None = None
    """native: one Gaussian per pixel of the context photos at their own resolution (up to gaussian-long-side),
    depth and opacity carried from the encoder's grid by edge-aware upsampling, colours from both photos, and a
    backdrop (README "Sharp Gaussians"). encoder: pixelSplat's own Gaussians, one per pixel of the encoder's input
    (a smear at the photos' resolution). Default: native for a feed-forward run (0 iterations) and the points start, encoder as
    the prediction start of fine-tuning (measured on llff-fern: the native start is 1.5 dB behind after 1000 steps, behind a
    random start from step 100, and 4-7x slower per step; README "Fine-tuning")."""
    gaussian_long_side: int = 960
    """Native-resolution Gaussians: the photos' long side is capped at this many pixels (their own size when smaller)."""
    gaussian_opacity_gain: float = 100.0
    """Native-resolution Gaussians: the encoder's opacities (its depth confidence) times this, at most 0.99. One
    layer of Gaussians per view must be opaque to give the photo back; 100 makes every Gaussian opaque (3 and 10
    measured: lower at the context cameras, no better between them)."""
    gaussian_scale: float = 0.25
    """Native-resolution Gaussians: standard deviation in units of the pixel's footprint at its depth (0.25-0.5
    measured: 0.25 gives the context photos back at 29 dB against 25 dB at 0.5; the backdrop fills the gaps
    smaller Gaussians leave in novel views)."""
    gaussian_two_view_colours: bool = True
    """Native-resolution Gaussians: each shows its own pixel's colour towards its camera and the other context
    photo's colour (where that camera sees it) towards the other camera (degree-1 SH), so that both context
    cameras see their own photos where the two views' depths disagree."""
    gaussian_stereo: bool = False
    """Native-resolution Gaussians of a pair: each view's upsampled depth is moved, within 2x either way, to where
    the two photos' 7x7 windows agree best (normalised cross-correlation), kept where the two refined views agree
    within 10 %. Off by default: on the four held-out scenes it lifts the views between the pair from 16.50 to
    16.75 dB, but castle-p19's SSIM falls (0.372 -> 0.358) and it moves the demo's white, shiny chair onto the
    floor behind it, a blotch where the chair was."""
    gaussian_colour_correction: float = 0.5
    """Native-resolution Gaussians of a pair: one van Cittert step of this size on their two-view colours, against
    the blur the context cameras' renders add (gsplat's low-pass, neighbours in front). Held-out table (four scenes,
    README): context cameras 30.06 -> 31.92 dB (fern 27.19 -> 28.67), views between 16.53 -> 16.50 dB. Fern and
    castle-p19 pairs with the stereo refinement: 1.0 gives 31.8 dB at the context cameras against 30.4 for 0.5, and
    0.06 dB less between. 0: off."""
    gaussian_backdrop: float | None = 2.0
    """Native-resolution Gaussians: the encoder's own Gaussians, moved back along their rays to at least this many
    times their depth (farther, up to 10 times that, until the other context camera's surface is that factor nearer),
    fill the gaps novel views see between the small native Gaussians. None: no backdrop."""
    initialization: Literal["prediction", "points", "random"] = "prediction"
    """Where fine-tuning starts: the encoder's prediction; its points (prediction-points of the predicted Gaussians'
    centres and colours, native ones and the backdrop behind them, optionally spread along their rays by
    prediction-points-spread, seeded as splatfacto seeds a point cloud: scales from their neighbours, 0.1 opacities,
    splatfacto's rates, densification and pruning); or splatfacto's random cube (num-random Gaussians in a cube of
    side random-scale; its scales, colours and 0.1 opacities) - the start without the encoder, to compare."""
    prediction_points: int = 50000
    """The points start: how many of the prediction's Gaussians seed it (all when fewer; splatfacto's num-random)."""
    prediction_points_spread: tuple[float, float] = (1.0, 1.0)
    """The points start: each seed moves along its camera's ray to its predicted depth times a factor drawn
    log-uniformly between 1/spread and spread, so that the training views can pick the depth where the encoder's
    is wrong; its spread is how far the other context view puts the surface (the larger over the smaller distance),
    kept between these two (the second where the other view cannot see it; backdrop seeds, and every seed of
    encoder-resolution Gaussians or of more than two context views: the first). Default 1 1:
    at the predicted depth. Measured at 2000 steps (README "Fine-tuning"): 2 2 lifts strecha-entry-p10 from 16.13
    to 20.65 dB but castle-p30 falls behind the random start; 1.5 2 lifts llff-fern from 17.04 to 19.30 dB; every
    spread tried wrecks castle-p19 (1.5 2: 13.39 against 16.27)."""
    depth_sweep: bool | None = None
    """Fine-tuning a prediction: before the first step, each of the encoder's Gaussians moves along its ray to the
    depth (from half to twice the encoder's) where its context photo matches the depth-sweep-views nearest training
    photos best (a plane sweep over the encoder's surface: ``sweep_depths``), so that fine-tuning starts from
    where the training views put the surfaces, not where the two context views guessed. Default: on for the
    prediction start of fine-tuning (encoder-resolution Gaussians, more than 0 iterations), off for a feed-forward
    run. Measured (README "Fine-tuning"): strecha-entry-p10 16.75 -> 19.44 dB before the first step, 17.95 ->
    21.29 after 2000."""
    depth_sweep_views: int = 8
    """The depth sweep matches against this many training views, those nearest the context cameras (the context
    views among them)."""
    refine: bool | None = None
    """Fine-tuning densifies and prunes with splatfacto's strategy (gsplat's DefaultStrategy and splatfacto's
    warmup-length, refine-every, densify-grad-thresh, ... flags; a prediction keeps its opacities). Default: on
    for the points and random starts, off for a prediction (measured: densifying it lowers held-out PSNR, see
    README)."""
    prediction_lr_scale: dict[str, tuple[float, float]] = field(
        default_factory=lambda: {
            "means": (0.1, 0.1), "features_dc": (0.1, 0.1), "features_rest": (0.1, 0.1),
            "opacities": (1.0, 0.1), "scales": (1.0, 0.1), "quats": (1.0, 0.1),
        }
    )  # fmt: skip
    """Fine-tuning a prediction: each named optimiser group's learning rate times a factor that is the first number
    until the first of prediction-lr-steps, the second from the second on (exponentially between), on top of the
    group's own schedule; one flag per group, e.g. ``--pipeline.model.prediction-lr-scale.opacities 1 0.1``. The
    points and random starts keep splatfacto's rates. A prediction is already close: at splatfacto's rates its
    positions and colours fit the training views away from the pair at the expense of the views between it (README
    "Fine-tuning")."""
    prediction_lr_steps: tuple[int, int] = (1000, 2000)
    """Fine-tuning a prediction: the steps between which prediction-lr-scale's factors go from their first to their
    second value."""
    context_view_weight: float = 1.0
    """Fine-tuning: weight of the context views' photometric loss relative to the other training views'."""
    cull_alpha_thresh: float | None = None  # type: ignore[assignment]
    """Refinement prunes Gaussians fainter than this. Default: splatfacto's 0.1 for the points and random starts;
    1/255 (what no render can show) for a prediction, whose Gaussians are a blend of faint ones (median opacity about 0.14)."""
    densify_grad_thresh: float = 0.0002
    """Densify Gaussians whose mean screen-space position gradient exceeds this (plain gradients: the CPU
    rasteriser has no absgrad; gsplat's default for them)."""
    use_absgrad: bool = False
    """Not available: the CPU rasteriser computes plain gradients only."""


class PixelSplatModel(SplatfactoModel):
    """Splatfacto whose Gaussians are predicted by the pixelSplat encoder from context views."""

    config: PixelSplatModelConfig

    # ------------------------------------------------------------------ set-up
    def populate_modules(self) -> None:
        # splatfacto's own populate_modules seeds Gaussians from points with .cuda() and
        # builds LPIPS (which downloads AlexNet); neither may happen here. The Gaussians
        # start empty and are filled by initialize_gaussians() before the first render.
        k = (self.config.sh_degree + 1) ** 2
        self.gauss_params = torch.nn.ParameterDict(
            {
                "means": Parameter(torch.empty(0, 3)),
                "scales": Parameter(torch.empty(0, 3)),
                "quats": Parameter(torch.empty(0, 4)),
                "features_dc": Parameter(torch.empty(0, 3)),
                "features_rest": Parameter(torch.empty(0, k - 1, 3)),
                "opacities": Parameter(torch.empty(0, 1)),
            }
        )
        # Persisted, so a reloaded run (ns-viewer, ns-export, ...) renders its saved Gaussians.
        self.register_buffer("gaussians_predicted", torch.tensor(False))
        self.camera_optimizer = self.config.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")
        from torchmetrics.image import PeakSignalNoiseRatio

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.lpips = build_lpips()
        self.step = 0
        self.crop_box = None
        self.background_color = (
            torch.tensor([0.1490, 0.1647, 0.2157])
            if self.config.background_color == "random"
            else {"black": torch.zeros(3), "white": torch.ones(3)}[self.config.background_color]
        )
        self.info: dict = {}
        self.context_provider: Callable[..., ContextImages] | None = None
        self.sweep_provider: Callable[[int, int], ContextImages] | None = None  # set_sweep_provider
        self.context_names: list[str] = []
        # The viewer's walkthrough panel; runs the encoder (with attention) on first use.
        self.walkthrough = Walkthrough(lambda: self.run_encoder(return_attention=True))
        # The encoder pixel (view, row, column) each Gaussian came from, for the walkthrough's
        # picking; persisted so that ns-viewer on a saved run can trace a clicked Gaussian.
        self.register_buffer("gaussian_pixels", torch.zeros(0, 3, dtype=torch.long))
        self.walkthrough.set_gaussian_source(
            lambda: (self.means.detach(), torch.sigmoid(self.opacities.detach()).squeeze(-1), self.gaussian_pixels)
        )
        self.context_train_indices: list[int] = []
        # Set with each prediction: the context cameras' centres (nerfstudio's frame), and how far the other
        # context view puts each Gaussian's surface (a factor; 1 where there is no other view to ask).
        self.context_origins: Float[Tensor, "view 3"] = torch.zeros(0, 3)
        self.depth_disagreement: Float[Tensor, " gaussian"] = torch.zeros(0)
        # The SH degree fine-tuning last rendered with (-1: never fine-tuned), persisted, so that a reloaded
        # run renders as it was trained: bands the schedule had not reached hold their start, unfitted.
        self.register_buffer("trained_sh_degree", torch.tensor(-1))
        self.strategy = refinement_strategy(self.config, self.num_train_data, splatfacto_start=self.splatfacto_start)
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)

    def set_context_provider(self, provider: Callable[..., ContextImages]) -> None:
        """Where the context views come from (called lazily: reloaded runs never need them), as
        ``provider(long_side)``: ``long_side`` maps the views' (h, w) to the long side they may be
        downscaled to (``PixelSplatDataManager.context_views``)."""
        self.context_provider = provider

    def set_sweep_provider(self, provider: Callable[[int, int], ContextImages]) -> None:
        """Where the depth sweep's training views come from, as ``provider(count, long_side)``
        (``PixelSplatDataManager.sweep_views``)."""
        self.sweep_provider = provider

    # ------------------------------------------------------------------ starts
    @torch.no_grad()
    def initialize_gaussians(self) -> None:
        """The start of a run (``initialization``): the encoder's prediction, its points or splatfacto's random cube."""
        if self.config.use_absgrad:
            raise PixelSplatInputError(
                "--pipeline.model.use-absgrad is not available: the CPU rasteriser has no absgrad"
            )
        if self.config.initialization == "prediction":
            self.predict_gaussians()
            return
        if self.config.initialization == "points":
            self._seed_from_prediction()
            return
        params = random_cube_params(
            self.config.num_random, self.config.random_scale, self.config.sh_degree, seed=self.config.seed
        )
        self._set_params(params, pixels=torch.zeros(0, 3, dtype=torch.long))  # from no pixel
        CONSOLE.print(
            f"pixelsplat: random start: {self.config.num_random:,} Gaussians in a cube of side {self.config.random_scale} "
            "(splatfacto's random_init)"
        )

    def _seed_from_prediction(self) -> None:
        """The points start: a seeded sample of the predicted Gaussians' centres and colours (native ones and
        the backdrop: far points seed what lies behind the surfaces), spread along their cameras' rays when
        prediction-points-spread asks (``spread_along_rays``), as splatfacto seeds from a point cloud
        (``seed_point_params``); each keeps the pixel it came from."""
        count = self.config.prediction_points
        if count < 4:
            raise PixelSplatInputError(
                f"--pipeline.model.prediction-points must be at least 4 (a seed's scale is the distance to its 3 "
                f"nearest neighbours), got {count}"
            )
        least, most = self.config.prediction_points_spread
        if not 1 <= least <= most < math.inf:
            raise PixelSplatInputError(
                f"--pipeline.model.prediction-points-spread must be two factors 1 <= LEAST <= MOST (either way along "
                f"the rays; 1 1: at the predicted depth), got {least} {most}"
            )
        self.predict_gaussians()
        if self.means.shape[0] < 4:
            raise PixelSplatInputError(
                f"the points start needs at least 4 predicted Gaussians that can be seen, got {self.means.shape[0]}: "
                "check the context views and the encoder checkpoint"
            )
        # Seeds are made on the CPU (splatfacto's neighbour search is sklearn's); the context cameras are there.
        chosen = sample_points(count, self.means.shape[0], seed=self.config.seed)
        pixels = self.gaussian_pixels.cpu()[chosen]
        seeds = self.means.detach().cpu()[chosen]
        if most > 1:
            origins = self.context_origins.cpu()[pixels[:, 0]]  # each seed's camera
            spreads = seed_spreads(self.depth_disagreement.cpu()[chosen], least, most)
            seeds = spread_along_rays(seeds, origins, spreads, seed=self.config.seed)
        params = seed_point_params(seeds, self.features_dc.detach().cpu()[chosen], self.config.sh_degree,
                                   seed=self.config.seed)  # fmt: skip
        self._set_params(params, pixels=pixels)
        CONSOLE.print(f"pixelsplat: points start: {chosen.numel():,} of the prediction's Gaussians seed splatfacto")

    def _set_params(self, params: dict[str, Float[Tensor, "gaussian ..."]], pixels: Int[Tensor, "gaussian 3"]) -> None:
        """Splatfacto's parameters from a start's (and the pixels they came from); refinement statistics reset."""
        for name in GAUSSIAN_PARAMS:
            self.gauss_params[name] = Parameter(params[name].detach().to(self.device, torch.float32).contiguous())
        self.gaussian_pixels = pixels.to(self.device)
        self.gaussians_predicted.fill_(True)
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)  # statistics of the old Gaussians go

    @property
    def splatfacto_start(self) -> bool:
        """Whether the start is splatfacto's (seeded points or the random cube), fine-tuned with its rates,
        densification, pruning and opacity resets, rather than a prediction's Gaussians."""
        return self.config.initialization in ("points", "random")

    # ------------------------------------------------------------------ prediction
    @torch.no_grad()
    def run_encoder(self, return_attention: bool = False) -> ContextRun:
        """The encoder on the context views (pixelSplat's conventions, see ``prepare_context``)."""
        if self.context_provider is None:
            raise RuntimeError("PixelSplatModel has no context views: call set_context_provider() first")
        encoder = load_encoder(
            self.config.encoder,
            self.config.encoder_checkpoint,
            seed=self.config.seed,
            untrained=self.config.untrained,
            for_inference=True,
        )
        encoder_side: list[int] = []

        def long_side(image_shape: tuple[int, int]) -> int:
            # The largest size anything below needs: the photos are downscaled to it one at a
            # time as they are read, so huge photos never become a float batch.
            encoder_side.append(
                self.config.encoder_long_side
                or input_long_side(
                    encoder, image_shape, self.config.encoder, self.config.encoder_checkpoint, self.config.untrained
                )
            )
            native = self.native_gaussians
            return max(encoder_side[0], self.config.gaussian_long_side) if native else encoder_side[0]

        context = self.context_provider(long_side)
        images = context.images
        if context.alpha is not None:  # transparent pixels show the renders' background
            images = images + (1 - context.alpha) * self._encoder_background()
        if not encoder_side:  # a provider that serves the views at their own size
            long_side(tuple(images.shape[1:3]))
        views = prepare_context(
            images,
            context.c2w,
            context.intrinsics,
            image_multiple=encoder.image_multiple,
            long_side=encoder_side[0],
            near_disparity=encoder.cfg.near_disparity
            if self.config.near_disparity is None
            else self.config.near_disparity,
            names=context.names,
            gaussian_long_side=self.config.gaussian_long_side if self.native_gaussians else None,
        )
        if self.native_gaussians and self.config.gaussian_long_side < max(views.image.shape[-2:]):
            raise PixelSplatInputError(
                f"--pipeline.model.gaussian-long-side must be at least the encoder's input long side "
                f"({max(views.image.shape[-2:])} px), got {self.config.gaussian_long_side}; for Gaussians at the "
                "encoder's resolution use --pipeline.model.gaussian-resolution encoder"
            )
        with torch.random.fork_rng(devices=[]):  # seeded depth sampling, caller's RNG untouched
            torch.manual_seed(self.config.seed)
            output = encoder(
                views.image, views.extrinsics, views.intrinsics, views.near, views.far,
                deterministic=self.config.deterministic, global_step=0, return_attention=return_attention,
            )  # fmt: skip
        return ContextRun(views, output, list(context.names))

    def _encoder_background(self) -> torch.Tensor:
        """The colour transparent context pixels take: the renders' background (black for a
        random one, which has no single colour)."""
        if self.config.background_color == "white":
            return torch.ones(3)
        return torch.zeros(3)

    def predict_gaussians(self) -> Gaussians:
        """Run the encoder on the context views and write its Gaussians into splatfacto's
        parameters (means, log-scales, wxyz quaternions, SH DC/rest, logit opacities):
        pixelSplat's or native-resolution ones (``gaussian_resolution``; with two-view colours and the
        backdrop of the encoder's Gaussians behind them), pruned of those no
        camera can see (opacity under 1/255, behind their camera's near plane)."""
        self._check_gaussian_config()
        run = self.run_encoder()
        views, output = run.views, run.output
        if self.native_gaussians:
            if self.config.depth_sweep:
                raise PixelSplatInputError(
                    "--pipeline.model.depth-sweep moves the encoder's Gaussians: use it with "
                    "--pipeline.model.gaussian-resolution encoder"
                )
            if self.config.gaussian_stereo and views.extrinsics.shape[1] != 2:
                raise PixelSplatInputError(
                    f"--pipeline.model.gaussian-stereo matches a pair of context views, got {views.extrinsics.shape[1]}"
                )
            native = native_resolution_gaussians(
                output,
                views,
                scale=self.config.gaussian_scale,
                opacity_gain=self.config.gaussian_opacity_gain,
                two_view_colours=self.config.gaussian_two_view_colours,
                stereo=self.config.gaussian_stereo,
            )
            gaussians, pixels, depths = native.gaussians, native.encoder_pixels[0], native.depths.flatten(1)
            spread = self.config.initialization == "points" and self.config.prediction_points_spread[1] > 1
            disagreement = (  # only a spread points start reads it
                depth_disagreement(native.depths[0], views.extrinsics[0], views.full_intrinsics[0]).flatten()
                if spread and views.extrinsics.shape[1] == 2
                else torch.ones(depths.shape[1], device=depths.device)
            )
            if self.config.gaussian_backdrop is not None:
                backdrop = backdrop_gaussians(output.gaussians, views, native.depths, self.config.gaussian_backdrop)
                gaussians = concatenate_gaussians(gaussians, backdrop)
                backdrop_pixels = encoder_gaussian_pixels(output, run.image_shape)
                pixels = torch.cat((pixels, backdrop_pixels))
                origins = views.extrinsics[0, backdrop_pixels[:, 0], :3, 3]
                moved = (backdrop.means[0] - origins).norm(dim=-1)[None]  # distance along their rays
                depths = torch.cat((depths, moved), dim=1)
                disagreement = torch.cat(
                    (disagreement, torch.ones(moved.shape[1], device=depths.device))
                )  # a fill, not a depth
            two_view = self.config.gaussian_two_view_colours and views.extrinsics.shape[1] == 2
            if two_view and self.config.gaussian_colour_correction > 0:
                gaussians = correct_context_colours(
                    gaussians, native.gaussians.means.shape[1], views, native.depths,
                    step=self.config.gaussian_colour_correction, background=self.background_color,
                )  # fmt: skip
        else:
            gaussians, pixels = output.gaussians, encoder_gaussian_pixels(output, run.image_shape)
            depths = output.depths.flatten(1)
            if self.config.depth_sweep:
                gaussians, factors = self._swept(gaussians, output.depths, views)
                depths = depths * factors
            disagreement = torch.ones(depths.shape[1], device=depths.device)
        near = views.near[0, pixels[:, 0]]  # each Gaussian's own camera's
        keep = visible_mask(gaussians.opacities[0], depths[0], near)
        total = gaussians.means.shape[1]
        if not bool(keep.any()):
            raise PixelSplatInputError(
                f"none of the {total:,} predicted Gaussians can be seen (all fainter than 1/255 or behind their "
                "camera's near plane): check the context views and the encoder checkpoint"
            )
        gaussians = keep_gaussians(gaussians, keep[None])
        means, covariances = gaussians_to_caller_frame(gaussians.means[0], gaussians.covariances[0], views.scene_scale)
        scales, rotations = gaussians.scales_and_rotations()
        self.set_gaussians(
            means, covariances, gaussians.harmonics[0], gaussians.opacities[0],
            scales=to_caller_frame(scales[0], views.scene_scale), rotations=rotations[0], pixels=pixels[keep],
        )  # fmt: skip
        self.context_names = run.names
        self.context_origins = encoder_to_caller_c2w(views.extrinsics[0], views.scene_scale)[:, :3, 3]
        self.depth_disagreement = disagreement.to(keep.device)[keep]
        size = views.image.shape[-2:] if views.full_image is None else views.full_image.shape[-2:]
        CONSOLE.print(
            f"pixelsplat: predicted {total:,} Gaussians ({size[1]}x{size[0]} px per view, encoder at "
            f"{views.image.shape[-1]}x{views.image.shape[-2]}) from context views {', '.join(run.names)}; "
            f"kept {means.shape[0]:,} that can be seen"
        )
        return gaussians

    def _swept(
        self, gaussians: Gaussians, depths: Float[Tensor, "1 view ray surface sample"], views: ContextViews
    ) -> tuple[Gaussians, Float[Tensor, " gaussian"]]:
        """The encoder's Gaussians moved along their rays to the depths where the training photos nearest the
        context cameras agree (``depth_sweep``), and the factor each one's depth was multiplied by."""
        if self.sweep_provider is None:
            raise RuntimeError("PixelSplatModel has no training views to sweep: call set_sweep_provider() first")
        count = self.config.depth_sweep_views
        if count < 2:
            raise PixelSplatInputError(
                f"--pipeline.model.depth-sweep-views must be at least 2 (the context views are among them), got {count}"
            )
        height, width = views.image.shape[-2:]
        # Each encoder pixel's first Gaussian's depth (deterministic runs: its most likely bucket's); the sweep
        # moves all of a pixel's Gaussians by one factor.
        depth_map = rearrange(depths[0], "v (h w) s p -> v h w (s p)", h=height)[..., 0]
        sweep = self.sweep_provider(count, max(height, width))
        size = sweep.images.shape[1:3]
        sources = sweep.images
        if sweep.alpha is not None:  # on the background the context views were composited on, as the encoder saw them
            sources = sources + (1 - sweep.alpha) * self._encoder_background()
        refined, _ = sweep_depths(
            views.image[0], depth_map, views.extrinsics[0], views.intrinsics[0],
            list(rearrange(sources, "n h w c -> n c h w").to(views.image.device)),
            caller_to_encoder_c2w(sweep.c2w, views.scene_scale), normalize_intrinsics(sweep.intrinsics, size[1], size[0]),
        )  # fmt: skip
        factor = refined / depth_map
        per_pixel = depths.shape[3] * depths.shape[4]
        factors = repeat(factor, "v h w -> (v h w r)", r=per_pixel)
        origins = repeat(views.extrinsics[0, :, :3, 3], "v c -> (v r) c", r=height * width * per_pixel)
        moved = moved_along_rays(gaussians, origins, factors)
        change = factor.log().abs()
        CONSOLE.print(
            f"pixelsplat: depth sweep against {len(sweep.names)} training views: the prediction's depths moved by "
            f"x{float(change.median().exp()):.2f} (median), {float((change > math.log(1.2)).float().mean()):.0%} of "
            "them by more than 1.2x"
        )
        return moved, factors

    @property
    def native_gaussians(self) -> bool:
        """Whether predictions are native-resolution Gaussians (``gaussian_resolution``; unset means
        native: ``ns-train`` sets it to encoder for the ``prediction`` start of fine-tuning, see
        ``PixelSplatTrainerConfig.resolve_start``)."""
        return self.config.gaussian_resolution != "encoder"

    def _check_gaussian_config(self) -> None:
        if not self.native_gaussians:
            return
        for flag, value in (
            ("gaussian-scale", self.config.gaussian_scale),
            ("gaussian-opacity-gain", self.config.gaussian_opacity_gain),
        ):
            if not value > 0:
                raise PixelSplatInputError(f"--pipeline.model.{flag} must be positive, got {value}")
        correction = self.config.gaussian_colour_correction
        if not 0 <= correction <= 1:
            raise PixelSplatInputError(
                f"--pipeline.model.gaussian-colour-correction must be in [0, 1] (a step towards the context photos; "
                f"0: off), got {correction}"
            )
        backdrop = self.config.gaussian_backdrop
        if backdrop is not None and not backdrop >= 1:
            raise PixelSplatInputError(
                f"--pipeline.model.gaussian-backdrop must be at least 1 (times the depth: behind the surface) or None, "
                f"got {backdrop}"
            )

    def set_gaussians(
        self,
        means: torch.Tensor,
        covariances: torch.Tensor,
        harmonics: torch.Tensor,
        opacities: torch.Tensor,
        scales: torch.Tensor | None = None,
        rotations: torch.Tensor | None = None,
        pixels: Int[Tensor, "gaussian 3"] | None = None,
    ) -> None:
        """Write pixelSplat Gaussians (world frame, official SH basis) into splatfacto's
        parameters. ``scales``/``rotations`` (wxyz): the covariances' factors when known
        (else found by eigen-decomposition); ``pixels``: the encoder pixel each came from (None: none)."""
        if scales is None or rotations is None:
            scales, quats = covariance_to_scales_quaternions(covariances)
        else:
            quats = rotations
        sh = official_to_gsplat_sh(harmonics, max_degree=self.config.sh_degree)
        k = (self.config.sh_degree + 1) ** 2
        if sh.shape[-2] < k:  # an encoder with fewer SH bands: the missing bands are zero
            sh = torch.cat((sh, sh.new_zeros(sh.shape[0], k - sh.shape[-2], 3)), dim=-2)
        eps = 1e-6
        values = {
            "means": means,
            "scales": scales.log(),
            "quats": quats,
            "features_dc": sh[:, 0, :],
            "features_rest": sh[:, 1:, :],
            "opacities": torch.logit(opacities.clamp(eps, 1 - eps))[:, None],
        }
        self._set_params(values, torch.zeros(0, 3, dtype=torch.long) if pixels is None else pixels)

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        dict.setdefault("trained_sh_degree", torch.tensor(-1))  # runs saved before it existed: never fine-tuned
        if "gaussian_pixels" in dict:  # sized like the saved Gaussians
            self.gaussian_pixels = torch.empty_like(dict["gaussian_pixels"], device=self.device)
        else:  # a run saved before Gaussians recorded their pixels: none known (picking says so)
            self.gaussian_pixels = torch.zeros(0, 3, dtype=torch.long, device=self.device)
        super().load_state_dict(dict, **kwargs)
        self.step = 0  # splatfacto sets 30000 for its SH schedule; here trained_sh_degree says what to render

    # ------------------------------------------------------------------ training hooks
    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> list[TrainingCallback]:
        callbacks = [
            TrainingCallback(
                [TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
                self.step_cb,
                args=[training_callback_attributes.optimizers],
            )
        ]
        if self.refining:
            callbacks.append(
                TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.step_post_backward)
            )
        return callbacks

    def step_cb(self, optimizers: Optimizers, step: int) -> None:
        self.step = step
        self.optimizers = optimizers.optimizers

    def step_post_backward(self, step: int) -> None:
        """Densify and prune (splatfacto's strategy); the Gaussians' source pixels follow them."""
        tracked = self.gaussian_pixels.shape[0] == self.means.shape[0] and self.gaussian_pixels.shape[0] > 0
        if tracked:
            self.strategy_state["gaussian_pixels"] = self.gaussian_pixels
        self.strategy.step_post_backward(
            params=self.gauss_params, optimizers=self.optimizers, state=self.strategy_state, step=step, info=self.info
        )
        if tracked:
            self.gaussian_pixels = self.strategy_state.pop("gaussian_pixels")

    def learning_rate_factors(self, groups: list[str]) -> dict[str, Callable[[int], float]]:
        """Each optimiser group's learning-rate factor by step for this run's start (``prediction_lr_scale``
        between ``prediction_lr_steps``; none for splatfacto's starts); unknown groups, non-positive factors or
        bad steps are refused in one line."""
        scales, (first, last) = self.config.prediction_lr_scale, self.config.prediction_lr_steps
        for group, factors in scales.items():
            if group not in groups or len(factors) != 2 or not min(factors) > 0:
                raise PixelSplatInputError(
                    f"--pipeline.model.prediction-lr-scale: expected GROUP START END with positive factors and "
                    f"GROUP among {', '.join(groups)}, got {group} {' '.join(map(str, factors))}"
                )
        if not 0 <= first < last:
            raise PixelSplatInputError(
                f"--pipeline.model.prediction-lr-steps: expected two step counts 0 <= FIRST < LAST, got {first} {last}"
            )
        if self.splatfacto_start:
            return {}

        def factor(start: float, end: float) -> Callable[[int], float]:
            return lambda step: float(
                start * (end / start) ** (min(max(step - first, 0), last - first) / (last - first))
            )

        return {group: factor(*factors) for group, factors in scales.items()}

    @property
    def refining(self) -> bool:
        """Whether fine-tuning densifies and prunes (``refine``; default: for splatfacto's starts only)."""
        return self.splatfacto_start if self.config.refine is None else self.config.refine

    def sh_degree_to_use(self) -> int:
        """splatfacto's schedule while training (one more SH band every sh-degree-interval steps), from the
        prediction's own degree (two-view colours: 1): with every band from step 0 a prediction fits each
        training view by its view-dependent colour instead of moving its Gaussians (measured, README
        "Fine-tuning"). Rendering otherwise uses the degree fine-tuning reached, or every band when there
        was none."""
        if self.training:
            degree = min(
                max(self.step // self.config.sh_degree_interval, self._predicted_sh_degree()), self.config.sh_degree
            )
            self.trained_sh_degree.fill_(degree)
            return degree
        trained = int(self.trained_sh_degree)
        return self.config.sh_degree if trained < 0 else trained

    def _predicted_sh_degree(self) -> int:
        """The SH degree a prediction's colours need from the first step: 1 for two-view colours
        (their first band is what shows each context camera its own photo), else 0."""
        c = self.config
        two_view = self.native_gaussians and c.gaussian_two_view_colours and len(self.context_names) == 2
        return 1 if c.initialization == "prediction" and two_view else 0  # points: seeded without bands

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, torch.Tensor]:
        """splatfacto's L1 + SSIM loss, the context views' weighted by ``context_view_weight``."""
        losses = super().get_loss_dict(outputs, batch, metrics_dict)
        weighted = self.training and self.config.context_view_weight != 1.0  # eval batches index the eval set
        if weighted and int(batch.get("image_idx", -1)) in self.context_train_indices:
            losses["main_loss"] = losses["main_loss"] * self.config.context_view_weight
        return losses

    # ------------------------------------------------------------------ rendering
    def get_outputs(self, camera: Cameras) -> dict[str, torch.Tensor | list]:
        """Render one camera: ``rgb`` [H, W, 3], ``depth`` [H, W, 1] (expected depth, eval
        only unless ``output_depth_during_training``), ``accumulation`` [H, W, 1]."""
        if not isinstance(camera, Cameras):
            raise TypeError(f"PixelSplatModel renders nerfstudio Cameras, got {type(camera).__name__}")
        if not bool(self.gaussians_predicted):
            self.initialize_gaussians()
        if self.training:
            if camera.shape[0] != 1:
                raise ValueError("training renders one camera at a time")
            c2w = self.camera_optimizer.apply_to_camera(camera)
        else:
            c2w = camera.camera_to_worlds

        params = {name: self.gauss_params[name] for name in GAUSSIAN_PARAMS}
        if self.crop_box is not None and not self.training:
            inside = self.crop_box.within(params["means"]).squeeze()
            if inside.sum() == 0:
                return self.get_empty_outputs(
                    int(camera.width.item()), int(camera.height.item()), self.background_color
                )
            params = {name: value[inside] for name, value in params.items()}

        width, height = int(camera.width.item()), int(camera.height.item())
        viewmat = opengl_c2w_to_viewmat(c2w.to(self.device))
        ks = camera.get_intrinsics_matrices().to(self.device)
        render_mode = "RGB+ED" if (self.config.output_depth_during_training or not self.training) else "RGB"
        colors = torch.cat((params["features_dc"][:, None, :], params["features_rest"]), dim=1)
        render, alpha, self.info = rasterize(
            means=params["means"],
            quats=params["quats"],
            scales=params["scales"].exp(),
            opacities=params["opacities"].sigmoid().squeeze(-1),
            colors=colors,
            viewmats=viewmat,
            Ks=ks,
            width=width,
            height=height,
            sh_degree=self.sh_degree_to_use(),
            render_mode=render_mode,
            backend=self.config.rasterize_backend,
        )
        if self.training and self.refining and self.info["means2d"].requires_grad:
            # keeps the screen-space gradients densification reads (optimisers unused here)
            self.strategy.step_pre_backward(self.gauss_params, {}, self.strategy_state, self.step, self.info)
        background = self._get_background_color()
        rgb = (render[..., :3] + (1 - alpha) * background).clamp(0.0, 1.0)
        depth = None
        if render_mode == "RGB+ED":
            depth = render[..., 3:4]
            depth = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        if not self.training:
            background = background.expand(height, width, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}

    # ------------------------------------------------------------------ metrics
    def get_image_metrics_and_images(
        self, outputs: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        gt_rgb = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        predicted_rgb = outputs["rgb"]
        combined_rgb = torch.cat([gt_rgb, predicted_rgb], dim=1)
        gt = gt_rgb.permute(2, 0, 1)[None]
        predicted = predicted_rgb.permute(2, 0, 1)[None]
        metrics = {"psnr": float(self.psnr(gt, predicted).item()), "ssim": float(self.ssim(gt, predicted))}
        if self.lpips is not None:
            metrics["lpips"] = float(self.lpips(gt, predicted))
        return metrics, {"img": combined_rgb}
