"""Attention over epipolar samples: each ray (one query token) attends to the features
sampled along its epipolar lines in the other views.

``EpipolarKeys`` builds the keys / values of a block of rays on demand (never for all rays
at once); ``CrossAttention`` attends one query per ray to them without projecting the keys
and values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from .sampler import EpipolarSampling


class EpipolarKeys:
    """Keys/values of the cross-attention, built on demand for a block of rays: the other
    views' features sampled along each ray's epipolar lines, plus the encoded depth each
    sample stands for, plus (> 2 views) per-view embeddings. Never held for all rays at once.

    ``depth_encoding`` is a (positional encoding, Linear) pair applied to ``disparity``, the
    relative disparity of each sample; ``view_embeddings`` row k is added to the samples of
    other view k."""

    def __init__(
        self,
        features: Float[Tensor, "batch view channel height width"],
        sampling: EpipolarSampling,
        depth_encoding: nn.Module | None,
        disparity: Float[Tensor, "batch view other_view ray sample"] | None,
        view_embeddings: Float[Tensor, "other_view channel"] | None,
    ) -> None:
        # Channels-last: grid_sample reads all channels of a tap at once (about 1.5x faster).
        self.features = rearrange(rearrange(features, "b v c h w -> b v h w c").contiguous(), "b v h w c -> b v c h w")
        self.sampling = sampling
        self.depth_encoding = depth_encoding
        self.disparity = disparity
        self.view_embeddings = view_embeddings

    def __call__(self, batch: int, view: int, rays: slice) -> Float[Tensor, "ray token channel"]:
        """Keys of ``rays`` of image (batch, view). With two views the result is a [ray,
        token, channel] view of channel-major memory, the layout grid_sample writes: the
        attention's matrix products read it almost as fast as a transposed copy, which
        would cost more than all of them."""
        s = self.sampling
        blocks = []
        for k in range(s.other_views.shape[1]):
            grid = 2 * s.xy_sample[batch : batch + 1, view, k, rays] - 1  # 1 r s 2
            other = self.features[batch, int(s.other_views[view, k])][None]
            sampled = F.grid_sample(other, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
            valid = s.valid[batch, view, k, rays][None, :, None]  # 1 r 1
            if self.depth_encoding is not None:  # the Linear written channel-major, then one pass
                encoding, projection = self.depth_encoding
                angles = rearrange(encoding(self.disparity[batch, view, k, rays, :, None]), "r s e -> e (r s)")
                keys = torch.addmm(projection.bias[:, None], projection.weight, angles).view_as(sampled)
                keys = keys.addcmul_(sampled, valid)
            else:
                keys = sampled * valid
            if self.view_embeddings is not None:
                keys += self.view_embeddings[k][:, None, None]
            blocks.append(rearrange(keys, "c r s -> r s c"))
        return blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=1)  # r (ov s) c


class CrossAttention(nn.Module):
    """One query token per item attending to a handful of key/value tokens.

    softmax(q_h . (W_k,h z) / sqrt(d)) summed against (W_v,h z) equals
    softmax((W_k,h^T q_h) . z / sqrt(d)) summed against z, then W_v,h: the keys and values
    are never projected (they would be heads * d_head / dim times larger than z).
    """

    def __init__(self, dim: int, kv_dim: int, heads: int, d_head: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.d_head = d_head
        self.to_q = nn.Linear(dim, heads * d_head, bias=False)
        self.to_kv = nn.Linear(kv_dim, 2 * heads * d_head, bias=False)
        if heads == 1 and d_head == dim:
            self.to_out = nn.Identity()
        else:
            self.to_out = nn.Sequential(nn.Linear(heads * d_head, dim), nn.Dropout(dropout))
        self.attention_dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: Float[Tensor, "batch dim"],
        z: Float[Tensor, "batch token kv_dim"],
        return_attention: bool = False,
    ) -> tuple[Float[Tensor, "batch dim"], Float[Tensor, "batch head token"] | None]:
        """Attend each of the ``batch`` queries ``x`` to its tokens ``z``; the weights too
        with ``return_attention``."""
        w_k, w_v = rearrange(self.to_kv.weight, "(two h d) c -> two h d c", two=2, h=self.heads)
        q = rearrange(self.to_q(x), "b (h d) -> b h d", h=self.heads)
        q_in_z = torch.einsum("bhd,hdc->bhc", q, w_k) * self.d_head**-0.5
        weights = torch.bmm(q_in_z, z.transpose(1, 2)).softmax(dim=-1)  # b h token
        context = torch.bmm(self.attention_dropout(weights), z)  # b h c
        out = torch.einsum("bhc,hdc->bhd", context, w_v)
        out = self.to_out(rearrange(out, "b h d -> b (h d)"))
        return out, (weights if return_attention else None)
