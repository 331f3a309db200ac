"""Relative-pose accuracy of ``pixelsplat_ns.photos.estimate_pair_poses`` on real scenes with
known poses: neighbouring frame pairs (i, i + 1) of the shared scenes, with the true focal
length given, and with the focal length guessed (60 degree field of view) and refined.

    .venv/bin/python benchmarks/pose_accuracy.py [--data ../shared/data] [--pairs-per-scene 6]

Prints, per scene and over all pairs, the median rotation error (degrees, angle of R_est R_true^T)
and translation-direction error (degrees, between the unit baselines), and how many pairs were
refused. Pairs are spread evenly over each scene's frames.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from pixelsplat_ns.cameras import opengl_to_opencv_c2w
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.photos import estimate_pair_poses

SCENES = (
    "strecha-castle-p19",
    "strecha-castle-p30",
    "strecha-entry-p10",
    "middlebury-temple-sparse",
    "dtu-vase",
    "llff-fern",
    "pavilion-chair-midday",
    "pavilion-chair-night",
    "pavilion-chair-sunset",
)


def true_relative_pose(c2w_a_gl: list, c2w_b_gl: list) -> tuple[np.ndarray, np.ndarray]:
    """(R, unit t) with x_b = R x_a + t, OpenCV axes, from two OpenGL camera-to-world matrices."""
    a, b = (opengl_to_opencv_c2w(torch.tensor(m, dtype=torch.float64)).numpy() for m in (c2w_a_gl, c2w_b_gl))
    rotation = b[:3, :3].T @ a[:3, :3]
    centre_b_in_a = a[:3, :3].T @ (b[:3, 3] - a[:3, 3])
    translation = -rotation @ centre_b_in_a
    return rotation, translation / np.linalg.norm(translation)


def angle_errors(estimate, rotation: np.ndarray, translation: np.ndarray) -> tuple[float, float]:
    cosine = (np.trace(estimate.rotation @ rotation.T) - 1) / 2
    rotation_error = math.degrees(math.acos(min(1.0, max(-1.0, cosine))))
    direction = float(np.clip(estimate.translation @ translation, -1, 1))
    return rotation_error, math.degrees(math.acos(direction))


def pairs_of(count: int, limit: int | None) -> list[int]:
    starts = list(range(count - 1))
    if limit is None or limit >= len(starts):
        return starts
    return sorted({round(x) for x in np.linspace(0, len(starts) - 1, limit)})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "data")
    parser.add_argument("--pairs-per-scene", type=int, default=6, help="0: every neighbouring pair")
    parser.add_argument("--scenes", nargs="*", default=list(SCENES))
    args = parser.parse_args()
    limit = args.pairs_per_scene or None

    rows = {"true focal": [], "guessed + refined": []}
    print(
        f"{'scene':28s} {'pair':>7s} | {'true focal: rot/dir (deg)':>26s} | {'guessed: rot/dir (deg), fov est/true':>38s}"
    )
    started = time.perf_counter()
    for scene in args.scenes:
        folder = args.data / scene
        if not (folder / "transforms.json").is_file():
            print(f"{scene}: not found in {args.data}, skipped")
            continue
        meta = json.loads((folder / "transforms.json").read_text())
        frames = sorted(meta["frames"], key=lambda f: f["file_path"])
        true_fov = math.degrees(2 * math.atan(meta["w"] / (2 * meta["fl_x"])))
        for i in pairs_of(len(frames), limit):
            first, second = frames[i], frames[i + 1]
            truth = true_relative_pose(first["transform_matrix"], second["transform_matrix"])
            paths = folder / first["file_path"], folder / second["file_path"]
            cells = []
            for mode, kwargs in (("true focal", {"focal_px": meta["fl_x"]}), ("guessed + refined", {})):
                try:
                    estimate = estimate_pair_poses(*paths, **kwargs)
                except PixelSplatInputError as error:
                    rows[mode].append((scene, None, None))
                    cells.append(f"refused: {str(error)[:30]}")
                    continue
                errors = angle_errors(estimate, *truth)
                rows[mode].append((scene, *errors))
                cell = f"{errors[0]:6.2f} / {errors[1]:6.2f}"
                if mode != "true focal":
                    cell += f", {estimate.fov_deg[0]:5.1f}/{true_fov:5.1f}"
                cells.append(cell)
            print(f"{scene:28s} {i:3d}-{i + 1:<3d} | {cells[0]:>26s} | {cells[1]:>38s}", flush=True)

    print(f"\n{'median over pairs':28s} | {'rotation (deg)':>14s} | {'direction (deg)':>15s} | refused | pairs")
    for mode, results in rows.items():
        for scene in [*args.scenes, "all"]:
            chosen = [r for r in results if scene in ("all", r[0])]
            done = [r for r in chosen if r[1] is not None]
            if not chosen:
                continue
            rot = np.median([r[1] for r in done]) if done else float("nan")
            direction = np.median([r[2] for r in done]) if done else float("nan")
            label = f"{mode}: {scene}"
            print(f"{label:48s} | {rot:14.2f} | {direction:15.2f} | {len(chosen) - len(done):7d} | {len(chosen)}")
    print(f"\n{time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
