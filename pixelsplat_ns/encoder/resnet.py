"""ResNets with torchvision's module layout (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so
torchvision / DINO ResNet weights load by name, without importing torchvision.

No classifier head, no max-pool use (the pixelSplat backbones never pool). In inference
(eval mode, autograd off) batch norm is folded into the preceding convolution.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

NormFactory = Callable[[int], nn.Module]


def batch_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


def instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


def pointwise_conv(x: Float[Tensor, "n c h w"], weight: Tensor, bias: Tensor | None, stride: int = 1) -> Tensor:
    """A 1x1 convolution: oneDNN's convolution on channels-last maps (its native layout),
    else one matrix product per image (PyTorch's CPU path for channels-first 1x1
    convolutions copies its input first)."""
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return F.conv2d(x, weight.reshape(*weight.shape[:2], 1, 1), bias, stride)
    if stride > 1:
        x = x[:, :, ::stride, ::stride]
    n, c, h, w = x.shape
    weight = weight.reshape(weight.shape[0], c)
    out = weight @ x.reshape(n, c, h * w)
    if bias is not None:
        out += bias[:, None]
    return out.view(n, -1, h, w)


def conv_norm(x: Tensor, conv: nn.Conv2d, norm: nn.Module) -> Tensor:
    """norm(conv(x)); eval-mode batch norm is folded into the convolution when autograd is off."""
    if isinstance(norm, nn.BatchNorm2d) and not norm.training and not torch.is_grad_enabled():
        scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
        weight = conv.weight * scale[:, None, None, None]
        bias = norm.bias - norm.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        if conv.kernel_size == (1, 1) and conv.padding == (0, 0) and conv.groups == 1:
            return pointwise_conv(x, weight, bias, conv.stride[0])
        return F.conv2d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return norm(conv(x))


def _conv3x3(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)


def _conv1x1(c_in: int, c_out: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 1, stride, bias=False)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, width: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = _conv3x3(c_in, width, stride)
        self.bn1 = norm(width)
        self.conv2 = _conv3x3(width, width)
        self.bn2 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != width:
            self.downsample = nn.Sequential(_conv1x1(c_in, width, stride), norm(width))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(conv_norm(x, self.conv1, self.bn1))
        out = conv_norm(out, self.conv2, self.bn2)
        identity = x if self.downsample is None else conv_norm(x, self.downsample[0], self.downsample[1])
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (stride on the 3x3 conv), as torchvision."""

    expansion = 4

    def __init__(self, c_in: int, width: int, stride: int, norm: NormFactory) -> None:
        super().__init__()
        self.conv1 = _conv1x1(c_in, width)
        self.bn1 = norm(width)
        self.conv2 = _conv3x3(width, width, stride)
        self.bn2 = norm(width)
        self.conv3 = _conv1x1(width, width * 4)
        self.bn3 = norm(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or c_in != width * 4:
            self.downsample = nn.Sequential(_conv1x1(c_in, width * 4, stride), norm(width * 4))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(conv_norm(x, self.conv1, self.bn1))
        out = self.relu(conv_norm(out, self.conv2, self.bn2))
        out = conv_norm(out, self.conv3, self.bn3)
        identity = x if self.downsample is None else conv_norm(x, self.downsample[0], self.downsample[1])
        return self.relu(out + identity)


ARCHITECTURES = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


class ResNet(nn.Module):
    """Stem and the first ``num_stages`` stages of a torchvision-layout ResNet."""

    def __init__(self, model: str, norm: NormFactory = batch_norm, num_stages: int = 4) -> None:
        super().__init__()
        if model not in ARCHITECTURES:
            raise ValueError(f"unknown ResNet {model!r}: choose one of {', '.join(ARCHITECTURES)}")
        block, depths = ARCHITECTURES[model]
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = norm(64)
        self.relu = nn.ReLU(inplace=True)
        c_in = 64
        for index in range(num_stages):
            width = 64 * 2**index
            stride = 1 if index == 0 else 2
            blocks = []
            for b in range(depths[index]):
                blocks.append(block(c_in, width, stride if b == 0 else 1, norm))
                c_in = width * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.num_stages = num_stages
        self.stage_channels = [64] + [64 * 2**i * block.expansion for i in range(num_stages)]
        self._initialise()

    def _initialise(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def stem(self, images: Float[Tensor, "n 3 h w"]) -> Tensor:
        return self.relu(conv_norm(images, self.conv1, self.bn1))

    def stages(self, images: Float[Tensor, "n 3 h w"], count: int) -> list[Tensor]:
        """[stem output, stage 1 output, ..., stage ``count`` output]. At inference on the
        CPU the maps are channels-last, oneDNN's native layout (about 25% faster)."""
        if not torch.is_grad_enabled() and images.device.type == "cpu":
            images = images.contiguous(memory_format=torch.channels_last)
        x = self.stem(images)
        outputs = [x]
        for index in range(1, count + 1):
            x = getattr(self, f"layer{index}")(x)
            outputs.append(x)
        return outputs
