"""DPT reassembly and fusion (Ranftl et al.), as the wide-baseline encoder uses them.

Reassembly turns ViT tokens back into maps ("project" readout: each patch token is
concatenated with its view's cls token, then Linear + GELU, then a 1x1 conv, and for the
deepest level a 3x3/2 conv). The scratch convs bring all four levels to one width, and
the fusion blocks merge them coarse to fine. Names follow DPT's (``act_postprocess3.3``,
``scratch.refinenet4.resConfUnit2.conv1`` ...); ``refinenet4.resConfUnit1`` (no skip at the
coarsest level) and the depth head ``output_conv`` are stored officially but unused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn


class ProjectReadout(nn.Module):
    """Patch tokens concatenated with their cls token -> Linear(2d -> d) + GELU."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.project = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU())

    def forward(self, tokens: Float[Tensor, "b n d"]) -> Float[Tensor, "b n-1 d"]:
        patches = tokens[:, 1:]
        return self.project(torch.cat([patches, tokens[:, :1].expand_as(patches)], dim=-1))


class Reassemble(nn.Sequential):
    """Tokens of one view -> map: readout (0), to a grid (1, 2), 1x1 conv (3) and optionally a 3x3/2 conv (4).

    Positions 1 and 2 are parameterless placeholders (DPT's transpose and unflatten, done by
    ``rearrange`` here, so any token grid works); they keep the indices of the official keys.
    """

    def __init__(self, dim: int, out_channels: int, downsample: bool) -> None:
        layers = [ProjectReadout(dim), nn.Identity(), nn.Identity(), nn.Conv2d(dim, out_channels, 1)]
        if downsample:
            layers.append(nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1))
        super().__init__(*layers)

    def forward(self, tokens: Float[Tensor, "b n d"], grid: tuple[int, int]) -> Float[Tensor, "b c hs ws"]:
        x = rearrange(self[0](tokens), "b (h w) d -> b d h w", h=grid[0], w=grid[1])
        for layer in list(self)[3:]:
            x = layer(x)
        return x


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs with bias."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h w"]:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """(x + unit1(skip) if a skip is given) -> unit2 -> 2x bilinear upsampling (align_corners True) -> 1x1 conv."""

    def __init__(self, features: int) -> None:
        super().__init__()
        # Registration order = the official state-dict order.
        self.out_conv = nn.Conv2d(features, features, 1)
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)

    def forward(
        self, x: Float[Tensor, "b c h w"], skip: Float[Tensor, "b c h w"] | None = None
    ) -> Float[Tensor, "b c 2*h 2*w"]:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class Scratch(nn.Module):
    """Per-level 3x3 convs to ``features`` channels (no bias) and the four fusion blocks."""

    def __init__(self, in_channels: tuple[int, int, int, int], features: int) -> None:
        super().__init__()
        self.layer1_rn = nn.Conv2d(in_channels[0], features, 3, padding=1, bias=False)
        self.layer2_rn = nn.Conv2d(in_channels[1], features, 3, padding=1, bias=False)
        self.layer3_rn = nn.Conv2d(in_channels[2], features, 3, padding=1, bias=False)
        self.layer4_rn = nn.Conv2d(in_channels[3], features, 3, padding=1, bias=False)
        self.refinenet1 = FusionBlock(features)
        self.refinenet2 = FusionBlock(features)
        self.refinenet3 = FusionBlock(features)
        self.refinenet4 = FusionBlock(features)
        # DPT's depth head: stored by the official model, never run (indices 0, 2, 4 hold the weights).
        self.output_conv = nn.Sequential(
            nn.Conv2d(features, features // 2, 3, padding=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True),
            nn.Conv2d(features // 2, 32, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 1, 1),
            nn.ReLU(),
        )

    def forward(
        self,
        layer1: Float[Tensor, "b c1 h/4 w/4"],
        layer2: Float[Tensor, "b c2 h/8 w/8"],
        layer3: Float[Tensor, "b c3 h/16 w/16"],
        layer4: Float[Tensor, "b c4 h/32 w/32"],
    ) -> tuple[Float[Tensor, "b f h/4 w/4"], Float[Tensor, "b f h/2 w/2"]]:
        """The four levels -> (path2 at 1/4, path1 at 1/2): the encoder's z0 and z1."""
        path4 = self.refinenet4(self.layer4_rn(layer4))
        path3 = self.refinenet3(path4, self.layer3_rn(layer3))
        path2 = self.refinenet2(path3, self.layer2_rn(layer2))
        path1 = self.refinenet1(path2, self.layer1_rn(layer1))
        return path2, path1
