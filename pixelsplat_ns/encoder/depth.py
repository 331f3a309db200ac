"""Per-pixel depth distributions and the reparameterised opacity.

Each pixel (and surface) gets a softmax over ``num_buckets`` depth buckets spaced
uniformly in disparity between near and far, plus a sigmoid offset within each bucket.
Depths are drawn from the distribution (or its top bucket when deterministic); the
Gaussian's opacity is the drawn bucket's probability passed through the opacity mapping,
so the rendering loss reaches the distribution's logits through the opacity.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Float, Int64
from torch import Tensor, nn

from ..geometry import relative_disparity_to_depth
from .config import OpacityMappingConfig

_EPS = torch.finfo(torch.float32).eps


def sample_buckets(
    pdf: Float[Tensor, "*batch bucket"], num_samples: int, deterministic: bool
) -> tuple[Int64[Tensor, "*batch sample"], Float[Tensor, "*batch sample"]]:
    """Bucket indices (top-k when deterministic, else drawn with replacement) and their
    normalised probabilities (differentiable with respect to ``pdf``)."""
    normalized = pdf / (_EPS + pdf.sum(dim=-1, keepdim=True))
    if deterministic:
        index = pdf.topk(k=num_samples, dim=-1).indices
    else:
        cdf = normalized.detach().cumsum(dim=-1)
        uniform = torch.rand((*pdf.shape[:-1], num_samples), device=pdf.device, dtype=pdf.dtype)
        index = torch.searchsorted(cdf, uniform, right=True).clamp(max=pdf.shape[-1] - 1)
    return index, normalized.gather(dim=-1, index=index)


def map_pdf_to_opacity(
    pdf: Float[Tensor, "*batch"], cfg: OpacityMappingConfig, global_step: int
) -> Float[Tensor, "*batch"]:
    """0.5 (1 - (1 - p)^e + p^(1/e)), e = 2^x with x ramping from ``initial`` to ``final``
    over ``warm_up`` steps (x = 0: the identity)."""
    x = cfg.initial + min(global_step / max(cfg.warm_up, 1), 1) * (cfg.final - cfg.initial)
    if x == 0:
        return pdf
    exponent = 2**x
    return 0.5 * (1 - (1 - pdf) ** exponent + pdf ** (1 / exponent))


@dataclass
class DepthSample:
    depths: Float[Tensor, "batch view ray surface sample"]
    pdf: Float[Tensor, "batch view ray surface bucket"]
    offsets: Float[Tensor, "batch view ray surface bucket"]
    index: Int64[Tensor, "batch view ray surface sample"]
    densities: Float[Tensor, "batch view ray surface sample"]
    """Probability of each drawn bucket (before the opacity mapping)."""


class DepthPredictor(nn.Module):
    def __init__(self, d_in: int, num_buckets: int, num_surfaces: int, use_transmittance: bool = False) -> None:
        super().__init__()
        self.num_buckets = num_buckets
        self.num_surfaces = num_surfaces
        self.use_transmittance = use_transmittance
        self.projection = nn.Sequential(nn.ReLU(), nn.Linear(d_in, 2 * num_buckets * num_surfaces))

    def distribution(
        self, features: Float[Tensor, "batch view ray channel"]
    ) -> tuple[Float[Tensor, "batch view ray surface bucket"], Float[Tensor, "batch view ray surface bucket"]]:
        """(softmax pdf, sigmoid in-bucket offsets). The projection's outputs interleave
        (bucket, surface, [logit, offset]), as in the official checkpoints."""
        raw = self.projection(features)
        logits, offsets = rearrange(raw, "... (bucket srf c) -> c ... srf bucket", c=2, srf=self.num_surfaces)
        return logits.softmax(dim=-1), offsets.sigmoid()

    def forward(
        self,
        features: Float[Tensor, "batch view ray channel"],
        near: Float[Tensor, "batch view"],
        far: Float[Tensor, "batch view"],
        deterministic: bool,
        num_samples: int,
    ) -> DepthSample:
        pdf, offsets = self.distribution(features)
        index, densities = sample_buckets(pdf, num_samples, deterministic)
        offset = offsets.gather(dim=-1, index=index)
        relative_disparity = (index + offset) / self.num_buckets
        bound = (slice(None), slice(None), None, None, None)
        depths = relative_disparity_to_depth(relative_disparity, near[bound], far[bound])
        if self.use_transmittance:
            before = torch.cat((torch.zeros_like(pdf[..., :1]), pdf.cumsum(dim=-1)[..., :-1]), dim=-1)
            densities = (pdf / (1 - before + 1e-10)).gather(dim=-1, index=index)
        return DepthSample(depths, pdf, offsets, index, densities)
