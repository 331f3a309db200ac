"""pixelsplat-pretrain: the encoder learns through the rasteriser, and its checkpoints load
into ns-train pixelsplat."""

from __future__ import annotations

import pytest
import torch

from pixelsplat_ns.data import ExampleConfig
from pixelsplat_ns.nerfstudio.methods import pixelsplat_pretrain_config
from pixelsplat_ns.official import load_checkpoint
from tests.scenes import cut_scene


def build_pipeline(root):
    scene = cut_scene("pavilion-chair-midday", root / "scenes" / "pavilion", train=range(30, 38))
    config = pixelsplat_pretrain_config()
    config.pipeline.datamanager.data = root / "scenes"
    config.pipeline.datamanager.examples = ExampleConfig(
        image_shape=(64, 64), num_target_views=2, min_gap=3, max_gap=3, augment=False
    )
    assert scene.exists()
    return config.pipeline.setup(device="cpu", test_mode="val")


def test_training_steps_lower_the_loss_and_checkpoints_round_trip(tmp_path):
    torch.manual_seed(0)
    pipeline = build_pipeline(tmp_path)
    model = pipeline.model
    model.train()
    batch, _ = pipeline.datamanager.next_train(0)
    assert batch["context"]["image"].shape == (1, 2, 3, 64, 64)
    optimizer = torch.optim.Adam(model.get_param_groups()["encoder"], lr=1e-3)
    losses = []
    for step in range(12):
        model.step = step
        optimizer.zero_grad()
        loss = sum(model.get_loss_dict(model(batch), batch).values())
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert min(losses[-3:]) < 0.8 * losses[0], losses

    # The project checkpoint written during training loads back with its architecture
    # and gives the same deterministic Gaussians.
    model.checkpoint_dir = tmp_path / "models"
    path = model.save_encoder(12)
    assert path is not None and path.is_file()
    restored = load_checkpoint(path)
    model.eval()
    c = batch["context"]
    inputs = (c["image"], c["extrinsics"], c["intrinsics"], c["near"], c["far"])
    with torch.no_grad():
        expected = model.encoder(*inputs, deterministic=True).gaussians
        actual = restored(*inputs, deterministic=True).gaussians
    torch.testing.assert_close(actual.means, expected.means)
    torch.testing.assert_close(actual.opacities, expected.opacities)


def test_checkpoints_record_the_near_rule_and_scale_that_inference_then_uses(tmp_path):
    """An encoder trained with another near rule and example size is fed the same way at
    inference: ns-train pixelsplat reads both from its checkpoint."""
    from pixelsplat_ns.weights import input_long_side

    scene = cut_scene("pavilion-chair-midday", tmp_path / "scenes" / "pavilion", train=range(30, 38))
    config = pixelsplat_pretrain_config()
    config.pipeline.datamanager.data = tmp_path / "scenes"
    config.pipeline.datamanager.examples = ExampleConfig(image_shape=(48, 64), near_disparity=2.0, min_gap=3, max_gap=3)
    model = config.pipeline.setup(device="cpu", test_mode="val").model
    model.checkpoint_dir = tmp_path / "models"
    restored = load_checkpoint(model.save_encoder(0))
    assert restored.cfg.near_disparity == 2.0 and tuple(restored.cfg.train_image_shape) == (48, 64)
    assert input_long_side(restored, (180, 320), "tiny", None) == round(48 * 320 / 180)

    from pixelsplat_ns.nerfstudio.methods import pixelsplat_trainer_config

    run = pixelsplat_trainer_config()
    run.pipeline.datamanager.data = scene
    run.pipeline.datamanager.context_views = ("frame_00030_train", "frame_00034_train")
    run.pipeline.model.encoder_checkpoint = model.checkpoint_dir / "encoder-step-000000000.ckpt"
    views = run.pipeline.setup(device="cpu", test_mode="test").model.run_encoder().views
    assert views.image.shape[-2:] == (48, 80)  # 48 x 85 cropped to the encoder's patch multiple
    from pixelsplat_ns.cameras import official_near_far

    rule = {d: official_near_far(views.extrinsics, views.intrinsics, (48, 80), d)[0] for d in (2.0, 3.0)}
    torch.testing.assert_close(views.near, rule[2.0])  # the checkpoint's rule, not the official 3.0
    assert float(rule[2.0][0, 0]) == pytest.approx(1.5 * float(rule[3.0][0, 0]))
