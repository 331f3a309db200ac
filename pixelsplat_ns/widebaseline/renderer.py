"""The learned part of Du et al.'s cross-attention renderer: from the encoder's feature maps
and a batch of world rays to colours, with two rounds of attention over the rays' epipolar
samples in both context views.

Per ray and context view k (geometry in ``geometry.py``):

1. features at the samples of image k (border padding) and at the same 3D points seen in the
   other image (zero padding), each with tanh(point / 5) in the frame of the image it came
   from, through one shared MLP (``query_encode_latent(_2)``); a sample's encoding is
   [encoding from image 0, encoding from image 1], in image order for both contexts;
2. values (``latent_value``), keys (``key_map(_2)``) and a geometric query per sample
   (``query_embed(_2)`` of ``RayGeometry.local_geometry``);
3. round 1: softmax of <key, query> / 16 jointly over both views' samples; z1 = sum w1 value;
4. round 2: a query from [``encode_latent``(z1), the sample's geometry]
   (``query_repeat_embed(_2)``) against the sample's geometric query embedding, joint
   softmax again; feature = sum w2 value + 2 z1 (z1 is added once per context);
5. ``phi`` (a ResnetFC) decodes the coords of both views with latent [feature, feature] to rgb
   in the official [-1, 1] convention, without activation; rays missing both images get 1.

Layer names and shapes are the official checkpoint's (1x1 convolutions applied pointwise);
modules the official forward never uses are kept so its checkpoints load strictly.

Legend: b batch, v context view (two), r ray, s sample, c channel.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import einsum, rearrange
from jaxtyping import Bool, Float
from torch import Tensor, nn

from .config import WideBaselineConfig
from .geometry import RayGeometry, apply_transform, other_view, ray_geometry

# The official encoding of a sample's 3D point: tanh(point / POINT_SCALE).
POINT_SCALE = 5.0
# The official attention logits are divided by 16 (not sqrt(key_channels)).
ATTENTION_SCALE = 16.0
# Bound of the depth outputs: the official pseudo-depth clamps points to +-100; ``depth``
# clamps distances along the ray to [0, DEPTH_CLAMP].
DEPTH_CLAMP = 100.0
# (d, o x d, o): the query ray in one context frame, the decoder's per-view input.
COORDS_CHANNELS = 9


@dataclass
class WideBaselineRays:
    """What the renderer computed for a batch of rays (b batch, v context, r ray, s sample)."""

    rgb: Float[Tensor, "b r 3"]
    """Colour in the official [-1, 1] convention (no activation); invalid rays are 1."""
    valid: Bool[Tensor, "b r"]
    """The ray's epipolar segment crosses at least one context image."""
    depth: Float[Tensor, "b r"]
    """Pseudo-depth: sum of round-1 weights times each sample point's distance along the
    unit ray, (p - o) . d, clamped to [0, ``DEPTH_CLAMP``] (points behind the origin count 0,
    far and ill-conditioned points count ``DEPTH_CLAMP``)."""
    official_depth_point: Float[Tensor, "b r 3"]
    """The official visualisation quantity: sum over views and samples of w1 times the
    sample point clamped to +-100 *in its own context frame* (frames mixed, as officially)."""
    attention: Float[Tensor, "b v r s"]
    """Round-1 weights; sum to 1 over (v, s)."""
    attention_round2: Float[Tensor, "b v r s"]
    """Round-2 weights; sum to 1 over (v, s)."""
    entropy: Float[Tensor, "b r"]
    """Entropy (nats) of the round-1 weights over all samples of both views."""
    sample_xy: Float[Tensor, "b v r s 2"]
    """Samples in pixels of context image v (x = column, integer pixel centres)."""
    sample_grid: Float[Tensor, "b v r s 2"]
    """Samples in grid units (the official ``pixel_val``)."""
    sample_points: Float[Tensor, "b v r s 3"]
    """World point each sample stands for (on the query ray)."""
    sample_points_local: Float[Tensor, "b v r s 3"]
    """The same points in context frame v."""
    coords: Float[Tensor, "b v r 9"]
    """(d, o x d, o) of the query ray in context frame v."""
    decoder_input: Float[Tensor, "b r d"]
    """``phi``'s input: [feature, feature, coords of both views] (the official ``phi_input``)."""
    geometry: RayGeometry
    """Everything geometric (segments, cross-view projections, per-sample query inputs)."""


@dataclass
class Attention:
    """The two attention rounds over a ray's samples."""

    values: Float[Tensor, "b v r s c"]
    keys: Float[Tensor, "b v r s k"]
    queries: Float[Tensor, "b v r s k"]
    """``query_embed`` of each sample's geometry."""
    weights: Float[Tensor, "b v r s"]
    feature_round1: Float[Tensor, "b r c"]
    weights_round2: Float[Tensor, "b v r s"]
    feature: Float[Tensor, "b r c"]


def pointwise(
    layer: nn.Conv1d | nn.Conv2d | nn.Linear, x: Float[Tensor, "*batch c_in"]
) -> Float[Tensor, "*batch c_out"]:
    """A 1x1 convolution (official layer shapes) applied to channels-last ``x``."""
    return F.linear(x, layer.weight.flatten(1), layer.bias)


def sample_maps(
    maps: list[Float[Tensor, "b v _ h w"]], grid: Float[Tensor, "b v r s 2"], padding_mode: str
) -> Float[Tensor, "b v r s c"]:
    """Bilinear features of every map at ``grid`` (align_corners=False), concatenated."""
    b = grid.shape[0]
    flat = rearrange(grid, "b v r s xy -> (b v) r s xy")
    features = [
        F.grid_sample(
            rearrange(m, "b v c h w -> (b v) c h w"),
            flat,
            mode="bilinear",
            padding_mode=padding_mode,
            align_corners=False,
        )
        for m in maps
    ]
    return rearrange(torch.cat(features, dim=1), "(b v) c r s -> b v r s c", b=b)


def joint_softmax(logits: Float[Tensor, "b v r s"]) -> Float[Tensor, "b v r s"]:
    """Softmax over both views' samples together."""
    v = logits.shape[1]
    weights = rearrange(logits, "b v r s -> b r (v s)").softmax(dim=-1)
    return rearrange(weights, "b r (v s) -> b v r s", v=v)


class ResnetBlockFC(nn.Module):
    """x + fc_1(relu(fc_0(relu(x))))."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc_0 = nn.Linear(width, width)
        self.fc_1 = nn.Linear(width, width)

    def forward(self, x: Float[Tensor, "*batch c"]) -> Float[Tensor, "*batch c"]:
        return x + self.fc_1(F.relu(self.fc_0(F.relu(x))))


class ResnetFC(nn.Module):
    """The official decoder ``phi``: x = lin_in(input); per block x += lin_z[i](latent), then
    the residual block; out = lin_out(relu(x))."""

    def __init__(self, d_in: int, d_latent: int, d_hidden: int, n_blocks: int, d_out: int = 3) -> None:
        super().__init__()
        # Registration order is the official checkpoint's key order.
        self.lin_in = nn.Linear(d_in, d_hidden)
        self.lin_out = nn.Linear(d_hidden, d_out)
        self.blocks = nn.ModuleList([ResnetBlockFC(d_hidden) for _ in range(n_blocks)])
        self.lin_z = nn.ModuleList([nn.Linear(d_latent, d_hidden) for _ in range(n_blocks)])

    def forward(
        self, x: Float[Tensor, "*batch d_in"], latent: Float[Tensor, "*batch d_latent"]
    ) -> Float[Tensor, "*batch d_out"]:
        x = self.lin_in(x)
        for block, lin_z in zip(self.blocks, self.lin_z, strict=True):
            x = block(x + lin_z(latent))
        return self.lin_out(F.relu(x))


class WideBaselineRenderer(nn.Module):
    """The renderer's learned layers (official names) and ``render``.

    ``WideBaselineNetwork`` subclasses this and registers its image encoder first, in
    ``_register_encoder``, so that the state-dict keys come in the official order."""

    def __init__(self, cfg: WideBaselineConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self._register_encoder()
        c, hidden, sample = cfg.feature_channels, cfg.sample_hidden_channels, cfg.sample_channels
        value, key, geometry = cfg.value_channels, cfg.key_channels, cfg.geometry_channels
        encoding = 2 * sample  # a sample's encoding: one per image
        coords = COORDS_CHANNELS
        self.query_encode_latent = nn.Conv2d(c + 3, hidden, 1)
        self.query_encode_latent_2 = nn.Conv2d(hidden, sample, 1)
        self.update_val_merge = nn.Conv2d(encoding + 6, value, 1)  # unused by the official forward
        self.latent_value = nn.Conv2d(encoding, value, 1)
        self.key_map = nn.Conv2d(encoding, key, 1)
        self.key_map_2 = nn.Conv2d(key, key, 1)
        self.query_embed = nn.Conv2d(geometry, key, 1)
        self.query_embed_2 = nn.Conv2d(key, key, 1)
        # latent_avg_*: unused by the official forward; kept so its checkpoints load strictly.
        self.latent_avg_query = nn.Conv2d(geometry + coords, key, 1)
        self.latent_avg_query_2 = nn.Conv2d(key, key, 1)
        self.latent_avg_key = nn.Conv2d(value, key, 1)
        self.latent_avg_key_2 = nn.Conv2d(key, key, 1)
        self.query_repeat_embed = nn.Conv2d(key + geometry, key, 1)
        self.query_repeat_embed_2 = nn.Conv2d(key, key, 1)
        self.latent_avg_repeat_query = nn.Conv2d(key + geometry + coords, key, 1)
        self.latent_avg_repeat_query_2 = nn.Conv2d(key, key, 1)
        self.encode_latent = nn.Conv1d(value, key, 1)
        self.phi = ResnetFC(cfg.num_views * coords, 2 * value, cfg.phi_hidden, cfg.phi_blocks)

    def _register_encoder(self) -> None:
        """Hook for subclasses holding an image encoder (registered before the renderer's layers)."""

    # ----------------------------------------------------------------------------------
    # Steps (public so that tests can start from recorded features)
    # ----------------------------------------------------------------------------------

    def encode_samples(
        self, features: Float[Tensor, "*batch c"], points: Float[Tensor, "*batch 3"]
    ) -> Float[Tensor, "*batch latent"]:
        """The shared sample MLP on [features, tanh(point / 5)] (point in the frame of the
        image the features came from; non-finite coordinates count as +-1 after tanh)."""
        points = points.nan_to_num(nan=0.0)
        x = torch.cat((features, torch.tanh(points / POINT_SCALE)), dim=-1)
        return pointwise(self.query_encode_latent_2, F.relu(pointwise(self.query_encode_latent, x)))

    def pair_encodings(
        self,
        own: Float[Tensor, "b v r s c"],
        other: Float[Tensor, "b v r s c"],
        geometry: RayGeometry,
    ) -> Float[Tensor, "b v r s e"]:
        """Encodings of each context's samples, [from image 0, from image 1]. ``own[:, v]``
        are image v's features at context v's samples, ``other[:, v]`` the other image's
        features at the same points."""
        own = self.encode_samples(own, geometry.points_local)
        other = self.encode_samples(other, geometry.points_in_other)
        # Image order for both contexts: own-then-other for view 0, other-then-own for view 1.
        from_image_0 = torch.stack((own[:, 0], other[:, 1]), dim=1)
        from_image_1 = torch.stack((other[:, 0], own[:, 1]), dim=1)
        return torch.cat((from_image_0, from_image_1), dim=-1)

    def attend(self, encoded: Float[Tensor, "b v r s e"], local_geometry: Float[Tensor, "b v r s g"]) -> Attention:
        """Both attention rounds, each a softmax over both views' samples jointly."""
        scale = ATTENTION_SCALE
        values = pointwise(self.latent_value, encoded)
        keys = pointwise(self.key_map_2, F.relu(pointwise(self.key_map, encoded)))
        queries = pointwise(self.query_embed_2, F.relu(pointwise(self.query_embed, local_geometry)))

        weights = joint_softmax(einsum(keys, queries, "b v r s k, b v r s k -> b v r s") / scale)
        feature_round1 = einsum(weights, values, "b v r s, b v r s c -> b r c")

        latent = pointwise(self.encode_latent, feature_round1)  # b r k
        latent = rearrange(latent, "b r k -> b 1 r 1 k").expand(*local_geometry.shape[:-1], -1)
        repeat = torch.cat((latent, local_geometry), dim=-1)
        queries_round2 = pointwise(self.query_repeat_embed_2, F.relu(pointwise(self.query_repeat_embed, repeat)))
        weights_round2 = joint_softmax(einsum(queries_round2, queries, "b v r s k, b v r s k -> b v r s") / scale)
        # The official code adds z1 once per context view before summing over views.
        num_views = encoded.shape[1]
        feature = einsum(weights_round2, values, "b v r s, b v r s c -> b r c") + num_views * feature_round1
        return Attention(values, keys, queries, weights, feature_round1, weights_round2, feature)

    def decoder_input(
        self, feature: Float[Tensor, "b r c"], coords: Float[Tensor, "b v r 9"]
    ) -> Float[Tensor, "b r d"]:
        """[feature, feature, coords of view 0, coords of view 1]: the official ``phi_input``
        (latent first, as pixelNeRF's ResnetFC takes it)."""
        return torch.cat((feature, feature, rearrange(coords, "b v r c -> b r (v c)")), dim=-1)

    def decode(self, decoder_input: Float[Tensor, "b r d"]) -> Float[Tensor, "b r 3"]:
        """``phi`` on a ``decoder_input``."""
        d_latent = self.phi.lin_z[0].in_features
        return self.phi(decoder_input[..., d_latent:], decoder_input[..., :d_latent])

    # ----------------------------------------------------------------------------------
    # Rendering
    # ----------------------------------------------------------------------------------

    def render(
        self,
        z: list[Float[Tensor, "b v _ _ _"]],
        context_c2w: Float[Tensor, "b v 4 4"],
        context_intrinsics: Float[Tensor, "b v 3 3"],
        origins: Float[Tensor, "b r 3"],
        directions: Float[Tensor, "b r 3"],
    ) -> WideBaselineRays:
        """Render world rays (``origins``, unit ``directions``) from the encoder's maps ``z``
        of two context views (OpenCV cam2world; intrinsics in pixels of the square encoder
        image with integer pixel centres). The last map must have the image's resolution
        (the official ``conv_map`` output); it sets the image size.

        Cost is linear in the number of rays (features are read only at the samples);
        callers chunk large batches of rays."""
        cfg = self.cfg
        geometry = ray_geometry(context_c2w, context_intrinsics, origins, directions, z[-1].shape[-1], cfg.num_samples)
        own = sample_maps(z, geometry.sample_grid, "border")
        # Image v at the other context's points, then swapped: other[:, v] is image 1 - v at
        # context v's points (swapping the small result, not the maps).
        other = other_view(sample_maps(z, other_view(geometry.other_grid), "zeros"))
        attention = self.attend(self.pair_encodings(own, other, geometry), geometry.local_geometry)

        decoder_input = self.decoder_input(attention.feature, geometry.coords)
        valid = geometry.valid.any(dim=1)
        rgb = torch.where(valid[..., None], self.decode(decoder_input), 1.0)

        w = attention.weights
        official_point = einsum(
            w, geometry.points_local.clamp(-DEPTH_CLAMP, DEPTH_CLAMP), "b v r s, b v r s c -> b r c"
        )
        along = einsum(
            geometry.points_local - geometry.origins[..., None, :], geometry.directions, "b v r s c, b v r c -> b v r s"
        )
        along = along.nan_to_num(nan=DEPTH_CLAMP).clamp(0, DEPTH_CLAMP)
        depth = einsum(w, along, "b v r s, b v r s -> b r")
        entropy = -einsum(w, w.clamp_min(torch.finfo(w.dtype).tiny).log(), "b v r s, b v r s -> b r")
        points_world = apply_transform(context_c2w[:, :, None, None], geometry.points_local, 1.0)
        return WideBaselineRays(
            rgb=rgb,
            valid=valid,
            depth=depth,
            official_depth_point=official_point,
            attention=w,
            attention_round2=attention.weights_round2,
            entropy=entropy,
            sample_xy=geometry.sample_xy,
            sample_grid=geometry.sample_grid,
            sample_points=points_world,
            sample_points_local=geometry.points_local,
            coords=geometry.coords,
            decoder_input=decoder_input,
            geometry=geometry,
        )
