"""What a method shows of its insides: the interface ``pixelsplat-ns explain`` records.

A method that can be explained gives its context views (``ContextView``), renders a camera
(image and depth) and traces one probe pixel (``ProbeTrace``): its ray, the samples along it
with the weight the method gave each, and where those samples fall in each context image.
``Explainable`` is that interface as a ``typing.Protocol``: a model implements it itself (the
wide-baseline renderer), or an adapter wraps it (``pixelsplat_ns.explain.pixelsplat``).

Conventions (those of nerfstudio): world = the dataparser's frame; camera-to-world matrices
are OpenGL (camera looks along -Z, +Y up); intrinsics and pixel positions are in pixels with
pixel centres at +0.5 (x = column, y = row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from jaxtyping import Float
from torch import Tensor

if TYPE_CHECKING:
    from nerfstudio.cameras.cameras import Cameras


@dataclass
class ContextView:
    """One context view as the method saw it."""

    name: str
    c2w: Float[Tensor, "4 4"]
    """OpenGL camera-to-world, world = nerfstudio's dataparser frame."""
    K: Float[Tensor, "3 3"]
    """Pixel intrinsics of ``image`` (pixel centres at +0.5)."""
    image: Float[Tensor, "h w 3"]
    """RGB in [0, 1]."""


@dataclass
class ProbeTrace:
    """One probe pixel's ray and the samples the method weighed along it."""

    origin: Float[Tensor, " 3"]
    """Ray origin, world."""
    direction: Float[Tensor, " 3"]
    """Unit ray direction, world."""
    points: Float[Tensor, "n 3"]
    """Samples on the ray, world."""
    weights: Float[Tensor, " n"]
    """The weight of each sample (sums to 1)."""
    view_pixels: list[Float[Tensor, "m 2"]]
    """Per context view (in ``explain_context()``'s order): where the samples the method looked
    at fall in that view's image, in pixels (x = column, y = row); [0, 2] for none."""
    view_weights: list[Float[Tensor, " m"]]
    """Per context view: the weight of each of those samples."""
    label: str
    """One line saying what the samples and weights are."""


@runtime_checkable
class Explainable(Protocol):
    """A method ``pixelsplat-ns explain`` can record."""

    probe_in_context: bool
    """True: the probe is a pixel (row, col) of the first context view, the same for every path
    frame (pixelSplat); False: a pixel of each rendered frame (the wide-baseline renderer)."""

    def explain_context(self) -> list[ContextView]:
        """The context views, as the method saw them."""
        ...

    def explain_render(self, camera: Cameras) -> tuple[Float[Tensor, "h w 3"], Float[Tensor, "h w"]]:
        """Render one camera (``Cameras`` of shape [1]): RGB in [0, 1] and depth (world units)."""
        ...

    def explain_probe(self, camera: Cameras, row: int, col: int) -> ProbeTrace:
        """Trace pixel (row, col): of the first context view when ``probe_in_context`` (then
        ``camera`` is the path's first camera and may be ignored), else of ``camera``'s render."""
        ...


def check_probe(probe: ProbeTrace, views: int) -> None:
    """Raise a ValueError naming the problem when a method's ``ProbeTrace`` is malformed."""
    n = probe.points.shape[0]
    if probe.points.shape != (n, 3) or probe.weights.shape != (n,):
        raise ValueError(
            f"probe points must be [n, 3] and weights [n], got {tuple(probe.points.shape)} and {tuple(probe.weights.shape)}"
        )
    if probe.origin.shape != (3,) or probe.direction.shape != (3,):
        raise ValueError("probe origin and direction must be [3]")
    if n and abs(float(probe.weights.sum()) - 1) > 1e-3:
        raise ValueError(f"probe weights must sum to 1, got {float(probe.weights.sum()):.4f}")
    if len(probe.view_pixels) != views or len(probe.view_weights) != views:
        raise ValueError(
            f"probe needs pixels and weights for each of the {views} context views, got "
            f"{len(probe.view_pixels)} and {len(probe.view_weights)}"
        )
    for v, (pixels, weights) in enumerate(zip(probe.view_pixels, probe.view_weights, strict=True)):
        if pixels.ndim != 2 or pixels.shape[1] != 2 or weights.shape != pixels.shape[:1]:
            raise ValueError(
                f"view {v}: probe pixels must be [m, 2] and weights [m], got {tuple(pixels.shape)} and {tuple(weights.shape)}"
            )
    values = [probe.origin, probe.direction, probe.points, probe.weights, *probe.view_pixels, *probe.view_weights]
    if not all(bool(torch.isfinite(value).all()) for value in values):
        raise ValueError("probe contains NaN or inf")
