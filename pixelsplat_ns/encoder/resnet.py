"""ResNets with torchvision's module layout (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so
torchvision / DINO ResNet weights load by name, without importing torchvision.

No classifier head, no max-pool use (the pixelSplat backbones never pool). (For inference,
``encoder.inference.resnet`` folds batch norm into the convolutions and runs channels-last.)
"""

from __future__ import annotations

from collections.abc import Callable

from jaxtyping import Float
from torch import Tensor, nn

NormFactory = Callable[[int], nn.Module]


def batch_norm(channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels)


def instance_norm(channels: int) -> nn.Module:
    return nn.InstanceNorm2d(channels, affine=False, track_running_stats=False)


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
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        identity = x if self.downsample is None else self.downsample(x)
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
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
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
        return self.relu(self.bn1(self.conv1(images)))

    def stages(self, images: Float[Tensor, "n 3 h w"], count: int) -> list[Tensor]:
        """[stem output, stage 1 output, ..., stage ``count`` output]."""
        x = self.stem(images)
        outputs = [x]
        for index in range(1, count + 1):
            x = getattr(self, f"layer{index}")(x)
            outputs.append(x)
        return outputs
