"""Small nerfstudio scenes cut from ../shared/data for the end-to-end tests."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from pathlib import Path

from tests.conftest import DATA, require


def cut_scene(
    source: str,
    destination: Path,
    train: Iterable[int],
    eval_: Iterable[int] = (),
    override_pose: dict[int, int] | None = None,
) -> Path:
    """Copy frames of ``../shared/data/<source>`` into ``destination``, naming them
    ``frame_NNNNN_train.png`` / ``frame_NNNNN_eval.png`` for nerfstudio's filename split.
    ``override_pose`` maps a frame to another frame whose pose it takes (bad-input tests)."""
    source_dir = require(DATA / source)
    meta = json.loads((source_dir / "transforms.json").read_text())
    (destination / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for split, indices in (("train", train), ("eval", eval_)):
        for i in indices:
            frame = dict(meta["frames"][i])
            name = f"frame_{i:05d}_{split}.png"
            shutil.copy(source_dir / frame["file_path"], destination / "images" / name)
            frame["file_path"] = f"images/{name}"
            if override_pose and i in override_pose:
                frame["transform_matrix"] = meta["frames"][override_pose[i]]["transform_matrix"]
            frames.append(frame)
    out = {k: v for k, v in meta.items() if k != "frames"}
    out["frames"] = sorted(frames, key=lambda f: f["file_path"])
    (destination / "transforms.json").write_text(json.dumps(out, indent=1))
    return destination
