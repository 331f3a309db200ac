"""The camera path of a walkthrough: from the first context view to the second, with
nerfstudio's own interpolation (rotations slerped, positions and intrinsics linear)."""

from __future__ import annotations

import numpy as np
import torch
from nerfstudio.cameras.camera_utils import get_interpolated_k, get_interpolated_poses
from nerfstudio.cameras.cameras import Cameras, CameraType

from pixelsplat_ns.explain.probe import ContextView


def render_size(view: ContextView, long_side: int | None) -> tuple[int, int]:
    """(h, w) of the renders: the view's own size with its long side brought to ``long_side``."""
    h, w = view.image.shape[:2]
    if long_side is None:
        return h, w
    factor = long_side / max(h, w)
    return max(1, round(h * factor)), max(1, round(w * factor))


def context_path(first: ContextView, second: ContextView, frames: int, long_side: int | None = None) -> Cameras:
    """``frames`` cameras from ``first`` to ``second``, both included (one frame: ``first``),
    by ``nerfstudio.cameras.camera_utils.get_interpolated_poses`` / ``get_interpolated_k``,
    rendering at ``render_size(first, long_side)``."""
    if frames < 1:
        raise ValueError(f"a path needs at least one frame, got {frames}")
    poses = get_interpolated_poses(first.c2w.double().cpu().numpy(), second.c2w.double().cpu().numpy(), steps=frames)
    ks = torch.stack(get_interpolated_k(first.K.double().cpu(), second.K.double().cpu(), steps=frames))
    h, w = first.image.shape[:2]
    height, width = render_size(first, long_side)
    # The pixel grid's corners stay where they are when an image is resized, so K scales exactly.
    ks[:, 0] *= width / w
    ks[:, 1] *= height / h
    return Cameras(
        camera_to_worlds=torch.from_numpy(np.stack(poses)).float(),
        fx=ks[:, 0, 0:1].float(),
        fy=ks[:, 1, 1:2].float(),
        cx=ks[:, 0, 2:3].float(),
        cy=ks[:, 1, 2:3].float(),
        width=width,
        height=height,
        camera_type=CameraType.PERSPECTIVE,
    )
