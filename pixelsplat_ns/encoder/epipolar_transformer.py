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

from ..epipolar.attention import CrossAttention, EpipolarKeys
from ..epipolar.sampler import EpipolarSampler, EpipolarSampling
from ..geometry import depth_to_relative_disparity, pixel_centers
from .config import EpipolarConfig, SelfAttentionConfig
from .onednn_linear import Linear
from .spectral_conv import kernel_spectrum, spectral_conv2d
from .transformer_blocks import PositionalEncoding, PreNorm, Transformer

SPECTRAL_TILE = (
    16  # output rows/columns per FFT tile: 22 x 22 transforms, a 69 MB spectrum (26: ~0.15 s faster, +74 MB peak)
)


class ImageSelfAttention(nn.Module):
    """Patchify (strided conv + ReLU), add a 2D positional encoding, run a transformer over
    the patches, and scatter back to pixels with a transposed conv."""

    def __init__(self, cfg: SelfAttentionConfig, d_in: int, d_out: int) -> None:
        super().__init__()
        self.positional_encoding = nn.Sequential(
            (encoding := PositionalEncoding(cfg.num_octaves)), Linear(encoding.d_out(2), cfg.d_token)
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


def _phase_kernel(
    up_weight: Float[Tensor, "c_in c_mid r r"],
    up_bias: Float[Tensor, " c_mid"],
    conv_weight: Float[Tensor, "c_out c_mid k k"],
) -> Float[Tensor, "c_out_r2 c_in_plus_1 3 3"]:
    """Weights of one 3x3 convolution on the low-resolution map equal to
    conv(k x k, pad k//2) after a stride-r, kernel-r transposed conv (upsampling by r).

    Output channel (o, a, b) is output pixel (r i + a, r j + b); the extra input channel
    is 1 inside the image and carries the transposed conv's bias (zero padding outside
    is then exact). Requires k // 2 <= r.
    """
    c_in, c_mid, r, _ = up_weight.shape
    c_out, _, k, _ = conv_weight.shape
    half = k // 2
    up = torch.cat((up_weight, up_bias[None, :, None, None].expand(1, c_mid, r, r)), dim=0)  # (c_in + 1) m r r
    kernel = conv_weight.new_zeros((c_out, r, r, c_in + 1, 3, 3))
    offsets = torch.arange(k, device=conv_weight.device)
    for phase_y in range(r):
        shift_y = phase_y + offsets - half  # input row offset (in upsampled pixels) of each tap
        cell_y, sub_y = torch.div(shift_y, r, rounding_mode="floor"), shift_y % r
        for phase_x in range(r):
            shift_x = phase_x + offsets - half
            cell_x, sub_x = torch.div(shift_x, r, rounding_mode="floor"), shift_x % r
            selected = up[:, :, sub_y][:, :, :, sub_x]  # (c_in+1) m k k: sub-pixel each tap reads
            taps = torch.einsum("omuv,cmuv->ocuv", conv_weight, selected)
            select_y = F.one_hot(cell_y + 1, 3).to(taps.dtype)  # k 3
            select_x = F.one_hot(cell_x + 1, 3).to(taps.dtype)
            kernel[:, phase_y, phase_x] = torch.einsum("ocuv,ud,ve->ocde", taps, select_y, select_x)
    return rearrange(kernel, "o a b c d e -> (o a b) c d e")


class EpipolarTransformer(nn.Module):
    def __init__(self, cfg: EpipolarConfig, d_in: int, num_views: int = 2) -> None:
        super().__init__()
        self.cfg = cfg
        self.epipolar_sampler = EpipolarSampler(cfg.num_samples)
        if cfg.num_octaves > 0:
            self.depth_encoding = nn.Sequential(
                (encoding := PositionalEncoding(cfg.num_octaves)), Linear(encoding.d_out(1), d_in)
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
        self._derived: dict[str, tuple[tuple, Tensor]] = {}  # inference-only weight transforms

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
        if torch.is_grad_enabled():
            return self.downscaler(images)
        # One image at a time: the convolution's reordered copy of its input stays small.
        return torch.cat([self.downscaler(image[None]) for image in images])

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

    # ------------------------------------------------------------------ upscaling
    def upscale(self, x: Float[Tensor, "n c hd wd"]) -> Float[Tensor, "n c h w"]:
        """upscaler, then upscale_refinement(up) + up (identity without downscaling)."""
        if self.cfg.downscale <= 1:
            return x
        if torch.is_grad_enabled() or not self._can_fuse():
            up = self.upscaler(x)
            return self.upscale_refinement(up) + up
        n, c, hd, wd = x.shape
        r = self.cfg.downscale
        out = x.new_empty((n, c, hd * r, wd * r))
        band = 8
        for i in range(n):
            for top in range(0, hd, band):
                bottom = min(top + band, hd)
                out[i : i + 1, :, top * r : bottom * r] = self.upscale_rows(x[i : i + 1], top, bottom)
        return out

    def _can_fuse(self) -> bool:
        return self.upscale_refinement[0].kernel_size[0] // 2 <= self.cfg.downscale

    def _derived_weights(self, name: str, parameters: tuple[Tensor, ...], derive) -> Tensor:
        """``derive(*parameters)``, cached until one of the parameters changes."""
        key = tuple((p.data_ptr(), p._version, p.dtype, p.device) for p in parameters)
        cached = self._derived.get(name)
        if cached is None or cached[0] != key:
            cached = self._derived[name] = (key, derive(*parameters))
        return cached[1]

    def _phase_weights(self) -> Tensor:
        parameters = (self.upscaler.weight, self.upscaler.bias, self.upscale_refinement[0].weight)
        return self._derived_weights(
            "phase", parameters, lambda *p: _phase_kernel(*p).contiguous(memory_format=torch.channels_last)
        )

    def _refinement_spectrum(self) -> Tensor:
        """The last refinement conv's kernel spectrum (see ``spectral_conv``)."""
        weight = self.upscale_refinement[2].weight
        return self._derived_weights("spectrum", (weight,), lambda w: kernel_spectrum(w, SPECTRAL_TILE))

    def upscale_rows(self, x: Float[Tensor, "1 c hd wd"], top: int, bottom: int) -> Float[Tensor, "1 c rows w"]:
        """Full-resolution rows [top * r, bottom * r) of ``upscale(x)``, for inference.

        Cheaper than the plain modules: the refinement's first 7x7 conv runs as a 3x3 conv
        on the low-resolution map (see ``_phase_kernel``), and only the rows asked for (plus
        a 3-row halo) ever exist at full resolution."""
        if torch.is_grad_enabled() or self.cfg.downscale <= 1 or not self._can_fuse():
            r = max(self.cfg.downscale, 1)
            return self.upscale(x)[:, :, top * r : bottom * r]
        r = self.cfg.downscale
        conv1, conv2 = self.upscale_refinement[0], self.upscale_refinement[2]
        hd = x.shape[2]
        half = conv2.kernel_size[0] // 2
        # Low-res rows top-1 .. bottom (one halo row each side); their 3x3 phase conv reads
        # rows top-2 .. bottom+1, zero (including the ones channel) outside the image.
        first, last = top - 2, bottom + 2
        rows = x[:, :, max(first, 0) : min(last, hd)]
        rows = torch.cat((rows, torch.ones_like(rows[:, :1])), dim=1)
        rows = F.pad(rows, (0, 0, max(first, 0) - first, last - min(last, hd)))
        # Channels-last: oneDNN's native layout, so its 4096-channel output needs no reorder.
        rows = rows.contiguous(memory_format=torch.channels_last)
        hidden = F.pixel_shuffle(
            F.conv2d(rows, self._phase_weights(), padding=(0, 1)), r
        )  # rows (top-1)r .. (bottom+1)r
        if top == 0:
            hidden[:, :, :r] = -conv1.bias[None, :, None, None]  # outside the image: conv2's
        if bottom == hd:  # zero padding (the bias is added next; GELU(0) = 0)
            hidden[:, :, -r:] = -conv1.bias[None, :, None, None]
        hidden = hidden[:, :, r - half : hidden.shape[2] - (r - half)].contiguous()  # the halo conv2 needs
        hidden += conv1.bias[None, :, None, None]
        torch.ops.aten.gelu_(hidden)
        if hidden.device.type == "cpu":  # the full-resolution 7x7 conv dominates CPU inference: FFT it
            refined = spectral_conv2d(
                hidden, self._refinement_spectrum(), conv2.bias, conv2.kernel_size[0], SPECTRAL_TILE, (0, half)
            )
        else:  # cuDNN picks its own algorithm
            refined = F.conv2d(hidden, conv2.weight, conv2.bias, padding=(0, half))
        del hidden
        return refined.add_(self.upscaler(x[:, :, top:bottom]))
