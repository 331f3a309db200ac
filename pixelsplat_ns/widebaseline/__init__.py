"""Du et al.'s cross-attention wide-baseline renderer ("Learning to Render Novel Views from
Wide-Baseline Stereo Pairs", CVPR 2023), re-implemented from its description.

``config`` holds the sizes (official and small presets); ``image_encoder`` the DPT-Hybrid
image encoder (``resnet_bit``, ``vit``, ``dpt`` are its parts).
"""

from .config import WideBaselineConfig

__all__ = ["WideBaselineConfig"]
