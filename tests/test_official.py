"""Loading official (Lightning) and project checkpoints; ``predict``; clear errors."""

from __future__ import annotations

import json
import re
import sys
import types

import pytest
import torch

from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config
from pixelsplat_ns.official import CheckpointError, load_checkpoint, predict, save_checkpoint
from tests.conftest import FIXTURES, require
from tests.test_encoder import make_scene


@pytest.fixture(scope="module")
def tiny() -> PixelSplatEncoder:
    torch.manual_seed(3)
    return PixelSplatEncoder(encoder_config("tiny")).eval()


@pytest.fixture(scope="module")
def scene() -> dict[str, torch.Tensor]:
    return make_scene(size=(32, 32))


def lightning_checkpoint(encoder: PixelSplatEncoder, **extra) -> dict:
    """What PyTorch Lightning writes: the wrapper's state dict (encoder under ``encoder.``,
    plus other networks) and training state."""
    state = {f"encoder.{k}": v.clone() for k, v in encoder.state_dict().items()}
    state["losses.0.lpips.net.slice1.0.weight"] = torch.randn(8, 3, 3, 3)
    return {
        "epoch": 12,
        "global_step": 300_000,
        "pytorch-lightning_version": "2.1.2",
        "state_dict": state,
        "loops": {"fit_loop": {"state_dict": {}}},
        "optimizer_states": [{"state": {}, "param_groups": [{"lr": 1.5e-4}]}],
        "lr_schedulers": [],
        **extra,
    }


def same_outputs(a: PixelSplatEncoder, b: PixelSplatEncoder, scene) -> None:
    torch.testing.assert_close(predict(a, **renamed(scene)), predict(b, **renamed(scene)), rtol=0, atol=0)


def renamed(scene):
    return {"image": scene["images"], **{k: v for k, v in scene.items() if k != "images"}}


def test_project_checkpoint_round_trip(tmp_path, tiny, scene):
    path = save_checkpoint(tiny, tmp_path / "tiny.ckpt", step=7)
    loaded = load_checkpoint(path)
    assert not loaded.training
    assert loaded.cfg == tiny.cfg
    same_outputs(loaded, tiny, scene)


def test_lightning_checkpoint(tmp_path, tiny, scene):
    path = tmp_path / "lightning.ckpt"
    torch.save(lightning_checkpoint(tiny), path)
    loaded = load_checkpoint(path)
    assert not loaded.training and loaded.cfg == tiny.cfg
    same_outputs(loaded, tiny, scene)


def test_lightning_checkpoint_with_unimportable_training_state(tmp_path, tiny, scene):
    """Callback states pickled from classes this environment cannot import are skipped."""
    module = types.ModuleType("some_training_framework")

    class CallbackState:
        def __init__(self):
            self.best = 0.5

    CallbackState.__module__ = module.__name__
    CallbackState.__qualname__ = "CallbackState"
    module.CallbackState = CallbackState
    sys.modules[module.__name__] = module
    path = tmp_path / "lightning_extra.ckpt"
    try:
        torch.save(lightning_checkpoint(tiny, callbacks={"ModelCheckpoint": CallbackState()}), path)
    finally:
        del sys.modules[module.__name__]
    loaded = load_checkpoint(path)
    same_outputs(loaded, tiny, scene)


def test_bare_official_state_dict(tmp_path, tiny, scene):
    path = tmp_path / "bare.pt"
    torch.save(lightning_checkpoint(tiny)["state_dict"], path)
    same_outputs(load_checkpoint(path), tiny, scene)


def test_three_view_checkpoint(tmp_path):
    torch.manual_seed(0)
    cfg = encoder_config("tiny")
    cfg.num_views = 3
    three = PixelSplatEncoder(cfg).eval()
    path = tmp_path / "three.ckpt"
    torch.save(lightning_checkpoint(three), path)
    loaded = load_checkpoint(path)
    assert loaded.cfg.num_views == 3
    scene = make_scene(views=3, size=(32, 32))
    out = predict(loaded, **renamed(scene))
    assert out["means"].shape == (1, 3 * 32 * 32, 3)


def zero_stride(shape) -> torch.Tensor:
    """A tensor of any shape backed by one float (keeps fake official checkpoints tiny)."""
    return torch.full((1,), 0.01).as_strided(tuple(shape), (0,) * len(shape))


@pytest.mark.parametrize("views", [2, 3])
def test_official_architecture_detected(tmp_path, views):
    keys = json.loads(require(FIXTURES / "checkpoint_keys.json").read_text())
    state = {k: zero_stride(v) for k, v in keys.items()}
    if views == 3:
        state["encoder.epipolar_transformer.view_embeddings.weight"] = zero_stride([3, 128])
    path = tmp_path / "official.ckpt"
    torch.save({"state_dict": state, "epoch": 0}, path)
    assert path.stat().st_size < 1_000_000
    encoder = load_checkpoint(path)
    assert encoder.cfg.backbone.model == "dino_vitb8" and encoder.cfg.num_views == views
    assert encoder.image_multiple == 16
    assert encoder.high_resolution_skip[0].weight.flatten()[0].item() == pytest.approx(0.01)


def test_predict_outputs(tiny, scene):
    out = predict(tiny, **renamed(scene))
    assert set(out) == {"means", "covariances", "harmonics", "opacities"}
    n = 2 * 32 * 32
    assert out["means"].shape == (1, n, 3)
    assert out["covariances"].shape == (1, n, 3, 3)
    assert out["harmonics"].shape == (1, n, 3, 9)
    assert out["opacities"].shape == (1, n)
    with torch.no_grad():
        direct = tiny(**scene, deterministic=True).gaussians
    torch.testing.assert_close(out["means"], direct.means)


# ------------------------------------------------------------------------------ errors


def test_corrupt_file(tmp_path):
    path = tmp_path / "corrupt.ckpt"
    path.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(path)
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(text)


def test_truncated_checkpoint(tmp_path, tiny):
    path = save_checkpoint(tiny, tmp_path / "full.ckpt")
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_checkpoint(truncated)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nothing.ckpt")


@pytest.mark.parametrize(
    "payload, message",
    [
        ([1, 2, 3], "holds a list"),
        ({"weights": torch.zeros(3)}, "neither an official pixelSplat checkpoint"),
        ({"state_dict": {"model.layer.weight": torch.zeros(3)}}, "neither an official pixelSplat checkpoint"),
        ({"state_dict": {"encoder.foo.weight": torch.zeros(3)}}, "match no known architecture"),
    ],
)
def test_not_an_encoder_checkpoint(tmp_path, payload, message):
    path = tmp_path / "other.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_wrong_shape_names_the_key(tmp_path, tiny):
    checkpoint = lightning_checkpoint(tiny)
    key = "encoder.depth_predictor.projection.1.weight"
    checkpoint["state_dict"][key] = torch.zeros(10, 64)
    path = tmp_path / "wrong_shape.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=re.escape("shape mismatch for 'depth_predictor.projection.1.weight'")):
        load_checkpoint(path)


def test_missing_key_names_the_key(tmp_path, tiny):
    checkpoint = lightning_checkpoint(tiny)
    del checkpoint["state_dict"]["encoder.to_gaussians.1.bias"]
    path = tmp_path / "missing.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(CheckpointError, match=re.escape("'to_gaussians.1.bias'")):
        load_checkpoint(path)


def test_project_checkpoint_wrong_shape_and_bad_config(tmp_path, tiny):
    path = save_checkpoint(tiny, tmp_path / "tiny.ckpt")
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["to_gaussians.1.bias"] = torch.zeros(3)
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=re.escape("shape mismatch for 'to_gaussians.1.bias'")):
        load_checkpoint(path)
    payload["config"]["d_features"] = 12
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="invalid encoder configuration"):
        load_checkpoint(path)
