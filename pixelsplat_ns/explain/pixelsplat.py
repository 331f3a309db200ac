"""pixelSplat as an ``Explainable``: the viewer walkthrough's encoder run and pixel trace
(``PixelSplatModel.walkthrough``, ``pixelsplat_ns.encoder.trace_pixel``), put in the caller's
conventions. Nothing is recomputed here: the encoder runs once, with attention, as the viewer
panel runs it."""

from __future__ import annotations

import torch
from einops import rearrange, reduce
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from pixelsplat_ns.cameras import denormalize_intrinsics, encoder_to_caller_c2w, normalized_to_pixels, to_caller_frame
from pixelsplat_ns.explain.probe import ContextView, ProbeTrace
from pixelsplat_ns.nerfstudio.model import PixelSplatModel
from pixelsplat_ns.nerfstudio.walkthrough import ContextRun


class PixelSplatExplainer:
    """``Explainable`` for a ``PixelSplatModel``. The probe is a pixel of the first context view
    (at the encoder's input size): its depth buckets on its ray, weighted by the predicted depth
    distribution, and its epipolar samples in the other views, weighted by the epipolar
    transformer's last layer (attention averaged over heads)."""

    probe_in_context = True

    def __init__(self, model: PixelSplatModel) -> None:
        self.model = model

    @property
    def run(self) -> ContextRun:
        return self.model.walkthrough.run  # the encoder with attention, run once and kept

    def explain_context(self) -> list[ContextView]:
        run = self.run
        h, w = run.image_shape
        views = []
        for v, name in enumerate(run.names):
            views.append(
                ContextView(
                    name=name,
                    c2w=encoder_to_caller_c2w(run.views.extrinsics[0, v].cpu(), run.views.scene_scale),
                    K=denormalize_intrinsics(run.views.intrinsics[0, v].cpu(), w, h),
                    image=rearrange(run.views.image[0, v].cpu().clamp(0, 1), "c h w -> h w c"),
                )
            )
        return views

    def explain_render(self, camera: Cameras) -> tuple[Float[Tensor, "h w 3"], Float[Tensor, "h w"]]:
        outputs = self.model.get_outputs_for_camera(camera.to(self.model.device))
        return outputs["rgb"], outputs["depth"][..., 0]

    def explain_probe(self, camera: Cameras, row: int, col: int) -> ProbeTrace:
        run = self.run
        scale = run.views.scene_scale
        trace = run.trace(0, row, col)
        origin, direction = trace.ray_origin.cpu(), trace.ray_direction.cpu()
        pdf, depths = trace.depth_pdf[0].cpu(), trace.bucket_depths[0].cpu()  # the first (only) surface
        points = origin + depths[:, None] * direction
        h, w = run.image_shape
        # The probe view sees its samples at the probe pixel itself.
        view_pixels = [torch.tensor([[col + 0.5, row + 0.5]])]
        view_weights = [torch.ones(1)]
        for v in range(1, len(run.names)):
            epipolar = next((e for e in trace.epipolar if e.other_view == v), None)
            if epipolar is None or not epipolar.valid or epipolar.attention is None:
                view_pixels.append(torch.zeros(0, 2))  # the ray misses that view, or no transformer
                view_weights.append(torch.zeros(0))
                continue
            attention = reduce(epipolar.attention[-1].cpu().float(), "head sample -> sample", "mean")
            view_pixels.append(normalized_to_pixels(epipolar.xy.cpu().float(), w, h))
            view_weights.append(attention / attention.sum().clamp_min(1e-12))
        others = ", ".join(run.names[1:])
        return ProbeTrace(
            origin=to_caller_frame(origin, scale).float(),
            direction=direction.float(),
            points=to_caller_frame(points, scale).float(),
            weights=(pdf / pdf.sum()).float(),
            view_pixels=view_pixels,
            view_weights=view_weights,
            label=(
                f"pixelSplat: pixel (row {row}, column {col}) of {run.names[0]} ({w}x{h}, the encoder's input): "
                f"its {pdf.numel()} depth buckets weighted by the predicted depth probability; in {others}: its "
                "epipolar samples weighted by the last transformer layer's attention (mean over heads)"
            ),
        )
