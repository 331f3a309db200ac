"""The official evaluation protocol: fixed views per scene from an index file, scores per
target, results written per scene and resumed, clear errors for bad index/results files."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from pixelsplat_ns.data import ExampleConfig, example_from_indices
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.evaluation import (
    EvaluationIndexError,
    ViewChoice,
    load_evaluation_index,
    protocol,
    run_evaluation,
    score_views,
)
from pixelsplat_ns.metrics import psnr, ssim
from pixelsplat_ns.views import render_views
from pixelsplat_ns.weights import load_encoder
from tests.conftest import FIXTURES, require
from tests.test_data_chunks import synthetic_item, synthetic_scene, write_chunk

SHAPE = (16, 16)


@pytest.fixture(scope="module")
def encoder():
    return load_encoder("tiny", for_inference=True)  # the bundled encoder, as the evaluate command loads it


@pytest.fixture
def dataset(tmp_path):
    split = tmp_path / "data" / "test"
    write_chunk(split / "000000.torch", [synthetic_item("alpha", 6, seed=1), synthetic_item("beta", 6, seed=2)])
    write_chunk(split / "000001.torch", [synthetic_item("gamma", 6, seed=3)])
    index = {
        "alpha": {"context": [0, 4], "target": [1, 2, 3]},
        "beta": {"context": [1, 5], "target": [3]},
        "gamma": None,  # left out by the protocol
        "delta": {"context": [0, 2], "target": [1]},  # not in the data
    }
    index_path = tmp_path / "index.json"
    index_path.write_text(json.dumps(index))
    return tmp_path / "data", index_path


def test_scores_every_listed_target_and_records_what_was_left_out(encoder, dataset, tmp_path):
    data, index = dataset
    output = tmp_path / "results.json"
    results = run_evaluation(encoder, data, index, output, "bundled", SHAPE, lpips_net=None)
    assert set(results.scenes) == {"alpha", "beta"}
    assert [len(results.scenes[k].psnr) for k in ("alpha", "beta")] == [3, 1]
    assert results.skipped == {"delta": "not found in the data"}
    summary = results.summary()
    assert summary["targets"] == 4 and summary["scenes"] == 2 and summary["lpips"] is None
    all_psnr = results.scenes["alpha"].psnr + results.scenes["beta"].psnr
    assert summary["psnr"] == pytest.approx(sum(all_psnr) / 4)
    assert json.loads(output.read_text())["summary"] == summary

    # The same numbers computed by hand for "alpha": the listed frames, deterministic prediction.
    example = example_from_indices(
        synthetic_scene("alpha", 6, seed=1),
        torch.tensor([0, 4]),
        torch.tensor([1, 2, 3]),
        ExampleConfig(image_shape=SHAPE),
    )
    c, t = example["context"], example["target"]
    with torch.no_grad():
        gaussians = encoder(
            c["image"][None],
            c["extrinsics"][None],
            c["intrinsics"][None],
            c["near"][None],
            c["far"][None],
            deterministic=True,
        ).gaussians
        rendered = render_views(gaussians, t["extrinsics"][None], t["intrinsics"][None], SHAPE)[0]
    truth = t["image"].permute(0, 2, 3, 1)
    expected = [float(psnr(rendered[i], truth[i])) for i in range(3)]
    assert results.scenes["alpha"].psnr == pytest.approx(expected, abs=1e-4)
    # SSIM is pixelSplat's (11x11 Gaussian window, sigma 1.5), whatever its sign on these noise images.
    expected_ssim = [float(ssim(rendered[i], truth[i])) for i in range(3)]
    assert results.scenes["alpha"].ssim == pytest.approx(expected_ssim, abs=1e-4)


def test_resumes_without_recomputing_finished_scenes(encoder, dataset, tmp_path, monkeypatch):
    data, index = dataset
    output = tmp_path / "results.json"
    first = run_evaluation(encoder, data, index, output, "bundled", SHAPE, lpips_net=None, limit=1)
    assert len(first.scenes) == 1
    done = next(iter(first.scenes))
    calls = []
    original = protocol.evaluate_scene
    monkeypatch.setattr(protocol, "evaluate_scene", lambda *a, **k: calls.append(a[1].key) or original(*a, **k))
    second = run_evaluation(encoder, data, index, output, "bundled", SHAPE, lpips_net=None)
    assert done not in calls and len(calls) == 1
    assert second.scenes[done].psnr == first.scenes[done].psnr
    assert set(second.scenes) == {"alpha", "beta"}


def test_results_of_another_run_are_not_mixed_in(encoder, dataset, tmp_path):
    data, index = dataset
    output = tmp_path / "results.json"
    run_evaluation(encoder, data, index, output, "bundled", SHAPE, lpips_net=None, limit=1)
    with pytest.raises(PixelSplatInputError, match="belongs to another run"):
        run_evaluation(encoder, data, index, output, "other.ckpt", SHAPE, lpips_net=None)
    output.write_text("not json")
    with pytest.raises(PixelSplatInputError, match="not an evaluation record"):
        run_evaluation(encoder, data, index, output, "bundled", SHAPE, lpips_net=None)


def test_frames_beyond_the_scene_skip_it_with_the_reason(encoder, dataset, tmp_path):
    data, _ = dataset
    index = tmp_path / "short.json"
    index.write_text(json.dumps({"alpha": {"context": [0, 9], "target": [4]}}))
    with pytest.warns(UserWarning, match="alpha skipped"):
        results = run_evaluation(encoder, data, index, tmp_path / "r.json", "bundled", SHAPE, lpips_net=None)
    assert not results.scenes and "exceed" in results.skipped["alpha"]


@pytest.mark.parametrize(
    "content, message",
    [
        ("{", "not valid JSON"),
        ("[1, 2]", "must map scene keys"),
        ('{"s": {"context": [0, 1]}}', "'context' and 'target'"),
        ('{"s": {"context": [0], "target": [1]}}', ">= 2 context"),
        ('{"s": {"context": [0, -1], "target": [1]}}', "non-negative"),
    ],
)
def test_bad_index_files_are_named(tmp_path, content, message):
    path = tmp_path / "index.json"
    path.write_text(content)
    with pytest.raises(EvaluationIndexError, match=message):
        load_evaluation_index(path)


def test_official_index_files_load(tmp_path):
    index = load_evaluation_index(require(FIXTURES / "evaluation_index_re10k.json"))
    assert len(index) == 7194
    listed = [v for v in index.values() if v is not None]
    assert len(listed) == 7194 - 720 and all(isinstance(v, ViewChoice) and len(v.context) == 2 for v in listed)


def test_score_views_identical_images():
    image = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(0))
    noisy = (image + 0.1).clamp(0, 1)
    same, different = score_views(image, image, None), score_views(noisy, image, None)
    assert same.ssim == pytest.approx([1.0, 1.0], abs=1e-5) and all(s > 80 for s in same.psnr)
    assert all(d < s for d, s in zip(different.ssim, same.ssim, strict=True)) and all(p < 25 for p in different.psnr)


def test_cli_reports_a_missing_index_in_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "pixelsplat_ns.cli.main", "evaluate", "--data", str(tmp_path), "--index", str(tmp_path / "none.json")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert result.returncode == 2
    assert "evaluation index" in result.stdout and "Traceback" not in result.stdout + result.stderr


def test_scenes_missing_last_time_are_evaluated_once_they_appear(encoder, dataset, tmp_path):
    data, index = dataset
    output = tmp_path / "results.json"
    first = run_evaluation(encoder, data, index, output, "bundled", SHAPE, lpips_net=None)
    assert "delta" in first.skipped
    write_chunk(data / "test" / "000002.torch", [synthetic_item("delta", 4, seed=4)])
    second = run_evaluation(encoder, data, index, output, "bundled", SHAPE, lpips_net=None)
    assert "delta" in second.scenes and "delta" not in second.skipped
    assert len(second.scenes["delta"].psnr) == 1
