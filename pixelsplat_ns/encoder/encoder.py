"""The pixelSplat encoder: two (or more) posed images -> pixel-aligned 3D Gaussians.

backbone -> projection to d_feature -> epipolar transformer -> + high-resolution skip
-> per pixel: depth distribution (sampled) and Gaussian parameters -> world-space Gaussians.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float, Int64
from torch import Tensor, nn

from ..gaussians import Gaussians
from .adapter import GaussianAdapter
from .backbone import build_backbone
from .config import EncoderConfig
from .depth import DepthPredictor, map_pdf_to_opacity
from .epipolar.sampler import EpipolarSampling
from .epipolar.transformer import EpipolarTransformer
from .geometry import pixel_centers


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
                raise ValueError(f"{name} must have shape {list(shape)} to match images {list(images.shape)}, got {list(value.shape)}")
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
                raise ValueError(f"this encoder was built for {self.cfg.num_views} context views, got {v}")
        determinant = torch.linalg.det(extrinsics[..., :3, :3].double())
        if ((determinant - 1).abs() > 1e-3).any():
            raise ValueError("extrinsics' rotation parts are not rotations (determinant != 1)")

    # ------------------------------------------------------------------ forward
    def encode_features(
        self, images: Float[Tensor, "batch view 3 h w"], intermediates: dict[str, Tensor] | None = None
    ) -> Float[Tensor, "batch view channel h w"]:
        """Backbone + projection to d_feature. Without autograd, images go one at a time
        and the wide backbone features are reduced in place (much less memory)."""
        b, v = images.shape[:2]
        flat = rearrange(images, "b v c h w -> (b v) c h w")
        chunks = [flat] if torch.is_grad_enabled() else list(flat.split(1))
        linear = self.backbone_projection[1]
        projected, raw = [], []
        for chunk in chunks:
            features = self.backbone(chunk)
            if intermediates is not None:
                raw.append(features.clone())
            features = self.backbone_projection[0](features) if torch.is_grad_enabled() else features.relu_()
            projected.append(_conv1x1(features, linear))
            del features
        if intermediates is not None:
            intermediates["backbone"] = rearrange(torch.cat(raw), "(b v) c h w -> b v c h w", b=b, v=v)
        return rearrange(torch.cat(projected), "(b v) c h w -> b v c h w", b=b, v=v)

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
        b, v, _, h, w = images.shape
        intermediates: dict[str, Tensor] | None = {} if return_intermediates else None

        features = self.encode_features(images, intermediates)
        if intermediates is not None:
            intermediates["backbone_projection"] = rearrange(features, "b v c h w -> b v h w c")

        sampling, attention = None, None
        if self.epipolar_transformer is not None:
            epipolar = self.epipolar_transformer(
                features, extrinsics, intrinsics, near, far, deterministic=deterministic, return_attention=return_attention
            )
            features, sampling, attention = epipolar.features, epipolar.sampling, epipolar.attention
            if intermediates is not None:
                intermediates["epipolar_transformer"] = features

        skip = self.high_resolution_skip(rearrange(images, "b v c h w -> (b v) c h w"))
        skip = rearrange(skip, "(b v) c h w -> b v c h w", b=b, v=v)
        features = features + skip
        features = rearrange(features, "b v c h w -> b v (h w) c")

        samples = 1 if deterministic else self.cfg.gaussians_per_pixel
        depth = self.depth_predictor(features, near, far, deterministic, samples)
        if intermediates is not None:
            intermediates["depth_pdf"] = depth.pdf
            intermediates["depth_offset"] = depth.offsets

        raw = rearrange(self.to_gaussians(features), "... (srf c) -> ... srf c", srf=self.cfg.num_surfaces)
        pixel_size = torch.tensor((1 / w, 1 / h), dtype=raw.dtype, device=raw.device)
        xy = rearrange(pixel_centers(h, w, raw.device, raw.dtype), "h w xy -> (h w) () xy")
        xy = xy + (raw[..., :2].sigmoid() - 0.5) * pixel_size
        opacities = map_pdf_to_opacity(depth.densities, self.cfg.opacity_mapping, global_step) / self.cfg.gaussians_per_pixel
        adapted = self.gaussian_adapter(extrinsics, intrinsics, xy, depth.depths, opacities, raw[..., 2:], (h, w))

        gaussians = Gaussians(
            means=rearrange(adapted.means, "b v r srf spp xyz -> b (v r srf spp) xyz"),
            covariances=rearrange(adapted.covariances, "b v r srf spp i j -> b (v r srf spp) i j"),
            harmonics=rearrange(adapted.harmonics, "b v r srf spp c d -> b (v r srf spp) c d"),
            opacities=rearrange(adapted.opacities, "b v r srf spp -> b (v r srf spp)"),
            scales=rearrange(adapted.scales, "b v r srf spp xyz -> b (v r srf spp) xyz"),
            rotations=rearrange(adapted.world_rotations, "b v r srf spp q -> b (v r srf spp) q"),
        )
        return EncoderOutput(
            gaussians=gaussians,
            depth_pdf=depth.pdf,
            depths=depth.depths,
            depth_index=depth.index,
            depth_offset=depth.offsets,
            sampling=sampling,
            attention=attention,
            intermediates=intermediates or {},
        )
