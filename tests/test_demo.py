"""``pixelsplat-ns demo``: the README's main job, and its bad inputs (nothing written)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from plyfile import PlyData

from pixelsplat_ns.cli.demo import DEMO_SCENE, Demo


def printed(capsys) -> str:
    """What the command printed, with rich's line wrapping undone."""
    return "".join(capsys.readouterr().out.splitlines())


def test_demo_predicts_renders_and_exports(tmp_path: Path, capsys):
    Demo(output_dir=tmp_path / "out").main()
    runs = list((tmp_path / "out" / "demo" / "pixelsplat").iterdir())
    assert len(runs) == 1
    run = runs[0]
    assert (run / "config.yml").is_file() and list((run / "nerfstudio_models").glob("*.ckpt"))
    held_out = sorted(p.name for p in (DEMO_SCENE / "images").glob("*_eval.png"))
    renders = sorted((run / "renders").glob("*_rgb.png"))
    assert [p.name.replace("_rgb", "") for p in renders] == held_out
    ply = PlyData.read(str(run / "splat.ply"))["vertex"]
    positions = np.stack([ply[axis] for axis in "xyz"], axis=-1)
    assert len(positions) > 1000 and np.isfinite(positions).all()
    assert not list(run.rglob(".*.tmp")) and not [p for p in run.rglob(".*") if p.is_file()]  # no temporaries left
    printed = capsys.readouterr().out
    assert "pixelsplat demo done" in printed and f"{len(positions):,} Gaussians" in printed
    assert "SSIM" in printed and "comparison.png" in printed
    # comparison.png: per held-out view a row of nearest context | truth | render | depth, at the photos' size.
    comparison = np.asarray(Image.open(run / "comparison.png"))
    truth = np.asarray(Image.open(DEMO_SCENE / "images" / held_out[0]).convert("RGB"))
    h, w = truth.shape[:2]
    assert comparison.shape == (len(held_out) * h, 4 * w, 3)
    assert np.abs(comparison[:h, w : 2 * w].astype(int) - truth.astype(int)).max() <= 1


def test_corrupt_checkpoint_is_named_and_nothing_is_written(tmp_path: Path, capsys):
    checkpoint = tmp_path / "re10k.ckpt"
    checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        Demo(output_dir=tmp_path / "out", encoder_checkpoint=checkpoint).main()
    assert exit_info.value.code == 2
    assert str(checkpoint) in printed(capsys)
    assert not (tmp_path / "out").exists()


def test_a_folder_that_is_not_a_scene_is_named_and_nothing_is_written(tmp_path: Path, capsys):
    with pytest.raises(SystemExit):
        Demo(output_dir=tmp_path / "out", data=tmp_path).main()
    assert "no transforms.json" in printed(capsys)
    assert not (tmp_path / "out").exists()


def test_a_failure_inside_training_removes_the_attempt(tmp_path: Path, capsys):
    """The scene is valid but lacks the demo's context frames: nerfstudio has already written
    the run's config when the pipeline refuses; the run folder must not stay behind."""
    scene = tmp_path / "scene"
    shutil.copytree(DEMO_SCENE, scene)
    meta = json.loads((scene / "transforms.json").read_text())
    meta["frames"] = [f for f in meta["frames"] if "00040" not in f["file_path"]]
    (scene / "transforms.json").write_text(json.dumps(meta))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("the user's file")
    with pytest.raises(SystemExit):
        Demo(output_dir=tmp_path / "out", data=scene).main()
    assert "frame_00040_train" in printed(capsys)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]


def test_an_output_that_cannot_be_written_is_one_line(tmp_path: Path, capsys, monkeypatch):
    """A full disk while the demo writes its PLY: one line naming the file, exit 1 (the
    project's writers keep the previous file whole; see test_bad_input)."""
    from pixelsplat_ns.errors import PixelSplatOutputError

    def full_disk(self) -> None:
        raise PixelSplatOutputError(f"cannot write {tmp_path / 'splat.ply'}: No space left on device")

    monkeypatch.setattr(Demo, "run", full_disk)
    with pytest.raises(SystemExit) as stopped:
        Demo(output_dir=tmp_path / "out").main()
    assert stopped.value.code == 1
    out = printed(capsys)
    # rich wraps at spaces, which the unwrapping cannot restore: compare without whitespace
    assert "Nospaceleftondevice" in "".join(out.split()) and "Traceback" not in out
