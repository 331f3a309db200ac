"""Standard 3DGS PLY export of splatfacto-style parameters, without open3d.

Same layout and filter as ``ns-export gaussian-splat`` (x y z nx ny nz f_dc_* f_rest_*
opacity scale_* rot_*; non-finite Gaussians and those with opacity below 1/255 dropped),
written vectorised with plyfile and atomically. nerfstudio's exporter imports open3d,
which needs the system library libusb; this one does not.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from plyfile import PlyData, PlyElement

from pixelsplat_ns.io import atomic_path, output_errors

MIN_OPACITY_LOGIT = -5.5373  # logit(1/255): the rasterisers skip anything fainter


def export_splat_ply(params: Mapping[str, torch.Tensor], path: Path) -> int:
    """Write ``params`` (means [N,3], scales [N,3] log, quats [N,4] wxyz, features_dc [N,3],
    features_rest [N,K-1,3], opacities [N,1] logit) as a 3DGS PLY; returns the count written.
    Written to a temporary file and renamed: on a full disk or a read-only folder the previous
    ``path`` stays whole and a ``PixelSplatOutputError`` names the file and the reason."""
    means = params["means"].detach().cpu().float().numpy()
    n = means.shape[0]
    rest = params["features_rest"].detach().cpu().float()
    columns: dict[str, np.ndarray] = {"x": means[:, 0], "y": means[:, 1], "z": means[:, 2]}
    for axis in ("nx", "ny", "nz"):
        columns[axis] = np.zeros(n, dtype=np.float32)
    dc = params["features_dc"].detach().cpu().float().numpy()
    for i in range(3):
        columns[f"f_dc_{i}"] = dc[:, i]
    # Channel-major, as the Inria PLY layout expects: f_rest_{c * (K-1) + k}.
    rest = rest.transpose(1, 2).reshape(n, -1).numpy()
    for i in range(rest.shape[1]):
        columns[f"f_rest_{i}"] = rest[:, i]
    columns["opacity"] = params["opacities"].detach().cpu().float().numpy().reshape(n)
    scales = params["scales"].detach().cpu().float().numpy()
    quats = params["quats"].detach().cpu().float().numpy()
    for i in range(3):
        columns[f"scale_{i}"] = scales[:, i]
    for i in range(4):
        columns[f"rot_{i}"] = quats[:, i]

    keep = np.ones(n, dtype=bool)
    for values in columns.values():
        keep &= np.isfinite(values)
    keep &= columns["opacity"] >= MIN_OPACITY_LOGIT
    vertex = np.empty(int(keep.sum()), dtype=[(name, "f4") for name in columns])
    for name, values in columns.items():
        vertex[name] = values[keep]
    with output_errors(path), atomic_path(Path(path)) as temporary:
        PlyData([PlyElement.describe(vertex, "vertex")]).write(str(temporary))
    return len(vertex)
