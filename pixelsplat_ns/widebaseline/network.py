"""The whole cross-attention renderer network: image encoder and renderer, with the official
checkpoint's state-dict keys (no prefix: ``encoder.*`` and ``conv_map.*`` first, then the
renderer's layers, in the official order).

Use: ``z = network.encode(images, c2w)`` once per context pair, then ``network.render(z,
...)`` on chunks of rays.
"""

from __future__ import annotations

from jaxtyping import Float
from torch import Tensor

from .config import WideBaselineConfig
from .image_encoder import DPTHybridEncoder, encode_images, make_conv_map, unused_state_keys
from .renderer import WideBaselineRenderer

__all__ = ["WideBaselineNetwork"]

# Renderer layers stored in the official checkpoint that its forward never uses.
UNUSED_RENDERER_KEYS = ("update_val_merge.", "latent_avg_")


class WideBaselineNetwork(WideBaselineRenderer):
    """Encoder (``encoder``, ``conv_map``) and renderer layers at top level, as officially."""

    def __init__(self, cfg: WideBaselineConfig | None = None) -> None:
        super().__init__(cfg or WideBaselineConfig.official())

    def _register_encoder(self) -> None:
        # First, so that state-dict keys come in the official order.
        self.encoder = DPTHybridEncoder(self.cfg)
        self.conv_map = make_conv_map(self.cfg)

    def encode(
        self, images: Float[Tensor, "b v 3 h w"], c2w: Float[Tensor, "b v 4 4"]
    ) -> list[Float[Tensor, "b v _ _ _"]]:
        """Context images in [0, 1] (square, side a multiple of 32) and their OpenCV
        cam2world -> the feature maps [z0 (1/4), z1 (1/2), z2 (full resolution)]."""
        return encode_images(self.encoder, self.conv_map, images, c2w)

    def unused_state_keys(self) -> list[str]:
        """State-dict keys the forward never reads (stored so official checkpoints load strictly)."""
        renderer = [key for key in self.state_dict() if key.startswith(UNUSED_RENDERER_KEYS)]
        return unused_state_keys(self) + renderer
