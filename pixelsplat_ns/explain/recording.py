"""A walkthrough as a Rerun recording (rerun-sdk: the optional extra ``pip install -e ".[rerun]"``).

Entities (world = nerfstudio's dataparser frame, declared +Z up: the dataparsers' default
``orientation_method="up"`` turns the cameras' mean up direction to +Z):

* ``world/context/<name>``: each context camera (transform + pinhole, OpenGL axes declared as
  Rerun's RUB), its image at ``.../image`` and the probe's samples in it at ``.../image/probe``
  (2D points coloured by weight);
* ``world/path``: the camera path on the ``frame`` timeline, with the render at ``world/path/rgb``
  and its depth at ``world/path/depth`` (Rerun draws it as points in 3D);
* ``world/probe/ray`` and ``world/probe/samples``: the probe's ray and its samples coloured by
  weight; ``probe/weights`` and ``probe/view_weights/<name>``: the weights as bar charts;
* ``description``: what is shown, and the probe's label.

Static for a probe of a context view (pixelSplat); on the ``frame`` timeline when the probe is a
pixel of each render. Colours: viridis, relative to the largest weight.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePath
from types import ModuleType

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.explain.collect import Explanation, sample_distances, weight_colors
from pixelsplat_ns.explain.probe import ProbeTrace
from pixelsplat_ns.io import atomic_path, output_errors

INSTALL = 'pip install -e ".[rerun]" (or pip install rerun-sdk)'
TIMELINE = "frame"


class RerunMissingError(PixelSplatInputError):
    """rerun-sdk is not installed."""


def import_rerun() -> ModuleType:
    """The ``rerun`` module, or a ``RerunMissingError`` saying how to install it."""
    try:
        import rerun
    except ImportError:
        raise RerunMissingError(f"the Rerun recording needs rerun-sdk, which is not installed: {INSTALL}") from None
    return rerun


def entity_names(names: list[str]) -> list[str]:
    """Rerun entity names for the context views: file stems, made unique."""
    entities: list[str] = []
    for name in names:
        entity = re.sub(r"[^A-Za-z0-9_-]+", "_", PurePath(name).stem) or "view"
        while entity in entities:
            entity += "_"
        entities.append(entity)
    return entities


def record(explanation: Explanation, path: Path | None = None, spawn: bool = False) -> None:
    """Write the walkthrough to the ``.rrd`` file ``path`` (atomically: a failed recording
    leaves no file), or with ``spawn`` stream it to a Rerun viewer started for it."""
    rr = import_rerun()
    if (path is None) == (not spawn):
        raise ValueError("record to a file or to a spawned viewer: give exactly one of path and spawn")
    stream = rr.RecordingStream("pixelsplat_ns_explain")
    stream.set_log_time_enabled(False)  # one timeline, ``frame``: the same run records the same data
    layout = blueprint(entity_names([view.name for view in explanation.context]))
    if spawn:
        stream.spawn(default_blueprint=layout)
        _log(rr, stream, explanation)
        stream.flush()
        return
    with output_errors(path), atomic_path(path) as temporary:
        stream.save(temporary, default_blueprint=layout)
        _log(rr, stream, explanation)
        stream.flush()
        stream.disconnect()  # closes the file (and writes its footer) before it is renamed


def blueprint(views: list[str]):
    """The viewer's layout: the 3D world beside each context image, the render and its depth,
    with the probe's weights and the description below the world."""
    import rerun.blueprint as rrb

    return rrb.Blueprint(
        rrb.Horizontal(
            rrb.Vertical(
                rrb.Spatial3DView(origin="world", name="world (nerfstudio's dataparser frame)"),
                rrb.Horizontal(
                    rrb.BarChartView(origin="probe/weights", name="probe: weights along its ray"),
                    rrb.TextDocumentView(origin="description", name="description"),
                ),
                row_shares=[3, 1],
            ),
            rrb.Vertical(
                *[rrb.Spatial2DView(origin=f"world/context/{view}", name=f"context: {view}") for view in views],
                rrb.Spatial2DView(origin="world/path", contents=["+ $origin/rgb/**"], name="render"),
                rrb.Spatial2DView(origin="world/path", contents=["+ $origin/depth"], name="depth"),
            ),
            column_shares=[2, 1],
        )
    )


def _uint8(image: Float[Tensor, "h w 3"]) -> np.ndarray:
    return (image.clamp(0, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def _log_camera(rr, stream, entity: str, c2w: Tensor, K: Tensor, size: tuple[int, int], static: bool) -> None:
    h, w = size
    stream.log(
        entity,
        rr.Transform3D(translation=c2w[:3, 3].cpu().numpy(), mat3x3=c2w[:3, :3].cpu().numpy()),
        # nerfstudio's OpenGL camera axes (x right, y up, looking along -z), declared rather than
        # converted; Rerun, like nerfstudio, puts pixel centres at +0.5, so K is used as it is.
        rr.Pinhole(image_from_camera=K.cpu().numpy(), resolution=[w, h], camera_xyz=rr.ViewCoordinates.RUB),
        static=static,
    )


def _radii(rr, weights: Tensor, smallest: float, largest: float):
    relative = (weights / weights.max().clamp_min(1e-12)).cpu().numpy() if len(weights) else np.zeros(0)
    return rr.Radius.ui_points(smallest + (largest - smallest) * relative)


def _log_probe(rr, stream, probe: ProbeTrace, views: list[str], static: bool) -> None:
    distances = sample_distances(probe)
    length = float(distances.max()) if len(distances) else 1.0
    ray = torch.stack((probe.origin, probe.origin + length * probe.direction)).cpu().numpy()
    stream.log(
        "world/probe/ray", rr.LineStrips3D([ray], radii=rr.Radius.ui_points(1.0), colors=[230, 230, 230]), static=static
    )
    stream.log(
        "world/probe/samples",
        rr.Points3D(
            probe.points.cpu().numpy(), colors=weight_colors(probe.weights), radii=_radii(rr, probe.weights, 1.5, 6.0)
        ),
        static=static,
    )
    stream.log("probe/weights", rr.BarChart(probe.weights.cpu().numpy()), static=static)
    for name, pixels, weights in zip(views, probe.view_pixels, probe.view_weights, strict=True):
        stream.log(
            f"world/context/{name}/image/probe",
            rr.Points2D(
                pixels.cpu().numpy().reshape(-1, 2), colors=weight_colors(weights), radii=_radii(rr, weights, 1.5, 5.0)
            ),
            static=static,
        )
        stream.log(f"probe/view_weights/{name}", rr.BarChart(weights.cpu().numpy()), static=static)
    stream.log("probe/label", rr.TextDocument(probe.label), static=static)


def description(explanation: Explanation, views: list[str]) -> str:
    """The recording's ``description`` entity (markdown)."""
    row, col = explanation.pixel
    where = (
        f"pixel (row {row}, column {col}) of the first context view, `{explanation.context[0].name}`"
        if explanation.probe_in_context
        else f"pixel (row {row}, column {col}) of every rendered frame"
    )
    label = explanation.probe.label if explanation.probe is not None else explanation.frames[0].probe.label
    return "\n".join(
        [
            f"# {explanation.method or 'method'}: a walkthrough",
            "",
            "* `world`: nerfstudio's dataparser frame, +Z up (dataparser `orientation_method='up'`).",
            f"* `world/context/…`: the context views ({', '.join(views)}): camera and image as the method saw them.",
            f"* `world/path`: {len(explanation.frames)} cameras from the first context view to the second "
            "(nerfstudio's `get_interpolated_poses`) on the `frame` timeline; `rgb`: the render, `depth`: its depth.",
            f"* probe: {where}. `world/probe/ray`, `world/probe/samples`, `…/image/probe` in each context image, "
            "`probe/weights`; colours: viridis relative to the largest weight (yellow).",
            "",
            label,
        ]
    )


def _log(rr, stream, explanation: Explanation) -> None:
    views = entity_names([view.name for view in explanation.context])
    stream.log("world", rr.ViewCoordinates.RIGHT_HAND_Z_UP, static=True)
    stream.log(
        "description", rr.TextDocument(description(explanation, views), media_type=rr.MediaType.MARKDOWN), static=True
    )
    for view, name in zip(explanation.context, views, strict=True):
        _log_camera(rr, stream, f"world/context/{name}", view.c2w, view.K, view.image.shape[:2], static=True)
        stream.log(f"world/context/{name}/image", rr.Image(_uint8(view.image)), static=True)
    if explanation.probe is not None:
        _log_probe(rr, stream, explanation.probe, views, static=True)
    row, col = explanation.pixel
    for i, frame in enumerate(explanation.frames):
        stream.set_time(TIMELINE, sequence=i)
        _log_camera(rr, stream, "world/path", frame.c2w, frame.K, frame.rgb.shape[:2], static=False)
        stream.log("world/path/rgb", rr.Image(_uint8(frame.rgb)))
        stream.log("world/path/depth", rr.DepthImage(frame.depth.cpu().numpy().astype(np.float32), meter=1.0))
        if frame.probe is not None:
            _log_probe(rr, stream, frame.probe, views, static=False)
            pixel = rr.Points2D([[col + 0.5, row + 0.5]], colors=[255, 60, 60], radii=rr.Radius.ui_points(4.0))
            stream.log("world/path/rgb/probe", pixel)
