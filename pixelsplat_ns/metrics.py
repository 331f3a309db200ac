"""Image metrics that never touch the network.

torchmetrics' LPIPS builds torchvision's AlexNet with ImageNet weights, which torchvision
downloads on first use. This project must start offline, so LPIPS is built only when those
weights are already on disk; otherwise it is skipped with one warning that says where to
put the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal

import torch
from torch import nn

_warned: set[str] = set()


def psnr(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB) of images in [0, 1], over all elements."""
    return -10 * torch.log10(((prediction - truth) ** 2).mean())


def ssim(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """SSIM of two [h, w, 3] images in [0, 1] as pixelSplat reports it: 11x11 Gaussian
    window, sigma 1.5 (pytorch_msssim)."""
    from pytorch_msssim import ssim as _ssim

    a, b = prediction.permute(2, 0, 1)[None], truth.permute(2, 0, 1)[None]
    return _ssim(a, b, data_range=1.0, win_size=11, win_sigma=1.5)


LpipsNet = Literal["alex", "vgg"]


def _torchvision_weights(net: LpipsNet):
    from torchvision.models import AlexNet_Weights, VGG16_Weights

    return {"alex": AlexNet_Weights, "vgg": VGG16_Weights}[net].DEFAULT


def backbone_weights_path(net: LpipsNet = "alex") -> Path:
    """Where torchvision looks for the ImageNet weights of LPIPS' ``net`` (AlexNet or VGG16)."""
    filename = _torchvision_weights(net).url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def build_lpips(net: LpipsNet = "alex") -> nn.Module | None:
    """torchmetrics' LPIPS (inputs in [0, 1]) on ``net`` if its weights are local, else None.

    AlexNet is what nerfstudio reports; the pixelSplat paper's numbers use VGG. Warns once
    per process and network when the weights are missing.
    """
    path = backbone_weights_path(net)
    if not path.is_file():
        if net not in _warned:
            weights = _torchvision_weights(net)
            warnings.warn(
                f"LPIPS ({net}) is skipped: torchvision's {net} weights are not on this machine and nothing is "
                f"downloaded at run time. To enable LPIPS, place the file '{path.name}' "
                f"(torchvision {type(weights).__name__}.{weights.name}) at {path}.",
                stacklevel=2,
            )
            _warned.add(net)
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type=net, normalize=True)
