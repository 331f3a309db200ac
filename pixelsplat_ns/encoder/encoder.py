"""The pixelSplat encoder: two (or more) posed images -> pixel-aligned 3D Gaussians.

backbone -> projection to d_feature -> epipolar transformer -> + high-resolution skip
-> per pixel: depth distribution (sampled) and Gaussian parameters -> world-space Gaussians.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int64
from torch import Tensor, nn

from ..epipolar.sampler import EpipolarSampling
from ..errors import PixelSplatInputError
from ..gaussians import Gaussians
from ..geometry import pixel_centers
from .adapter import GaussianAdapter
from .backbone import build_backbone
from .config import EncoderConfig
from .depth import DepthPredictor, map_pdf_to_opacity
from .epipolar_transformer import EpipolarTransformer
from .placeholders import UnusedWeights
from .sh_rotation import wigner_blocks


@dataclass
class EncoderOutput:
    gaussians: Gaussians
    """Ordered (view, row, column, surface, sample), flattened per batch element."""
    depth_pdf: Float[Tensor, "batch view ray surface bucket"]
    """Softmax over depth buckets (uniform in disparity between near and far); ray = row * w + col."""
    depths: Float[Tensor, "batch view ray surface sample"]
    """Sampled depths (distance along the unit ray) of the Gaussians."""
    depth_index: Int64[Tensor, "batch view ray surface sample"]
    """Bucket each depth was drawn from."""
    depth_offset: Float[Tensor, "batch view ray surface bucket"]
    """Position within each bucket (sigmoid) the depth would take."""
    sampling: EpipolarSampling | None = None
    """Epipolar sample geometry (at the transformer's downscaled resolution); None without
    an epipolar transformer."""
    attention: Float[Tensor, "batch view layer head ray other_view sample"] | None = None
    """Cross-attention weights over the epipolar samples (``return_attention=True``)."""
    intermediates: dict[str, Tensor] = field(default_factory=dict)
    """With ``return_intermediates=True``: backbone [b v c h w], backbone_projection
    [b v h w c], epipolar_transformer [b v c h w] (before the skip), depth_pdf, depth_offset."""


def _conv1x1(x: Float[Tensor, "n c h w"], linear: nn.Linear) -> Float[Tensor, "n d h w"]:
    """A Linear layer applied over the channels of an NCHW map."""
    return F.conv2d(x, linear.weight[:, :, None, None], linear.bias)


class PixelSplatEncoder(nn.Module):
    def __init__(self, cfg: EncoderConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone = build_backbone(cfg.backbone)
        self.backbone_projection = nn.Sequential(nn.ReLU(), nn.Linear(self.backbone.d_out, cfg.d_feature))
        if cfg.use_epipolar_transformer:
            self.epipolar_transformer = EpipolarTransformer(cfg.epipolar, cfg.d_feature, cfg.num_views)
        else:
            self.epipolar_transformer = None
        self.depth_predictor = DepthPredictor(
            cfg.d_feature, cfg.num_depth_buckets, cfg.num_surfaces, cfg.use_transmittance
        )
        self.gaussian_adapter = GaussianAdapter(cfg.gaussian_adapter)
        self.to_gaussians = nn.Sequential(
            nn.ReLU(), nn.Linear(cfg.d_feature, cfg.num_surfaces * (2 + self.gaussian_adapter.d_in))
        )
        self.high_resolution_skip = nn.Sequential(nn.Conv2d(3, cfg.d_feature, 7, 1, 3), nn.ReLU())

    @property
    def image_multiple(self) -> int:
        """Image heights and widths must be multiples of this."""
        return self.cfg.image_multiple

    def unused_state_keys(self) -> list[str]:
        """State-dict keys of weights the forward pass never reads (zero-stride
        placeholders: loading drops their values)."""
        return [
            key
            for name, module in self.named_modules()
            if isinstance(module, UnusedWeights)
            for key in module.state_keys(f"{name}.")
        ]

    @property
    def epipolar_sampler(self):
        return None if self.epipolar_transformer is None else self.epipolar_transformer.epipolar_sampler

    # ------------------------------------------------------------------ input checks
    def _validate(self, images: Tensor, extrinsics: Tensor, intrinsics: Tensor, near: Tensor, far: Tensor) -> None:
        for name, value in (
            ("images", images), ("extrinsics", extrinsics), ("intrinsics", intrinsics), ("near", near), ("far", far)
        ):  # fmt: skip
            if not isinstance(value, Tensor):
                raise ValueError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
            if not value.is_floating_point():
                raise ValueError(f"{name} must be a floating-point tensor, got {value.dtype}")
        if images.ndim != 5 or images.shape[2] != 3:
            raise ValueError(f"images must have shape [batch, view, 3, height, width], got {tuple(images.shape)}")
        b, v, _, h, w = images.shape
        expected = {
            "extrinsics": (extrinsics, (b, v, 4, 4)),
            "intrinsics": (intrinsics, (b, v, 3, 3)),
            "near": (near, (b, v)),
            "far": (far, (b, v)),
        }
        for name, (value, shape) in expected.items():
            if tuple(value.shape) != shape:
                raise ValueError(
                    f"{name} must have shape {list(shape)} to match images {list(images.shape)}, got {list(value.shape)}"
                )
        multiple = self.image_multiple
        if h % multiple or w % multiple or h == 0 or w == 0:
            raise ValueError(
                f"image size {h}x{w} (height x width) is not a multiple of {multiple}, which this encoder needs "
                f"(crop or resize the images, e.g. to {max(multiple, h // multiple * multiple)}x{max(multiple, w // multiple * multiple)})"
            )
        for name, value in (("extrinsics", extrinsics), ("intrinsics", intrinsics), ("near", near), ("far", far)):
            if not torch.isfinite(value).all():
                raise ValueError(f"{name} contain NaN or infinite values")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values")
        if (near <= 0).any():
            raise ValueError(f"near must be positive, got {near.min().item():g}")
        if (far <= near).any():
            raise ValueError("far must be greater than near for every view")
        if (intrinsics[..., 0, 0] == 0).any() or (intrinsics[..., 1, 1] == 0).any():
            raise ValueError("intrinsics have a zero focal length")
        if self.epipolar_transformer is not None:
            if v < 2:
                raise ValueError(f"the epipolar transformer needs at least 2 context views, got {v}")
            if v > 2 and v > self.cfg.num_views:
                raise PixelSplatInputError(
                    f"this encoder was built for {self.cfg.num_views} context views, got {v}: give "
                    f"{self.cfg.num_views} context views, or a checkpoint trained with {v} (official 3-view checkpoints load)"
                )
        determinant = torch.linalg.det(extrinsics[..., :3, :3].double())
        if ((determinant - 1).abs() > 1e-3).any():
            raise ValueError("extrinsics' rotation parts are not rotations (determinant != 1)")

    # ------------------------------------------------------------------ forward
    def encode_features(
        self, images: Float[Tensor, "batch view 3 h w"], intermediates: dict[str, Tensor] | None = None
    ) -> Float[Tensor, "batch view channel h w"]:
        """Backbone + ReLU + projection to d_feature; ``intermediates`` (when given)
        receives ``backbone`` and ``backbone_projection``."""
        b = images.shape[0]
        raw = self.backbone(rearrange(images, "b v c h w -> (b v) c h w"))
        projected = _conv1x1(self.backbone_projection[0](raw), self.backbone_projection[1])
        features = rearrange(projected, "(b v) c h w -> b v c h w", b=b)
        if intermediates is not None:
            intermediates["backbone"] = rearrange(raw, "(b v) c h w -> b v c h w", b=b)
            intermediates["backbone_projection"] = rearrange(features, "b v c h w -> b v h w c")
        return features

    def predict_pixels(
        self,
        features: Float[Tensor, "batch view channel h w"] | Callable[[int, int, int, int], Tensor],
        images: Float[Tensor, "batch view 3 h w"],
        extrinsics: Float[Tensor, "batch view 4 4"],
        intrinsics: Float[Tensor, "batch view 3 3"],
        near: Float[Tensor, "batch view"],
        far: Float[Tensor, "batch view"],
        deterministic: bool,
        global_step: int,
        band: int = 64,
    ) -> dict[str, Tensor]:
        """High-resolution skip, depth distribution and Gaussian parameters per pixel, in
        bands of ``band`` rows per view (full-resolution temporaries stay small; 64 rows are
        four of the inference's FFT tiles of the refinement conv,
        ``inference.epipolar_transformer.SPECTRAL_TILE``). ``features``
        is a tensor or a function (batch, view, top, bottom) -> [channel, bottom - top, w].

        Returns [batch, view, ray, ...] tensors: depth_pdf, depth_offset, depths,
        depth_index, means, covariances, harmonics, opacities, scales, world_rotations."""
        b, v, _, h, w = images.shape
        if self.epipolar_transformer is not None:  # bands must cover whole low-resolution rows
            r = max(self.cfg.epipolar.downscale, 1)
            band = r * max(1, band // r)
        if isinstance(features, Tensor):
            full = features

            def features(batch: int, view: int, top: int, bottom: int) -> Tensor:
                return full[batch, view, :, top:bottom]

        samples = 1 if deterministic else self.cfg.gaussians_per_pixel
        pixel_size = torch.tensor((1 / w, 1 / h), dtype=images.dtype, device=images.device)
        pixels = rearrange(pixel_centers(h, w, images.device, images.dtype), "h w xy -> (h w) () xy")
        skip_conv = self.high_resolution_skip[0]
        half = skip_conv.kernel_size[0] // 2
        padded = F.pad(images, (0, 0, half, half))  # rows above and below, for the skip conv
        results: dict[str, Tensor] = {}
        for view in range(v):
            views = slice(view, view + 1)
            sh_blocks = wigner_blocks(extrinsics[:, views, :3, :3], self.cfg.gaussian_adapter.sh_degree, images.dtype)
            for top in range(0, h, band):
                bottom = min(top + band, h)
                skip = F.conv2d(
                    padded[:, view, :, top : bottom + 2 * half], skip_conv.weight, skip_conv.bias, padding=(0, half)
                )
                band_features = torch.stack([features(i, view, top, bottom) for i in range(b)])
                band_features = band_features + self.high_resolution_skip[1](skip)
                band_features = rearrange(band_features, "b c h w -> b () (h w) c")
                depth = self.depth_predictor(band_features, near[:, views], far[:, views], deterministic, samples)
                raw = self.to_gaussians(band_features)
                raw = rearrange(raw, "... (srf c) -> ... srf c", srf=self.cfg.num_surfaces)
                xy = pixels[top * w : bottom * w] + (raw[..., :2].sigmoid() - 0.5) * pixel_size
                opacities = map_pdf_to_opacity(depth.densities, self.cfg.opacity_mapping, global_step)
                opacities = opacities / self.cfg.gaussians_per_pixel
                adapted = self.gaussian_adapter(
                    extrinsics[:, views],
                    intrinsics[:, views],
                    xy,
                    depth.depths,
                    opacities,
                    raw[..., 2:],
                    (h, w),
                    sh_blocks=sh_blocks,
                )
                for name, value in (
                    ("depth_pdf", depth.pdf), ("depth_offset", depth.offsets), ("depths", depth.depths),
                    ("depth_index", depth.index), ("means", adapted.means), ("covariances", adapted.covariances),
                    ("harmonics", adapted.harmonics), ("opacities", adapted.opacities),
                    ("scales", adapted.scales), ("world_rotations", adapted.world_rotations),
                ):  # fmt: skip
                    if name not in results:  # [b, 1, rays, ...] per band -> [b, v, h * w, ...]
                        results[name] = value.new_empty((b, v, h * w, *value.shape[3:]))
                    results[name][:, view, top * w : bottom * w] = value[:, 0]
                del band_features, raw, depth, adapted
        return results

    def forward(
        self,
        images: Float[Tensor, "batch view 3 h w"],
        extrinsics: Float[Tensor, "batch view 4 4"],
        intrinsics: Float[Tensor, "batch view 3 3"],
        near: Float[Tensor, "batch view"],
        far: Float[Tensor, "batch view"],
        deterministic: bool = True,
        global_step: int = 0,
        return_attention: bool = False,
        return_intermediates: bool = False,
    ) -> EncoderOutput:
        """Predict Gaussians. Images in [0, 1]; OpenCV camera-to-world extrinsics;
        intrinsics normalised by image size; near/far per view. ``deterministic`` takes the
        top depth bucket per pixel (one Gaussian per pixel and surface); otherwise
        ``gaussians_per_pixel`` depths are drawn (torch's global RNG)."""
        self._validate(images, extrinsics, intrinsics, near, far)
        intermediates: dict[str, Tensor] | None = {} if return_intermediates else None
        features = self.encode_features(images, intermediates)
        sampling, attention = None, None
        if self.epipolar_transformer is not None:
            transformer = self.epipolar_transformer
            epipolar = transformer(features, extrinsics, intrinsics, near, far, deterministic, return_attention)
            features, sampling, attention = epipolar.features, epipolar.sampling, epipolar.attention
            if intermediates is not None:
                intermediates["epipolar_transformer"] = features
        heads = self.predict_pixels(features, images, extrinsics, intrinsics, near, far, deterministic, global_step)
        return self.assemble_output(heads, sampling, attention, intermediates)

    def assemble_output(
        self,
        heads: dict[str, Tensor],
        sampling: EpipolarSampling | None,
        attention: Tensor | None,
        intermediates: dict[str, Tensor] | None,
    ) -> EncoderOutput:
        """The ``EncoderOutput`` of ``predict_pixels``' per-pixel results: Gaussians flattened
        per batch element in (view, row, column, surface, sample) order."""
        if intermediates is not None:
            intermediates["depth_pdf"] = heads["depth_pdf"]
            intermediates["depth_offset"] = heads["depth_offset"]
        gaussians = Gaussians(
            means=rearrange(heads["means"], "b v r srf spp xyz -> b (v r srf spp) xyz"),
            covariances=rearrange(heads["covariances"], "b v r srf spp i j -> b (v r srf spp) i j"),
            harmonics=rearrange(heads["harmonics"], "b v r srf spp c d -> b (v r srf spp) c d"),
            opacities=rearrange(heads["opacities"], "b v r srf spp -> b (v r srf spp)"),
            # The covariances' own factors (world frame, wxyz): renderers then need no eigh.
            scales=rearrange(heads["scales"], "b v r srf spp xyz -> b (v r srf spp) xyz"),
            rotations=rearrange(heads["world_rotations"], "b v r srf spp q -> b (v r srf spp) q"),
        )
        return EncoderOutput(
            gaussians=gaussians,
            depth_pdf=heads["depth_pdf"],
            depths=heads["depths"],
            depth_index=heads["depth_index"],
            depth_offset=heads["depth_offset"],
            sampling=sampling,
            attention=attention,
            intermediates=intermediates or {},
        )
