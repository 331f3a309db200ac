"""``pixelsplat-ns explain``: the Explainable interface, the Rerun recording read back with
rerun-sdk's own reader, the figure, pixelSplat's adapter on a real run, and bad input (one
line, nothing written)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from pixelsplat_ns.cameras import opengl_c2w_to_viewmat
from pixelsplat_ns.explain import ContextView, Explainable, ProbeTrace, explainable_for
from pixelsplat_ns.explain.collect import explain

K = torch.tensor([[16.0, 0, 8], [0, 16, 6], [0, 0, 1]])  # 16x12 images


def look_down(x: float) -> torch.Tensor:
    """An OpenGL camera at (x, 0, 2) looking along -Z."""
    c2w = torch.eye(4)
    c2w[:3, 3] = torch.tensor([x, 0.0, 2.0])
    return c2w


def project(points: torch.Tensor, c2w: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """World points -> pixels (x = column, y = row) of an OpenGL camera with pixel K."""
    camera = points @ opengl_c2w_to_viewmat(c2w)[:3, :3].T + opengl_c2w_to_viewmat(c2w)[:3, 3]
    pixels = camera @ k.T
    return pixels[:, :2] / pixels[:, 2:]


class FakeMethod:
    """A hand-made Explainable (how a method is tested without a model): two cameras 1 apart
    looking down at the plane z = 0; renders of constant colour, depth 2; the probe's five
    samples on the pixel's ray, projected into both views."""

    def __init__(self, probe_in_context: bool) -> None:
        self.probe_in_context = probe_in_context
        self.rendered: list[tuple[int, int]] = []

    def explain_context(self) -> list[ContextView]:
        ramp = torch.linspace(0, 1, 16)[None, :, None].expand(12, 16, 3)
        return [ContextView("a.png", look_down(-0.5), K, ramp), ContextView("b.png", look_down(0.5), K, 1 - ramp)]

    def explain_render(self, camera) -> tuple[torch.Tensor, torch.Tensor]:
        h, w = int(camera.height[0]), int(camera.width[0])
        self.rendered.append((h, w))
        return torch.full((h, w, 3), 0.5), torch.full((h, w), 2.0)

    def explain_probe(self, camera, row: int, col: int) -> ProbeTrace:
        if self.probe_in_context:
            c2w, k = look_down(-0.5), K
        else:
            c2w, k = torch.eye(4), camera.get_intrinsics_matrices()[0]
            c2w[:3] = camera.camera_to_worlds[0]
        origin = c2w[:3, 3]
        ray = torch.tensor([(col + 0.5 - k[0, 2]) / k[0, 0], -(row + 0.5 - k[1, 2]) / k[1, 1], -1.0])
        direction = c2w[:3, :3] @ (ray / ray.norm())
        points = origin + torch.linspace(1, 3, 5)[:, None] * direction
        weights = torch.softmax(torch.tensor([0.0, 1, 3, 1, 0]), 0)
        views = self.explain_context()
        return ProbeTrace(
            origin, direction, points, weights, [project(points, v.c2w, v.K) for v in views], [weights, weights], "fake"
        )


def rrd_entities(path: Path) -> dict[str, list]:
    """Entity path -> its chunks, read with rerun-sdk's own reader."""
    from rerun.chunk import RrdReader

    chunks: dict[str, list] = {}
    for chunk in RrdReader(path).stream():
        chunks.setdefault(chunk.entity_path, []).append(chunk)
    return chunks


def column(chunks: list, name: str) -> list:
    return [value for chunk in chunks for value in chunk.to_record_batch().column(name).to_pylist()]


def test_a_hand_made_method_is_explainable_and_dispatches_to_itself():
    method = FakeMethod(probe_in_context=False)
    assert isinstance(method, Explainable)
    assert explainable_for(method) is method
    from pixelsplat_ns.errors import PixelSplatInputError

    with pytest.raises(PixelSplatInputError, match="cannot be explained"):
        explainable_for(object())


def test_the_path_goes_from_the_first_context_view_to_the_second_at_the_render_size():
    method = FakeMethod(probe_in_context=True)
    explanation = explain(method, frames=5, long_side=20)
    assert method.rendered == [(15, 20)] * 5
    torch.testing.assert_close(explanation.frames[0].c2w, look_down(-0.5))
    torch.testing.assert_close(explanation.frames[-1].c2w, look_down(0.5))
    torch.testing.assert_close(explanation.frames[2].c2w[:3, 3], torch.tensor([0.0, 0, 2]))
    torch.testing.assert_close(explanation.frames[0].K, K * torch.tensor([[1.25], [1.25], [1.0]]))
    assert explanation.pixel == (6, 8)  # the first context image's centre
    assert len(explain(method, frames=1).frames) == 1


@pytest.mark.parametrize("probe_in_context", [True, False])
def test_the_recording_holds_cameras_path_and_probe(tmp_path: Path, probe_in_context: bool):
    from pixelsplat_ns.explain.recording import record

    explanation = explain(FakeMethod(probe_in_context), frames=3, pixel=(4, 5), long_side=16)
    path = tmp_path / "out.rrd"
    record(explanation, path)
    assert [p.name for p in tmp_path.iterdir()] == ["out.rrd"]  # no temporary left
    chunks = rrd_entities(path)
    expected = {
        "/world",
        "/description",
        "/world/context/a",
        "/world/context/b",
        "/world/context/a/image",
        "/world/context/b/image",
        "/world/context/a/image/probe",
        "/world/context/b/image/probe",
        "/world/path",
        "/world/path/rgb",
        "/world/path/depth",
        "/world/probe/ray",
        "/world/probe/samples",
        "/probe/weights",
    }
    assert expected <= set(chunks)
    assert column(chunks["/world"], "ViewCoordinates:xyz")  # the declared up axis
    assert column(chunks["/world/context/b"], "Transform3D:translation") == [[[0.5, 0.0, 2.0]]]
    assert len(column(chunks["/world/path/rgb"], "frame")) == 3
    samples = chunks["/world/probe/samples"]
    assert all(chunk.is_static for chunk in samples) == probe_in_context
    positions = column(samples, "Points3D:positions")
    assert len(positions) == (1 if probe_in_context else 3) and len(positions[0]) == 5
    weights = column(chunks["/probe/weights"], "BarChart:values")
    assert weights  # the weights, as a bar chart
    assert ("/world/path/rgb/probe" in chunks) == (not probe_in_context)
    from rerun.chunk import RrdReader

    assert len(RrdReader(path).blueprints()) == 1  # the viewer's layout comes with the file


def test_the_figure_is_a_png(tmp_path: Path):
    from pixelsplat_ns.explain.figure import draw_figure

    for probe_in_context in (True, False):
        path = tmp_path / f"figure-{probe_in_context}.png"
        draw_figure(explain(FakeMethod(probe_in_context), frames=4, long_side=16), path)
        with Image.open(path) as image:
            assert image.format == "PNG" and min(image.size) > 200
    assert sorted(p.name for p in tmp_path.iterdir()) == ["figure-False.png", "figure-True.png"]


def test_spawn_streams_to_a_viewer_and_writes_nothing(tmp_path: Path, monkeypatch):
    import rerun

    from pixelsplat_ns.explain.recording import record

    spawned = []
    monkeypatch.setattr(rerun.RecordingStream, "spawn", lambda self, **kwargs: spawned.append(sorted(kwargs)))
    monkeypatch.chdir(tmp_path)
    record(explain(FakeMethod(False), frames=2, long_side=16), spawn=True)
    assert spawned == [["default_blueprint"]] and list(tmp_path.iterdir()) == []


def test_a_malformed_probe_is_named():
    class Broken(FakeMethod):
        def explain_probe(self, camera, row, col):
            probe = super().explain_probe(camera, row, col)
            probe.view_weights = probe.view_weights[:1]
            return probe

    with pytest.raises(ValueError, match="each of the 2 context views"):
        explain(Broken(probe_in_context=True), frames=2)

    class WrongSize(FakeMethod):
        def explain_render(self, camera):
            rgb, depth = super().explain_render(camera)
            return rgb, depth[1:]

    with pytest.raises(ValueError, match="explain_render must give"):
        explain(WrongSize(probe_in_context=True), frames=2, long_side=16)


def test_a_failed_recording_leaves_no_file(tmp_path: Path, monkeypatch):
    from pixelsplat_ns.explain import recording

    def fail(*args, **kwargs) -> None:
        raise RuntimeError("disk gone")

    monkeypatch.setattr(recording, "_log_probe", fail)
    with pytest.raises(RuntimeError):
        recording.record(explain(FakeMethod(True), frames=2, long_side=16), tmp_path / "out.rrd")
    assert list(tmp_path.iterdir()) == []


def printed(capsys) -> str:
    """What the command printed, with rich's line wrapping undone."""
    return "".join(capsys.readouterr().out.splitlines())


# ---------------------------------------------------------------- pixelSplat, a real run


@pytest.fixture(scope="module")
def run_config(tmp_path_factory) -> Path:
    """A feed-forward run on the embedded demo scene with the bundled encoder (no fine-tuning)."""
    from nerfstudio.scripts.train import main as train_main

    from pixelsplat_ns.cli.demo import DEMO_CONTEXT, DEMO_SCENE
    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config

    config = pixelsplat_trainer_config()
    config.data = DEMO_SCENE
    config.output_dir = tmp_path_factory.mktemp("explain-run")
    config.experiment_name = "demo"
    config.vis = "tensorboard"
    config.viewer.quit_on_train_completion = True
    config.pipeline.datamanager.dataparser.eval_mode = "filename"
    config.pipeline.datamanager.context_views = DEMO_CONTEXT
    config.set_timestamp()
    train_main(config)
    return config.get_base_dir() / "config.yml"


@pytest.fixture(scope="module")
def loaded(run_config: Path):
    """The run loaded once (as the command loads it), for the tests that need no fresh load."""
    from pixelsplat_ns.cli.explain import load_pipeline

    return load_pipeline(run_config)


def test_explain_records_a_pixelsplat_run(run_config: Path, tmp_path: Path, capsys):
    from pixelsplat_ns.cli.explain import Explain

    rrd, png = tmp_path / "explain.rrd", tmp_path / "explain.png"
    Explain(load_config=run_config, rerun=rrd, figure=png, frames=2, render_long_side=64, pixel=(20, 30)).main()
    said = printed(capsys)
    assert "depth buckets" in said and str(rrd) in said and str(png) in said
    chunks = rrd_entities(rrd)
    context = [name for name in chunks if name.count("/") == 3 and name.startswith("/world/context/")]
    assert sorted(context) == ["/world/context/frame_00040_train", "/world/context/frame_00045_train"]
    assert {"/world/path/rgb", "/world/path/depth", "/world/probe/ray", "/probe/weights"} <= set(chunks)
    assert len(column(chunks["/world/path/rgb"], "frame")) == 2
    (buckets,) = column(chunks["/world/probe/samples"], "Points3D:positions")
    assert len(buckets) == 32  # the bundled encoder's depth buckets
    (epipolar,) = column(chunks["/world/context/frame_00045_train/image/probe"], "Points2D:positions")
    assert len(epipolar) > 1
    (probe,) = column(chunks["/world/context/frame_00040_train/image/probe"], "Points2D:positions")
    assert probe == [[30.5, 20.5]]
    with Image.open(png) as image:
        assert image.format == "PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explain.png", "explain.rrd"]


def test_the_pixelsplat_probe_is_consistent_with_its_cameras(loaded):
    """The depth buckets lie on the probe pixel's ray of the first context camera, and the
    epipolar samples' 3D points project onto the second view's sample positions: the adapter's
    cameras, points and pixels are in one convention."""
    from pixelsplat_ns.cameras import to_caller_frame
    from pixelsplat_ns.explain.pixelsplat import PixelSplatExplainer

    explainer = PixelSplatExplainer(loaded.model)
    views = explainer.explain_context()
    h, w = views[0].image.shape[:2]
    probe = explainer.explain_probe(None, h // 3, w // 4)
    pixels = project(probe.points.double(), views[0].c2w.double(), views[0].K.double())
    expected = torch.tensor([[w // 4 + 0.5, h // 3 + 0.5]]).double().expand_as(pixels)
    torch.testing.assert_close(pixels, expected, atol=1e-3, rtol=0)  # float32 points
    (epipolar,) = explainer.run.trace(0, h // 3, w // 4).epipolar
    points = to_caller_frame(epipolar.points, explainer.run.views.scene_scale).double()
    projected = project(points, views[1].c2w.double(), views[1].K.double())
    torch.testing.assert_close(projected.float(), probe.view_pixels[1], atol=0.05, rtol=0)
    assert abs(float(probe.view_weights[1].sum()) - 1) < 1e-5 and abs(float(probe.weights.sum()) - 1) < 1e-5


def test_the_figure_needs_no_rerun(loaded, run_config: Path, tmp_path: Path, monkeypatch):
    from pixelsplat_ns.cli import explain as command

    monkeypatch.setitem(sys.modules, "rerun", None)  # rerun-sdk not installed
    monkeypatch.setattr(command, "load_pipeline", lambda config: loaded)
    png = tmp_path / "explain.png"
    command.Explain(load_config=run_config, figure=png, frames=1, render_long_side=48).main()
    with Image.open(png) as image:
        assert image.format == "PNG" and np.asarray(image).std() > 0


def test_without_rerun_sdk_one_line_and_nothing_written(run_config: Path, tmp_path: Path, monkeypatch, capsys):
    from pixelsplat_ns.cli.explain import Explain

    monkeypatch.setitem(sys.modules, "rerun", None)
    for request in ({"rerun": tmp_path / "out.rrd", "figure": tmp_path / "out.png"}, {"spawn": True}):
        with pytest.raises(SystemExit) as stopped:
            Explain(load_config=run_config, **request).main()
        assert stopped.value.code == 2
        lines = capsys.readouterr().out.strip().splitlines()
        said = "".join(lines)
        assert 'pip install -e ".[rerun]"' in said and "pip install rerun-sdk" in said
        assert "Traceback" not in said and len(said) < 240  # one line (rich wraps at the terminal width)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"pixel": (64, 0)}, "outside the first context image"),
        ({"pixel": (0, -1)}, "outside the first context image"),
        ({"frames": 0}, "--frames must be at least 1"),
        ({"load_config": Path("missing/config.yml")}, "does not exist"),
        ({"figure": None}, "nothing to write"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(
    loaded, run_config: Path, tmp_path: Path, monkeypatch, capsys, change, message
):
    from pixelsplat_ns.cli import explain as command

    monkeypatch.setattr(command, "load_pipeline", lambda config: loaded)
    arguments = {"load_config": run_config, "figure": tmp_path / "out.png", **change}
    with pytest.raises(SystemExit) as stopped:
        command.Explain(**arguments).main()
    assert stopped.value.code == 2
    said = printed(capsys)
    assert message in said and "Traceback" not in said
    assert list(tmp_path.iterdir()) == []
