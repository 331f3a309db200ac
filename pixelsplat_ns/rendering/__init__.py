"""Rendering backend: rasterise 3D Gaussians with gsplat (CUDA) or our CPU rasteriser.

``rasterize`` is the only public entry point; it has gsplat 1.4.0's semantics (classic
mode, ``packed=False``) with either backend. Modules:

* ``rasterize`` - the entry point, argument checks, backend choice;
* ``cpu`` - the CPU rasteriser (projection -> SH -> binning -> compositing, custom backward);
* ``native`` + ``csrc/raster.cpp`` - optional C++/OpenMP kernels, built on first use;
* ``projection``, ``sh``, ``tiles`` - pure-PyTorch building blocks (also the fallback).
"""

from .rasterize import rasterize

__all__ = ["rasterize"]
