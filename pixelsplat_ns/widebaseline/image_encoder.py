"""The wide-baseline renderer's image encoder: a modified DPT-Hybrid plus ``conv_map``.

Per context view it gives three feature maps (official sizes at 256x256):

- z0: DPT fusion path 2, [256, 64, 64] (1/4);
- z1: DPT fusion path 1, [256, 128, 128] (1/2);
- z2: ``conv_map``, a 7x7 conv on the normalised image, [64, 256, 256] (full resolution).

The DPT reads the BiT ResNet's stage-1 and stage-2 outputs as they are, and the joint ViT's
tokens after the two hooked blocks (see ``vit.py``, ``dpt.py``).

**Input convention.** Images in [0, 1] (the official code takes [-1, 1] and maps it to
[0, 1] first), normalised here with ImageNet mean/std; cameras as OpenCV cam2world.

**Mounting (official checkpoint keys).** The official state dict has no prefix: the DPT
under ``encoder.*`` and the 7x7 conv under ``conv_map.*``, beside the renderer's own
layers. ``WideBaselineImageEncoder`` has exactly those two attributes, so its state dict
*is* the encoder part of the official one. The full network must not hold it under a
name (that would add a prefix); it holds the two parts itself and calls ``encode_images``::

    class CrossAttentionRenderer(nn.Module):
        def __init__(self, cfg: WideBaselineConfig) -> None:
            super().__init__()
            self.encoder = DPTHybridEncoder(cfg)  # first, as in the official state-dict order
            self.conv_map = make_conv_map(cfg)
            ...  # query_encode_latent, ..., phi

        def get_z(self, images, c2w):
            return encode_images(self.encoder, self.conv_map, images, c2w)
"""

from __future__ import annotations

from einops import rearrange
from jaxtyping import Float
from torch import Tensor, nn

from .config import WideBaselineConfig
from .dpt import Reassemble, Scratch
from .vit import JointViT

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "UNUSED_KEYS",
    "DPTHybridEncoder",
    "HybridBackbone",
    "WideBaselineImageEncoder",
    "encode_images",
    "make_conv_map",
    "normalise_images",
    "unused_state_keys",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class HybridBackbone(nn.Module):
    """DPT's ``pretrained``: the joint ViT (``model``) and the reassembly of its two hooked blocks."""

    def __init__(self, cfg: WideBaselineConfig) -> None:
        super().__init__()
        self.model = JointViT(cfg)
        self.act_postprocess3 = Reassemble(cfg.vit_dim, cfg.vit_dim, downsample=False)
        self.act_postprocess4 = Reassemble(cfg.vit_dim, cfg.vit_dim, downsample=True)

    def forward(
        self, images: Float[Tensor, "b v 3 h w"], c2w: Float[Tensor, "b v 4 4"]
    ) -> list[Float[Tensor, "(b v) c hs ws"]]:
        """The four DPT levels: ResNet stages 1 and 2 (1/4, 1/8), then ViT maps at 1/16 and 1/32."""
        stages, (tokens3, tokens4) = self.model(images, c2w)
        grid = stages[-1].shape[-2:]
        layer3 = self.act_postprocess3(rearrange(tokens3, "b v n d -> (b v) n d"), grid)
        layer4 = self.act_postprocess4(rearrange(tokens4, "b v n d -> (b v) n d"), grid)
        return [stages[0], stages[1], layer3, layer4]


class DPTHybridEncoder(nn.Module):
    """The official ``encoder``: ``pretrained`` (ResNet + joint ViT + reassembly) and ``scratch`` (fusion)."""

    def __init__(self, cfg: WideBaselineConfig) -> None:
        super().__init__()
        self.pretrained = HybridBackbone(cfg)
        widths = (cfg.resnet_widths[0], cfg.resnet_widths[1], cfg.vit_dim, cfg.vit_dim)
        self.scratch = Scratch(widths, cfg.dpt_features)

    def forward(
        self, images: Float[Tensor, "b v 3 h w"], c2w: Float[Tensor, "b v 4 4"]
    ) -> tuple[Float[Tensor, "(b v) f h/4 w/4"], Float[Tensor, "(b v) f h/2 w/2"]]:
        """Normalised images -> (z0, z1), views flattened into the batch."""
        return self.scratch(*self.pretrained(images, c2w))


def make_conv_map(cfg: WideBaselineConfig) -> nn.Conv2d:
    """The full-resolution feature map z2: a 7x7 conv (padding 3, no activation) on the normalised image."""
    return nn.Conv2d(3, cfg.conv_map_channels, 7, padding=3)


def normalise_images(images: Float[Tensor, "*batch 3 h w"]) -> Float[Tensor, "*batch 3 h w"]:
    """[0, 1] RGB -> ImageNet mean/std normalised."""
    mean = images.new_tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = images.new_tensor(IMAGENET_STD).view(3, 1, 1)
    return (images - mean) / std


def encode_images(
    encoder: DPTHybridEncoder,
    conv_map: nn.Conv2d,
    images: Float[Tensor, "b v 3 h w"],
    c2w: Float[Tensor, "b v 4 4"],
) -> list[Float[Tensor, "b v c hc wc"]]:
    """Context images in [0, 1] and their OpenCV cam2world -> [z0, z1, z2] per view.

    All views are encoded jointly (the ViT attends across them), so ``v`` must be the number
    of views the model was built for. Image sides must be multiples of 32.
    """
    b, v = images.shape[:2]
    normalised = normalise_images(images)
    z0, z1 = encoder(normalised, c2w)
    z2 = conv_map(rearrange(normalised, "b v c h w -> (b v) c h w"))
    return [rearrange(z, "(b v) c h w -> b v c h w", b=b, v=v) for z in (z0, z1, z2)]


class WideBaselineImageEncoder(nn.Module):
    """The image encoder on its own; its state-dict keys are the official ``encoder.*`` and ``conv_map.*``."""

    def __init__(self, cfg: WideBaselineConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg or WideBaselineConfig.official()
        self.encoder = DPTHybridEncoder(self.cfg)
        self.conv_map = make_conv_map(self.cfg)

    def forward(
        self, images: Float[Tensor, "b v 3 h w"], c2w: Float[Tensor, "b v 4 4"]
    ) -> list[Float[Tensor, "b v c hc wc"]]:
        """Images in [0, 1], OpenCV cam2world -> [z0 (1/4), z1 (1/2), z2 (full)]; see ``encode_images``."""
        return encode_images(self.encoder, self.conv_map, images, c2w)


UNUSED_KEYS = (
    "encoder.pretrained.model.pos_embed_second",
    "encoder.pretrained.model.norm.",
    "encoder.pretrained.model.head.",
    "encoder.scratch.refinenet4.resConfUnit1.",
    "encoder.scratch.output_conv.",
)
"""Prefixes of the encoder's state-dict keys that are stored (for strict loading) but never used."""


def unused_state_keys(module: nn.Module) -> list[str]:
    """The keys of ``module``'s state dict (holding ``encoder``/``conv_map`` at top level) that the forward never reads."""
    return [key for key in module.state_dict() if key.startswith(UNUSED_KEYS)]
