"""Image metrics that never touch the network.

torchmetrics' LPIPS builds torchvision's AlexNet with ImageNet weights, which torchvision
downloads on first use. This project must start offline, so LPIPS is built only when those
weights are already on disk; otherwise it is skipped with one warning that says where to
put the file.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

_warned = False


def psnr(prediction: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio (dB) of images in [0, 1], over all elements."""
    return -10 * torch.log10(((prediction - truth) ** 2).mean())


def alexnet_weights_path() -> Path:
    """Where torchvision looks for the AlexNet weights LPIPS needs."""
    from torchvision.models import AlexNet_Weights

    filename = AlexNet_Weights.DEFAULT.url.rsplit("/", 1)[-1]
    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def build_lpips() -> nn.Module | None:
    """torchmetrics' LPIPS (AlexNet, inputs in [0, 1]) if its weights are local, else None.

    Warns once per process when the weights are missing.
    """
    global _warned
    path = alexnet_weights_path()
    if not path.is_file():
        if not _warned:
            warnings.warn(
                f"LPIPS is skipped: torchvision's AlexNet weights are not on this machine and nothing is "
                f"downloaded at run time. To enable LPIPS, place the file '{path.name}' "
                f"(torchvision AlexNet_Weights.IMAGENET1K_V1) at {path}.",
                stacklevel=2,
            )
            _warned = True
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
