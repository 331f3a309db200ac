"""BiT-style ResNet (non-pre-activation) with weight-standardised convolutions.

The hybrid ViT's backbone: a 7x7/2 stem conv + GroupNorm + ReLU + 3x3/2 max-pool, then
bottleneck stages at strides 4, 8 and 16. Every convolution standardises its weights per
output filter before convolving, and strided ones pad TensorFlow's "SAME" way (the extra
pixel on the right/bottom). Parameter names follow timm 0.5.4's ``ResNetV2`` (``stem.conv``,
``stages.N.blocks.M.conv1`` ...), so the official checkpoint loads as it is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (before, after) of one axis: output ceil(size / stride), extra pixel after."""
    total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


def pad_same(x: Float[Tensor, "b c h w"], kernel: int, stride: int, value: float = 0.0) -> Float[Tensor, "b c hp wp"]:
    """Pad ``x`` so that a ``kernel``/``stride`` window gives TF "SAME" output (computed from the input size)."""
    top, bottom = same_padding(x.shape[-2], kernel, stride)
    left, right = same_padding(x.shape[-1], kernel, stride)
    if top == bottom == left == right == 0:
        return x
    return F.pad(x, (left, right, top, bottom), value=value)


class StdConv2dSame(nn.Conv2d):
    """Conv2d whose filters are standardised over (in, kh, kw) before use: (w - mean) / sqrt(var + eps),
    biased variance. Stride 1 pads symmetrically ((k - 1) / 2); stride > 1 pads "SAME" at run time."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, eps: float = 1e-8
    ) -> None:
        padding = (kernel_size - 1) // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=padding, bias=False)
        self.eps = eps

    def standardised_weight(self) -> Float[Tensor, "o i kh kw"]:
        flat = self.weight.flatten(1)
        variance, mean = torch.var_mean(flat, dim=1, unbiased=False, keepdim=True)
        return ((flat - mean) * torch.rsqrt(variance + self.eps)).view_as(self.weight)

    def forward(self, x: Float[Tensor, "b i h w"]) -> Float[Tensor, "b o ho wo"]:
        if self.stride[0] > 1:
            x = pad_same(x, self.kernel_size[0], self.stride[0])
        return F.conv2d(x, self.standardised_weight(), None, self.stride, self.padding)


class GroupNormAct(nn.GroupNorm):
    """GroupNorm (eps 1e-5), optionally followed by ReLU."""

    def __init__(self, channels: int, groups: int, act: bool = True) -> None:
        super().__init__(groups, channels, eps=1e-5)
        self.act = act

    def forward(self, x: Float[Tensor, "b c h w"]) -> Float[Tensor, "b c h w"]:
        x = super().forward(x)
        return F.relu(x) if self.act else x


class Stem(nn.Module):
    """7x7/2 conv (eps 1e-6: the official model rebuilds it with timm's default) + GN + ReLU + 3x3/2 max-pool."""

    def __init__(self, in_channels: int, width: int, groups: int) -> None:
        super().__init__()
        self.conv = StdConv2dSame(in_channels, width, 7, stride=2, eps=1e-6)
        self.norm = GroupNormAct(width, groups)

    def forward(self, x: Float[Tensor, "b 3 h w"]) -> Float[Tensor, "b c h/4 w/4"]:
        x = self.norm(self.conv(x))
        # The pool pads with -inf, so padding never wins the max.
        return F.max_pool2d(pad_same(x, 3, 2, value=-math.inf), kernel_size=3, stride=2)


class Downsample(nn.Module):
    """The shortcut of a stage's first block: strided 1x1 conv + GN (no ReLU)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        self.conv = StdConv2dSame(in_channels, out_channels, 1, stride=stride)
        self.norm = GroupNormAct(out_channels, groups, act=False)

    def forward(self, x: Float[Tensor, "b i h w"]) -> Float[Tensor, "b o ho wo"]:
        return self.norm(self.conv(x))


class Bottleneck(nn.Module):
    """relu(x' + shortcut(x)), x' = GN(1x1(relu GN(3x3/s(relu GN(1x1 x))))): the stride is in the 3x3."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, groups: int) -> None:
        super().__init__()
        mid = out_channels // 4
        # Registered first, as in timm, so the state-dict order is the official one.
        self.downsample = (
            Downsample(in_channels, out_channels, stride, groups)
            if stride != 1 or in_channels != out_channels
            else None
        )
        self.conv1 = StdConv2dSame(in_channels, mid, 1)
        self.norm1 = GroupNormAct(mid, groups)
        self.conv2 = StdConv2dSame(mid, mid, 3, stride=stride)
        self.norm2 = GroupNormAct(mid, groups)
        self.conv3 = StdConv2dSame(mid, out_channels, 1)
        self.norm3 = GroupNormAct(out_channels, groups, act=False)

    def forward(self, x: Float[Tensor, "b i h w"]) -> Float[Tensor, "b o ho wo"]:
        shortcut = x if self.downsample is None else self.downsample(x)
        x = self.norm1(self.conv1(x))
        x = self.norm2(self.conv2(x))
        x = self.norm3(self.conv3(x))
        return F.relu(x + shortcut)


class Stage(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, depth: int, stride: int, groups: int) -> None:
        super().__init__()
        self.blocks = nn.Sequential(
            *(
                Bottleneck(in_channels if i == 0 else out_channels, out_channels, stride if i == 0 else 1, groups)
                for i in range(depth)
            )
        )

    def forward(self, x: Float[Tensor, "b i h w"]) -> Float[Tensor, "b o ho wo"]:
        return self.blocks(x)


class ResNetBiT(nn.Module):
    """Stem and three stages (strides 4, 8, 16 overall); ``forward`` returns every stage's output."""

    def __init__(
        self,
        stem_width: int,
        depths: tuple[int, ...],
        widths: tuple[int, ...],
        groups: int,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        self.stem = Stem(in_channels, stem_width, groups)
        channels = (stem_width, *widths)
        self.stages = nn.Sequential(
            *(Stage(channels[i], channels[i + 1], depth, 1 if i == 0 else 2, groups) for i, depth in enumerate(depths))
        )

    def forward(self, x: Float[Tensor, "b 3 h w"]) -> list[Float[Tensor, "b c hs ws"]]:
        x = self.stem(x)
        outputs = []
        for stage in self.stages:
            x = stage(x)
            outputs.append(x)
        return outputs
