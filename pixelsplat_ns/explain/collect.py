"""Everything a walkthrough shows, gathered from an ``Explainable`` method: its context views,
renders along the path between the first two, and the probe pixel's trace. The Rerun
recording (``recording.py``) and the figure (``figure.py``) only draw an ``Explanation``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.explain.path import context_path, render_size
from pixelsplat_ns.explain.probe import ContextView, Explainable, ProbeTrace, check_probe


@dataclass
class PathFrame:
    """One camera of the path and what the method rendered there."""

    c2w: Float[Tensor, "4 4"]
    """OpenGL camera-to-world, world = nerfstudio's dataparser frame."""
    K: Float[Tensor, "3 3"]
    """Pixel intrinsics of the render."""
    rgb: Float[Tensor, "h w 3"]
    depth: Float[Tensor, "h w"]
    probe: ProbeTrace | None
    """The probe pixel of this render (methods whose probe is not in a context view)."""


@dataclass
class Explanation:
    """A method's walkthrough, ready to draw."""

    method: str
    context: list[ContextView]
    frames: list[PathFrame]
    pixel: tuple[int, int]
    """The probe pixel (row, column): of the first context view when ``probe`` is set, else
    of every rendered frame."""
    probe: ProbeTrace | None
    """The probe of the first context view (``Explainable.probe_in_context``)."""

    @property
    def probe_in_context(self) -> bool:
        return self.probe is not None


def probe_pixel(
    explainable: Explainable, context: list[ContextView], long_side: int | None, pixel: tuple[int, int] | None
) -> tuple[int, int]:
    """The probe pixel (row, col): ``pixel``, checked against the image it belongs to, or that
    image's centre."""
    if explainable.probe_in_context:
        h, w = context[0].image.shape[:2]
        image = f"the first context image ({context[0].name}, {w}x{h} as the method saw it)"
    else:
        h, w = render_size(context[0], long_side)
        image = f"the rendered frames ({w}x{h})"
    if pixel is None:
        return h // 2, w // 2
    row, col = pixel
    if not (0 <= row < h and 0 <= col < w):
        raise PixelSplatInputError(
            f"pixel (row {row}, column {col}) is outside {image}: rows go from 0 to {h - 1}, columns from 0 to {w - 1}"
        )
    return row, col


@torch.no_grad()
def explain(
    explainable: Explainable,
    frames: int,
    pixel: tuple[int, int] | None = None,
    long_side: int | None = None,
    method: str = "",
    progress: Callable[[int], None] | None = None,
) -> Explanation:
    """Gather the walkthrough: the context views, ``frames`` renders (image, depth) on the path
    from the first context view to the second, rendered with long side ``long_side`` (the first
    context image's own size when None), and the probe pixel's trace (default: the centre of
    its image). ``progress(i)`` is called after each frame."""
    if frames < 1:
        raise PixelSplatInputError(f"--frames must be at least 1, got {frames}")
    context = explainable.explain_context()
    if len(context) < 2:
        raise PixelSplatInputError(f"a walkthrough needs two context views, the method gave {len(context)}")
    row, col = probe_pixel(explainable, context, long_side, pixel)
    cameras = context_path(context[0], context[1], frames, long_side)
    probe = None
    if explainable.probe_in_context:
        probe = explainable.explain_probe(cameras[0:1], row, col)
        check_probe(probe, len(context))
    path = []
    for i in range(frames):
        camera = cameras[i : i + 1]
        rgb, depth = explainable.explain_render(camera)
        size = (int(camera.height[0]), int(camera.width[0]))
        if tuple(rgb.shape) != (*size, 3) or tuple(depth.shape) != size:
            raise ValueError(
                f"explain_render must give [h, w, 3] and [h, w] for a {size[1]}x{size[0]} camera, "
                f"got {tuple(rgb.shape)} and {tuple(depth.shape)}"
            )
        frame_probe = None
        if not explainable.probe_in_context:
            frame_probe = explainable.explain_probe(camera, row, col)
            check_probe(frame_probe, len(context))
        c2w = torch.eye(4)
        c2w[:3] = camera.camera_to_worlds[0].cpu()
        path.append(PathFrame(c2w, camera.get_intrinsics_matrices()[0].cpu(), rgb.cpu(), depth.cpu(), frame_probe))
        if progress is not None:
            progress(i)
    return Explanation(method, context, path, (row, col), probe)


def sample_distances(probe: ProbeTrace) -> Float[Tensor, " n"]:
    """Distance of each sample along the probe's ray."""
    return (probe.points - probe.origin) @ probe.direction


def weight_colors(weights: Float[Tensor, " n"]) -> np.ndarray:
    """uint8 RGB [n, 3] of each weight relative to the largest (matplotlib's viridis: dark
    violet for none, yellow for the largest): the colours of both the recording and the figure."""
    from matplotlib import colormaps

    relative = (weights / weights.max().clamp_min(1e-12)).clamp(0, 1).cpu().numpy() if len(weights) else np.zeros(0)
    return (colormaps["viridis"](relative)[:, :3] * 255 + 0.5).astype(np.uint8)
