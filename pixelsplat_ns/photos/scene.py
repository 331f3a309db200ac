"""A nerfstudio scene folder from two posed photos, and a camera path between them."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scipy.spatial.transform import Rotation

from pixelsplat_ns.cameras import opencv_to_opengl_c2w
from pixelsplat_ns.io import current_umask, output_errors
from pixelsplat_ns.photos.pose import PairPoses


def frame_names(path_a: Path, path_b: Path) -> tuple[str, str]:
    """File names of the two photos inside the scene (A sorts first, the stems stay readable)."""
    return f"00_{Path(path_a).stem}.png", f"01_{Path(path_b).stem}.png"


def scene_transforms(poses: PairPoses, names: tuple[str, str]) -> dict:
    """transforms.json content: per-frame pinhole intrinsics and nerfstudio (OpenGL) camera-to-world
    matrices, camera A at the origin and a baseline of 1; both photos are training (and, for
    nerfstudio's sake, validation) images."""
    c2w = opencv_to_opengl_c2w(torch.from_numpy(poses.c2w_opencv())).numpy()
    width, height = poses.image_size
    cx, cy = poses.principal_point
    frames = []
    for view, name in enumerate(names):
        focal = poses.focal_px[view]
        frames.append(
            {
                "file_path": f"images/{name}",
                "transform_matrix": c2w[view].tolist(),
                "fl_x": focal,
                "fl_y": focal,
                "cx": cx,
                "cy": cy,
                "w": width,
                "h": height,
            }
        )
    files = [f"images/{name}" for name in names]
    return {
        "camera_model": "PINHOLE",
        "frames": frames,
        "train_filenames": files,
        "val_filenames": files,
        "test_filenames": files,
        "pixelsplat_photos": {
            "focal_source": poses.focal_source,
            "focal_refined": poses.focal_refined,
            "matches": poses.num_matches,
            "inliers": poses.num_inliers,
            "median_sampson_px": poses.median_sampson_px,
            "median_parallax_deg": poses.median_parallax_deg,
            "notes": poses.notes,
        },
    }


def write_scene_folder(poses: PairPoses, folder: Path, names: tuple[str, str]) -> None:
    """Write the scene into a temporary folder beside ``folder`` and rename it into place; an
    existing ``folder`` is replaced only once the new one is whole. Failures to write raise
    ``PixelSplatOutputError`` and leave ``folder`` as it was."""
    if poses.images is None:
        raise ValueError("the poses carry no images (estimate_pair_poses keeps them)")
    folder = Path(folder)
    with output_errors(folder):
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
        try:
            (staging / "images").mkdir()
            for image, name in zip(poses.images, names, strict=True):
                Image.fromarray(image).save(staging / "images" / name, format="PNG")
            (staging / "transforms.json").write_text(json.dumps(scene_transforms(poses, names), indent=1))
            os.chmod(staging, 0o777 & ~current_umask())
            if folder.exists():
                old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.old.", dir=folder.parent))
                os.replace(folder, old / folder.name)
                os.replace(staging, folder)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(staging, folder)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise


def interpolate_c2w(c2w_a: np.ndarray, c2w_b: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Camera-to-world matrices ([..., 3|4, 4], any axis convention shared by both) along the path
    from A (t = 0) to B (t = 1): positions linear, rotations along the geodesic (slerp), both
    extrapolated for t outside [0, 1]. Returns [len(times), 3, 4]."""
    rotation_a, rotation_b = c2w_a[:3, :3], c2w_b[:3, :3]
    step = Rotation.from_matrix(rotation_a.T @ rotation_b).as_rotvec()
    out = np.zeros((len(times), 3, 4))
    for i, t in enumerate(np.asarray(times, dtype=np.float64)):
        out[i, :3, :3] = rotation_a @ Rotation.from_rotvec(t * step).as_matrix()
        out[i, :3, 3] = (1 - t) * c2w_a[:3, 3] + t * c2w_b[:3, 3]
    return out
