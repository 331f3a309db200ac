"""The epipolar transformer: each (downscaled) pixel attends to features sampled along its
epipolar lines in the other views, tagged with the depth each sample stands for; the
feed-forward slot of every layer is a per-image self-attention over patches."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from ..epipolar.attention import CrossAttention, EpipolarKeys
from ..epipolar.sampler import EpipolarSampler, EpipolarSampling
from ..geometry import depth_to_relative_disparity, pixel_centers
from .config import EpipolarConfig, SelfAttentionConfig
from .transformer_blocks import PositionalEncoding, PreNorm, Transformer


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


def channel_layer_norm(x: Float[Tensor, "n c h w"], norm: nn.LayerNorm) -> Float[Tensor, "n c h w"]:
    """A LayerNorm over the channels of an NCHW map."""
    return rearrange(norm(rearrange(x, "n c h w -> n h w c")), "n h w c -> n c h w")


class EpipolarLayers(nn.Module):
    """``layers.N.0``: PreNorm cross-attention to epipolar samples; ``layers.N.1``: PreNorm
    image self-attention block. Queries live on [batch * view, channel, h, w] grids."""

    ray_block = 1024

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
        keys: EpipolarKeys,
        views: int,
        attention: Tensor | None = None,
    ) -> Float[Tensor, "image channel height width"]:
        """``attention`` ([b, v, layer, head, ray, tokens]), when given, receives the
        cross-attention weights."""
        n, _c, h, w = x.shape
        for layer, (cross, image_block) in enumerate(self.layers):
            queries = cross.norm(rearrange(x, "n c h w -> n (h w) c"))
            updates = []
            for image in range(n):
                batch, view = divmod(image, views)
                for start in range(0, h * w, self.ray_block):
                    rays = slice(start, min(start + self.ray_block, h * w))
                    update, weights = cross.fn(queries[image, rays], keys(batch, view, rays), attention is not None)
                    updates.append(update)
                    if attention is not None:
                        attention[batch, view, layer, :, rays] = weights.transpose(0, 1)
            x = x + rearrange(torch.cat(updates), "(n h w) c -> n c h w", n=n, h=h, w=w)
            x = x + image_block.fn(channel_layer_norm(x, image_block.norm))
        return x


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
        b, _v = features.shape[:2]
        low = rearrange(
            self.downscale(rearrange(features, "b v c h w -> (b v) c h w")), "(b v) c h w -> b v c h w", b=b
        )
        out = self.attend(low, extrinsics, intrinsics, near, far, deterministic, return_attention)
        out.features = rearrange(
            self.upscale(rearrange(out.features, "b v c h w -> (b v) c h w")), "(b v) c h w -> b v c h w", b=b
        )
        return out

    def downscale(self, images: Float[Tensor, "n channel height width"]) -> Float[Tensor, "n channel h_low w_low"]:
        if self.cfg.downscale <= 1:
            return images
        return self.downscaler(images)

    def attend(
        self,
        features: Float[Tensor, "batch view channel h_low w_low"],
        extrinsics: Float[Tensor, "batch view 4 4"],
        intrinsics: Float[Tensor, "batch view 3 3"],
        near: Float[Tensor, "batch view"],
        far: Float[Tensor, "batch view"],
        deterministic: bool = True,
        return_attention: bool = False,
    ) -> EpipolarOutput:
        """The transformer on already downscaled features (``features`` of the result stay
        at the low resolution: ``upscale`` / ``upscale_rows`` bring them to full resolution)."""
        b, v, _c, hd, wd = features.shape
        images = rearrange(features, "b v c h w -> (b v) c h w")

        sampler = self.epipolar_sampler
        sampling = sampler((hd, wd), extrinsics, intrinsics, near, far)
        disparity = None
        if self.cfg.num_octaves > 0:
            sampling.depths = sampler.sample_depths(sampling, extrinsics, intrinsics, near, far)
            bound = (slice(None), slice(None), None, None, None)
            disparity = depth_to_relative_disparity(sampling.depths, near[bound], far[bound])
        view_embeddings = None
        if v > 2:
            if not hasattr(self, "view_embeddings"):
                raise ValueError(f"this encoder was built for 2 context views, got {v}")
            order = torch.arange(v - 1, device=images.device)
            if not deterministic:
                order = torch.randperm(v - 1, device=images.device)
            view_embeddings = self.view_embeddings(order)
        keys = EpipolarKeys(
            rearrange(images, "(b v) c h w -> b v c h w", b=b, v=v),
            sampling,
            self.depth_encoding if self.cfg.num_octaves > 0 else None,
            disparity,
            view_embeddings,
        )

        attention = None
        if return_attention:
            tokens = (v - 1) * self.cfg.num_samples
            attention = images.new_empty((b, v, self.cfg.num_layers, self.cfg.num_heads, hd * wd, tokens))
        images = self.transformer(images, keys, v, attention)
        if attention is not None:
            attention = rearrange(attention, "b v l hd r (ov s) -> b v l hd r ov s", s=self.cfg.num_samples)

        return EpipolarOutput(rearrange(images, "(b v) c h w -> b v c h w", b=b, v=v), sampling, attention)

    def upscale(self, x: Float[Tensor, "n c hd wd"]) -> Float[Tensor, "n c h w"]:
        """upscaler, then upscale_refinement(up) + up (identity without downscaling)."""
        if self.cfg.downscale <= 1:
            return x
        up = self.upscaler(x)
        return self.upscale_refinement(up) + up
