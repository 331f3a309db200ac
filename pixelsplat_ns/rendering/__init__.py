"""Rendering backend: rasterise 3D Gaussians with gsplat (CUDA) or a pure-PyTorch CPU rasteriser.

``rasterize`` is the only public entry point; it has gsplat 1.4.0's semantics either way.
"""

from .rasterize import rasterize

__all__ = ["rasterize"]
