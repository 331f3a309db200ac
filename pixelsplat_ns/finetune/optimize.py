"""Per-scene photometric fine-tuning of Gaussians, with splatfacto's loss and learning rates.

One training view per step, loss ``(1 - w) L1 + w (1 - SSIM)`` (w = 0.2), Adam per parameter
group with splatfacto's rates (means' rate scaled by the cameras' extent, as 3D Gaussian
Splatting does, and decayed exponentially to 1 % over the run). No densification: the point
is how far a start gets in a fixed budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from jaxtyping import Float
from pytorch_msssim import ssim
from torch import Tensor

from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.finetune.splats import Splats, render_splats


@dataclass
class FitConfig:
    steps: int = 500
    """Optimiser steps (one training view each)."""
    lr_means: float = 1.6e-4
    """Position learning rate per unit of camera extent (splatfacto: 1.6e-4)."""
    lr_means_final_fraction: float = 0.01
    """The position rate decays exponentially to this fraction at the last step."""
    lr_scales: float = 0.005
    lr_quats: float = 0.001
    lr_sh_dc: float = 0.0025
    lr_sh_rest: float = 0.0025 / 20
    lr_opacities: float = 0.05
    ssim_weight: float = 0.2
    seed: int = 0


def _check_views(images: Tensor, extrinsics: Tensor, intrinsics: Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise PixelSplatInputError(f"training images must have shape [view, 3, h, w], got {tuple(images.shape)}")
    v = images.shape[0]
    if v == 0:
        raise PixelSplatInputError("fine-tuning needs at least one training view, got none")
    if tuple(extrinsics.shape) != (v, 4, 4) or tuple(intrinsics.shape) != (v, 3, 3):
        raise PixelSplatInputError(
            f"{v} training images need extrinsics [{v}, 4, 4] and intrinsics [{v}, 3, 3], "
            f"got {list(extrinsics.shape)} and {list(intrinsics.shape)}"
        )
    for name, value in (("images", images), ("extrinsics", extrinsics), ("intrinsics", intrinsics)):
        if not torch.isfinite(value).all():
            raise PixelSplatInputError(f"training {name} contain NaN or infinite values")


def photometric_loss(
    rendered: Float[Tensor, "view h w 3"], truth: Float[Tensor, "view h w 3"], ssim_weight: float = 0.2
) -> Tensor:
    """splatfacto's image loss: (1 - w) L1 + w (1 - SSIM)."""
    l1 = (rendered - truth).abs().mean()
    similarity = ssim(rendered.permute(0, 3, 1, 2), truth.permute(0, 3, 1, 2), data_range=1.0, size_average=True)
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - similarity)


def fit_splats(
    splats: Splats,
    images: Float[Tensor, "view 3 h w"],
    extrinsics: Float[Tensor, "view 4 4"],
    intrinsics: Float[Tensor, "view 3 3"],
    config: FitConfig | None = None,
    callback: Callable[[int, Splats], None] | None = None,
) -> tuple[Splats, list[float]]:
    """Fine-tune ``splats`` on the training views (pixelSplat cameras). ``callback(step,
    splats)`` runs before step 0 and after every step (under ``no_grad``). Returns the
    fitted Gaussians (detached) and the loss of every step."""
    config = config or FitConfig()
    _check_views(images, extrinsics, intrinsics)
    if len(splats) == 0:
        raise PixelSplatInputError("there are no Gaussians to fine-tune")
    params = splats.trainable()
    centres = extrinsics[:, :3, 3]
    extent = max(float((centres - centres.mean(dim=0)).norm(dim=-1).max()) * 1.1, 1e-3)
    groups = [
        {"params": [params.means], "lr": config.lr_means * extent, "name": "means"},
        {"params": [params.log_scales], "lr": config.lr_scales},
        {"params": [params.quats], "lr": config.lr_quats},
        {"params": [params.logit_opacities], "lr": config.lr_opacities},
    ]
    # DC and higher bands learn at different rates: split the tensor into two leaves.
    sh_dc = params.sh[:, :1].detach().clone().requires_grad_(True)
    sh_rest = params.sh[:, 1:].detach().clone().requires_grad_(True)
    groups += [{"params": [sh_dc], "lr": config.lr_sh_dc}, {"params": [sh_rest], "lr": config.lr_sh_rest}]
    optimizer = torch.optim.Adam(groups, eps=1e-15)
    decay = config.lr_means_final_fraction ** (1 / max(config.steps, 1))
    generator = torch.Generator().manual_seed(config.seed)
    truth = images.permute(0, 2, 3, 1)
    shape = tuple(images.shape[-2:])

    def current() -> Splats:
        return Splats(params.means, params.log_scales, params.quats, torch.cat((sh_dc, sh_rest), dim=1), params.logit_opacities)

    if callback is not None:
        with torch.no_grad():
            callback(0, current())
    losses = []
    for step in range(1, config.steps + 1):
        view = int(torch.randint(len(images), (1,), generator=generator))
        rendered = render_splats(current(), extrinsics[view : view + 1], intrinsics[view : view + 1], shape)
        loss = photometric_loss(rendered, truth[view : view + 1], config.ssim_weight)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tuning diverged at step {step} (loss {loss.item()})")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        groups[0]["lr"] *= decay
        losses.append(loss.item())
        if callback is not None:
            with torch.no_grad():
                callback(step, current())
    fitted = current()
    return Splats(**{name: value.detach() for name, value in fitted.tensors().items()}), losses
