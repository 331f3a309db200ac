"""The epipolar transformer: each (downscaled) pixel attends to features sampled along its
epipolar lines in the other views, tagged with the depth each sample stands for; the
feed-forward slot of every layer is a per-image self-attention over patches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from ..config import EpipolarConfig, SelfAttentionConfig
from ..geometry import depth_to_relative_disparity, pixel_centers
from ..transformer import CrossAttention, PositionalEncoding, PreNorm, Transformer
from .sampler import EpipolarSampler, EpipolarSampling


class ImageSelfAttention(nn.Module):
    """Patchify (strided conv + ReLU), add a 2D positional encoding, run a transformer over
    the patches, and scatter back to pixels with a transposed conv."""

    def __init__(self, cfg: SelfAttentionConfig, d_in: int, d_out: int) -> None:
        super().__init__()
        self.positional_encoding = nn.Sequential(
            (encoding := PositionalEncoding(cfg.num_octaves)), nn.Linear(encoding.d_out(2), cfg.d_token)
        )
        self.patch_embedder = nn.Sequential(nn.Conv2d(d_in, cfg.d_token, cfg.patch_size, cfg.patch_size), nn.ReLU())
        self.transformer = Transformer(cfg.d_token, cfg.num_layers, cfg.num_heads, cfg.d_dot, cfg.d_mlp)
        self.resampler = nn.ConvTranspose2d(cfg.d_token, d_out, cfg.patch_size, cfg.patch_size)

    def forward(self, image: Float[Tensor, "batch d_in height width"]) -> Float[Tensor, "batch d_out height width"]:
        tokens = self.patch_embedder(image)
        _, _, nh, nw = tokens.shape
        position = self.positional_encoding(pixel_centers(nh, nw, image.device, image.dtype))
        tokens = rearrange(tokens, "b c nh nw -> b (nh nw) c") + rearrange(position, "nh nw c -> (nh nw) c")
        tokens = self.transformer(tokens)
        return self.resampler(rearrange(tokens, "b (nh nw) c -> b c nh nw", nh=nh, nw=nw))


class ImageSelfAttentionBlock(nn.Module):
    """Residual per-image self-attention on token grids (the epipolar layers' feed-forward slot)."""

    def __init__(self, cfg: SelfAttentionConfig, dim: int) -> None:
        super().__init__()
        self.self_attention = ImageSelfAttention(cfg, dim, dim)

    def forward(self, x: Float[Tensor, "image channel height width"]) -> Float[Tensor, "image channel height width"]:
        return self.self_attention(x) + x


class ChannelLayerNorm(nn.Module):
    """Applies a LayerNorm over the channels of an NCHW map (keeps the LayerNorm's keys)."""

    def __init__(self, norm: nn.LayerNorm) -> None:
        super().__init__()
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        return rearrange(self.norm(rearrange(x, "n c h w -> n h w c")), "n h w c -> n c h w")


class EpipolarLayers(nn.Module):
    """``layers.N.0``: PreNorm cross-attention to epipolar samples; ``layers.N.1``: PreNorm
    image self-attention block. Queries live on [images, channel, h, w] grids."""

    def __init__(self, cfg: EpipolarConfig, dim: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            nn.ModuleList(
                [
                    PreNorm(dim, CrossAttention(dim, dim, cfg.num_heads, cfg.d_dot)),
                    PreNorm(dim, ImageSelfAttentionBlock(cfg.self_attention, dim)),
                ]
            )
            for _ in range(cfg.num_layers)
        )

    def forward(
        self,
        x: Float[Tensor, "image channel height width"],
        kv: Float[Tensor, "image ray token channel"],
        return_attention: bool = False,
    ) -> tuple[Float[Tensor, "image channel height width"], list[Tensor]]:
        n, c, h, w = x.shape
        attention = []
        for cross, image_block in self.layers:
            queries = rearrange(x, "n c h w -> (n h w) c")
            update, weights = cross.fn(cross.norm(queries), rearrange(kv, "n r t c -> (n r) t c"), return_attention)
            x = x + rearrange(update, "(n h w) c -> n c h w", n=n, h=h, w=w)
            normed = ChannelLayerNorm(image_block.norm)(x)
            x = x + image_block.fn(normed)
            if weights is not None:
                attention.append(rearrange(weights, "(n r) head t -> n head r t", n=n))
        return x, attention


@dataclass
class EpipolarOutput:
    features: Float[Tensor, "batch view channel height width"]
    sampling: EpipolarSampling
    attention: Float[Tensor, "batch view layer head ray other_view sample"] | None


class EpipolarTransformer(nn.Module):
    def __init__(self, cfg: EpipolarConfig, d_in: int, num_views: int = 2) -> None:
        super().__init__()
        self.cfg = cfg
        self.epipolar_sampler = EpipolarSampler(cfg.num_samples)
        if cfg.num_octaves > 0:
            self.depth_encoding = nn.Sequential(
                (encoding := PositionalEncoding(cfg.num_octaves)), nn.Linear(encoding.d_out(1), d_in)
            )
        self.transformer = EpipolarLayers(cfg, d_in)
        if cfg.downscale > 1:
            self.downscaler = nn.Conv2d(d_in, d_in, cfg.downscale, cfg.downscale)
            self.upscaler = nn.ConvTranspose2d(d_in, d_in, cfg.downscale, cfg.downscale)
            self.upscale_refinement = nn.Sequential(
                nn.Conv2d(d_in, 2 * d_in, 7, 1, 3), nn.GELU(), nn.Conv2d(2 * d_in, d_in, 7, 1, 3)
            )
        if num_views > 2:
            self.view_embeddings = nn.Embedding(num_views, d_in)

    def forward(
        self,
        features: Float[Tensor, "batch view channel height width"],
        extrinsics: Float[Tensor, "batch view 4 4"],
        intrinsics: Float[Tensor, "batch view 3 3"],
        near: Float[Tensor, "batch view"],
        far: Float[Tensor, "batch view"],
        deterministic: bool = True,
        return_attention: bool = False,
    ) -> EpipolarOutput:
        b, v, c, h, w = features.shape
        images = rearrange(features, "b v c h w -> (b v) c h w")
        if self.cfg.downscale > 1:
            images = self.downscaler(images)
        hd, wd = images.shape[-2:]
        features = rearrange(images, "(b v) c h w -> b v c h w", b=b, v=v)

        sampler = self.epipolar_sampler
        sampling = sampler(features.shape[-2:], extrinsics, intrinsics, near, far)
        kv = sampler.sample_features(features, sampling)  # b v r ov s c
        if self.cfg.num_octaves > 0:
            depths = sampler.sample_depths(sampling, extrinsics, intrinsics, near, far)
            sampling.depths = depths
            bound = (slice(None), slice(None), None, None, None)
            disparity = depth_to_relative_disparity(depths, near[bound], far[bound])
            encoding = self.depth_encoding(rearrange(disparity, "b v ov r s -> b v r ov s ()"))
            kv = kv + encoding
        if v > 2:
            if not hasattr(self, "view_embeddings"):
                raise ValueError(f"this encoder was built for 2 context views, got {v}")
            order = torch.arange(v - 1, device=kv.device) if deterministic else torch.randperm(v - 1, device=kv.device)
            kv = kv + self.view_embeddings(order)[:, None, :]

        kv = rearrange(kv, "b v r ov s c -> (b v) r (ov s) c")
        images, attention = self.transformer(images, kv, return_attention)
        weights = None
        if return_attention:
            weights = torch.stack(attention, dim=1)  # (b v) layer head r (ov s)
            weights = rearrange(weights, "(b v) l hd r (ov s) -> b v l hd r ov s", b=b, v=v, s=self.cfg.num_samples)

        if self.cfg.downscale > 1:
            images = self.upscaler(images)
            images = self.upscale_refinement(images) + images
        return EpipolarOutput(rearrange(images, "(b v) c h w -> b v c h w", b=b, v=v), sampling, weights)
