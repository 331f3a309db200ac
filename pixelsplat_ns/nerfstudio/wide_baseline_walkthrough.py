"""The viewer's walkthrough of Du et al.'s renderer: the same panel as pixelSplat's
(``walkthrough.py``: same controls, same colour scale), showing what the renderer did for one
ray: its epipolar samples in both context views (3D points coloured by the first attention
round, normalised by each line's maximum as pixelSplat's panel does), the pseudo-depth the attention gives (the point on the
ray), and the context cameras with their images or their pseudo-depth maps.

A traced pixel is a pixel of a context view (sliders), rendered as if that view were the
target; "Pick: click the scene" traces the clicked ray itself. The geometry
(``WideBaselineRun``, ``ray_items``) is plain tensor code; only the panel touches viser.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.cameras import to_caller_frame, widebaseline_to_nerfstudio_camera
from pixelsplat_ns.nerfstudio.walkthrough import CameraItem, PointSet, Walkthrough, colormap
from pixelsplat_ns.widebaseline.geometry import pixel_rays

if TYPE_CHECKING:
    from pixelsplat_ns.nerfstudio.wide_baseline import WideBaselineModel

PSEUDO_DEPTH_SIDE = 64  # context pseudo-depth maps are rendered on at most this many rays per side


@dataclass
class RayTrace:
    """One ray through the renderer, in nerfstudio's world (the caller's units)."""

    origin: Float[Tensor, " 3"]
    direction: Float[Tensor, " 3"]
    points: Float[Tensor, "view sample 3"]  # the epipolar samples' 3D points (on the ray)
    attention: Float[Tensor, "view sample"]  # first round, sums to 1 over views and samples
    sample_xy: Float[Tensor, "view sample 2"]  # in pixels of each context image (integer centres)
    depth: float  # pseudo-depth: the attention-weighted distance along the ray
    entropy: float
    valid: bool  # the ray's epipolar line meets a context image
    rgb: Float[Tensor, " 3"]  # in [0, 1]


class WideBaselineRun:
    """A model's context views, traced ray by ray (not a module: it only refers to the model)."""

    def __init__(self, model: WideBaselineModel) -> None:
        self.model = model

    @property
    def names(self) -> list[str]:
        return self.model.context_names or [str(i) for i in range(self.model.context_views().images.shape[1])]

    @property
    def image_shape(self) -> tuple[int, int]:
        size = self.model.context_views().images.shape[-1]
        return size, size

    @torch.no_grad()
    def trace_ray(self, origin: Tensor, direction: Tensor) -> RayTrace:
        """Render one world ray and keep what the renderer saw."""
        out = self.model.render_rays(origin.reshape(1, 3).float(), direction.reshape(1, 3).float())
        scale = float(self.model.context_scale)
        return RayTrace(
            origin=origin.reshape(3).float().cpu(),
            direction=F.normalize(direction.reshape(3).float(), dim=0).cpu(),
            points=to_caller_frame(out.sample_points[0, :, 0].cpu(), scale),
            attention=out.attention[0, :, 0].cpu(),
            sample_xy=out.sample_xy[0, :, 0].cpu(),
            depth=float(to_caller_frame(out.depth[0, 0], scale)),
            entropy=float(out.entropy[0, 0]),
            valid=bool(out.valid[0, 0]),
            rgb=((out.rgb[0, 0] + 1) / 2).clamp(0, 1).cpu(),
        )

    def pixel_ray(self, view: int, row: int, col: int) -> tuple[Tensor, Tensor]:
        """The world ray through pixel (row, col) of a context view (as the network saw it)."""
        views = self.model.context_views()
        pixel = torch.tensor([float(col), float(row)], device=views.c2w.device)
        origin, direction = pixel_rays(pixel, views.c2w[0, view], views.intrinsics[0, view])
        return to_caller_frame(origin, views.scene_scale[0]), direction

    def trace(self, view: int, row: int, col: int) -> RayTrace:
        """Render pixel (row, col) of a context view as a target ray."""
        h, w = self.image_shape
        if not (0 <= row < h and 0 <= col < w):
            from pixelsplat_ns.errors import PixelSplatInputError

            raise PixelSplatInputError(f"pixel ({row}, {col}) is outside the {w}x{h} context image")
        return self.trace_ray(*self.pixel_ray(view, row, col))

    @torch.no_grad()
    def pseudo_depth_image(self, view: int) -> np.ndarray:
        """The renderer's pseudo-depth for the context view's own pixels, as disparity between
        the farthest (dark blue) and nearest (yellow) of them. [h, w, 3] uint8."""
        h, w = self.image_shape
        side = min(h, PSEUDO_DEPTH_SIDE)
        rows = (torch.arange(side) + 0.5) * h / side - 0.5  # pixel centres of a coarser grid
        grid = torch.stack(torch.meshgrid(rows, rows, indexing="ij"), dim=-1).flip(-1)  # (x, y)
        views = self.model.context_views()
        origins, directions = pixel_rays(
            grid.to(views.c2w.device).reshape(-1, 2), views.c2w[0, view], views.intrinsics[0, view]
        )
        depth = torch.cat(
            [
                self.model.render_rays(
                    to_caller_frame(origins[i : i + 1024], views.scene_scale[0]), directions[i : i + 1024]
                ).depth[0]
                for i in range(0, len(origins), 1024)
            ]
        )
        disparity = 1 / depth.clamp_min(1e-6)
        low, high = disparity.quantile(0.02), disparity.quantile(0.98)
        normalised = ((disparity - low) / (high - low).clamp_min(1e-9)).reshape(1, 1, side, side)
        image = F.interpolate(normalised, (h, w), mode="nearest")[0, 0]
        return colormap(image.flatten().cpu()).reshape(h, w, 3)

    def camera_items(self) -> list[CameraItem]:
        """The context cameras as the network saw them (square crop), in nerfstudio's world."""
        import viser.transforms as vtf

        views = self.model.context_views()
        h, w = self.image_shape
        items = []
        for v, name in enumerate(self.names):
            c2w = views.c2w[0, v].double().cpu()
            fy = float(views.intrinsics[0, v, 1, 1])
            image = (views.images[0, v].permute(1, 2, 0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
            items.append(
                CameraItem(
                    name=name,
                    position=to_caller_frame(c2w[:3, 3], float(views.scene_scale[0])).numpy(),
                    wxyz=vtf.SO3.from_matrix(c2w[:3, :3].numpy()).wxyz,
                    fov=float(2 * np.arctan(0.5 * h / fy)),
                    aspect=w / h,
                    image=image,
                    depth=self.pseudo_depth_image(v),
                )
            )
        return items

    def nerfstudio_cameras(self) -> tuple[Tensor, Tensor]:
        """The context cameras in nerfstudio's conventions (OpenGL c2w [v 4 4], pixel K [v 3 3])."""
        views = self.model.context_views()
        return widebaseline_to_nerfstudio_camera(views.c2w[0], views.intrinsics[0], views.scene_scale[0])


def ray_items(trace: RayTrace) -> dict[str, PointSet]:
    """What to draw for a traced ray, in nerfstudio's world:

    * ``ray``: the ray up to its farthest sample;
    * ``depth``: the pseudo-depth point on the ray;
    * ``epipolar_<view>``: the samples' 3D points, coloured by attention (normalised by the
      line's maximum, pixelSplat's colour scale; grey where the ray misses the images)."""
    finite = trace.points[torch.isfinite(trace.points).all(-1)]
    reach = float((finite - trace.origin).norm(dim=-1).max()) if len(finite) else 1.0
    steps = torch.linspace(0, min(reach, 4 * max(trace.depth, 1e-3)), 64)
    ray = trace.origin + steps[:, None] * trace.direction
    items = {"ray": PointSet(ray.numpy().astype(np.float32), np.full((64, 3), 200, np.uint8), 0.004)}
    point = trace.origin + trace.depth * trace.direction
    items["depth"] = PointSet(point[None].numpy().astype(np.float32), np.array([[255, 60, 60]], np.uint8), 0.02)
    for view in range(trace.points.shape[0]):
        points = trace.points[view]
        keep = torch.isfinite(points).all(-1)
        peak = trace.attention[view].max().clamp_min(1e-12)  # per epipolar line, as pixelSplat's panel
        colors = (
            colormap(trace.attention[view][keep] / peak)
            if trace.valid
            else np.full((int(keep.sum()), 3), 128, np.uint8)
        )
        items[f"epipolar_{view}"] = PointSet(points[keep].numpy().astype(np.float32), colors, 0.008)
    return items


class WideBaselineWalkthrough(Walkthrough):
    """pixelSplat's panel, driven by the wide-baseline renderer."""

    pick_label = "Pick: click the scene"

    def camera_items(self) -> list[CameraItem]:
        return self.run.camera_items()

    def trace(self, view: int, row: int, col: int) -> RayTrace:  # type: ignore[override]
        """Trace pixel (row, col) of a context view, draw it and describe it."""
        trace = self.run.trace(view, row, col)
        self.show(trace, f"{self.run.names[view]} pixel ({row}, {col})")
        return trace

    def pick(self, origin: Tensor, direction: Tensor) -> RayTrace | None:  # type: ignore[override]
        """Trace the clicked ray itself (nerfstudio world)."""
        trace = self.run.trace_ray(origin, direction)
        self.show(trace, "clicked ray")
        return trace

    def show(self, trace: RayTrace, what: str) -> None:
        self.draw_points(ray_items(trace))
        if not trace.valid:
            self.readout.value = f"{what}: its epipolar lines miss both context images"
            return
        top = int(trace.attention.flatten().argmax())
        view, sample = divmod(top, trace.attention.shape[1])
        self.readout.value = (
            f"{what}: pseudo-depth {trace.depth:.3g}, top sample {sample} of {trace.attention.shape[1]} in view "
            f"{view} (w = {float(trace.attention.max()):.2f}), entropy {trace.entropy:.2f}"
        )
