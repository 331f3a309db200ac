"""A walkthrough as one static figure (matplotlib, no Rerun needed): the context images with
the probe's samples coloured by weight, the render and its depth at a few path frames, and the
weights along the ray."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pixelsplat_ns.explain.collect import Explanation, sample_distances, weight_colors
from pixelsplat_ns.io import atomic_path, output_errors


def shown_frames(count: int, most: int = 3) -> list[int]:
    """Indices of the path frames the figure shows: first, middle and last (as many as there are)."""
    return sorted({round(i * (count - 1) / max(most - 1, 1)) for i in range(min(count, most))})


def draw_figure(explanation: Explanation, path: Path, dpi: int = 72) -> None:
    """Write the figure as PNG to ``path``, atomically."""
    from matplotlib.figure import Figure

    shown = shown_frames(len(explanation.frames))
    # A probe of each render is shown for the middle frame shown.
    probe_frame = shown[len(shown) // 2]
    probe = explanation.probe if explanation.probe is not None else explanation.frames[probe_frame].probe
    row, col = explanation.pixel
    columns = max(len(explanation.context), len(shown), 2)
    figure = Figure(figsize=(3.2 * columns, 9.6), dpi=dpi, layout="constrained")
    grid = figure.add_gridspec(4, columns, height_ratios=(1, 1, 1, 0.9))

    def show(axis, image: np.ndarray, title: str, **kwargs) -> None:
        h, w = image.shape[:2]
        # extent: pixel centres at +0.5, the convention of the probe's pixel positions
        axis.imshow(image, extent=(0, w, h, 0), interpolation="nearest", **kwargs)
        axis.set_title(title, fontsize=9)
        axis.set_xticks([])
        axis.set_yticks([])

    for v, view in enumerate(explanation.context):
        axis = figure.add_subplot(grid[0, v])
        show(axis, view.image.clamp(0, 1).cpu().numpy(), f"context {v}: {view.name}")
        pixels, weights = probe.view_pixels[v].cpu().numpy(), probe.view_weights[v]
        order = np.argsort(weights.cpu().numpy())  # the heaviest samples drawn last, on top
        axis.scatter(
            pixels[order, 0],
            pixels[order, 1],
            c=weight_colors(weights)[order] / 255,
            s=14,
            edgecolors="white",
            linewidths=0.4,
        )
        if explanation.probe_in_context and v == 0:
            axis.plot(col + 0.5, row + 0.5, marker="x", color="red", markersize=9, mew=2)
        h, w = view.image.shape[:2]
        axis.set_xlim(0, w)  # samples past the border (the segment's clipped ends) do not widen the image
        axis.set_ylim(h, 0)
    # One depth scale for all frames shown, so that their colours compare.
    depths = np.concatenate([explanation.frames[index].depth.cpu().numpy().ravel() for index in shown])
    low, high = np.percentile(depths, (2, 98)) if depths.size else (0.0, 1.0)
    for i, index in enumerate(shown):
        frame = explanation.frames[index]
        show(figure.add_subplot(grid[1, i]), frame.rgb.clamp(0, 1).cpu().numpy(), f"render, path frame {index}")
        if not explanation.probe_in_context and index == probe_frame:
            figure.axes[-1].plot(col + 0.5, row + 0.5, marker="x", color="red", markersize=9, mew=2)
        show(
            figure.add_subplot(grid[2, i]),
            frame.depth.cpu().numpy(),
            f"depth, path frame {index} (near: red)",
            cmap="turbo_r",
            vmin=low,
            vmax=max(high, low + 1e-6),
        )

    ray = figure.add_subplot(grid[3, : max(columns // 2, 1)])
    distances, weights = sample_distances(probe).cpu().numpy(), probe.weights.cpu().numpy()
    order = np.argsort(distances)
    ray.plot(distances[order], weights[order], color="0.6", linewidth=1)
    ray.scatter(distances, weights, c=weight_colors(probe.weights) / 255, s=18, zorder=3)
    if len(distances) and distances.min() > 0 and distances.max() > 20 * distances.min():
        ray.set_xscale("log")
    ray.set_xlabel("distance along the ray (world units)", fontsize=8)
    ray.set_ylabel("weight", fontsize=8)
    ray.set_title("probe: weights along its ray", fontsize=9)
    views = figure.add_subplot(grid[3, max(columns // 2, 1) :])
    for v, view in enumerate(explanation.context):
        if len(probe.view_weights[v]) > 1:
            views.plot(probe.view_weights[v].cpu().numpy(), marker="o", markersize=3, label=view.name)
    views.set_xlabel("sample", fontsize=8)
    views.set_ylabel("weight", fontsize=8)
    views.set_title("probe: weights of its samples in each context view", fontsize=9)
    if views.get_legend_handles_labels()[0]:
        views.legend(fontsize=7)
    where = "first context view" if explanation.probe_in_context else f"render {probe_frame}"
    figure.suptitle(
        f"{explanation.method}: probe pixel (row {row}, column {col}) of the {where}\n{_wrap(probe.label)}", fontsize=9
    )
    with output_errors(path), atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=dpi)


def _wrap(text: str, width: int = 140) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width))
