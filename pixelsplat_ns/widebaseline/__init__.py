"""Du et al.'s cross-attention wide-baseline renderer ("Learning to Render Novel Views from
Wide-Baseline Stereo Pairs", CVPR 2023), re-implemented from its description.

``config`` holds the sizes (official and small presets); ``image_encoder`` the DPT-Hybrid
image encoder (``resnet_bit``, ``vit``, ``dpt`` are its parts); ``geometry`` each query ray's
epipolar samples in both context frames; ``renderer`` the two attention rounds and the
decoder over them; ``network`` encoder and renderer under the official checkpoint keys;
``official`` checkpoint loading and ``render_rays`` in the official conventions.
"""

from .config import WideBaselineConfig
from .network import WideBaselineNetwork
from .renderer import WideBaselineRays

__all__ = ["WideBaselineConfig", "WideBaselineNetwork", "WideBaselineRays"]
