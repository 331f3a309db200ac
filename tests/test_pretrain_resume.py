"""A pretraining run resumed from its checkpoint (ns-train ... --load-dir) ends with exactly the
weights of the same run done in one go: data, depth sampling, optimiser and schedule resume."""

from __future__ import annotations

from pathlib import Path

import torch

from pixelsplat_ns.data import ExampleConfig
from pixelsplat_ns.nerfstudio.methods import pixelsplat_pretrain_config
from tests.scenes import cut_scene


def _train(data: Path, output: Path, steps: int, load_dir: Path | None = None) -> Path:
    from nerfstudio.scripts.train import main as train_main

    config = pixelsplat_pretrain_config()
    config.pipeline.datamanager.data = data
    config.pipeline.datamanager.num_workers = 0
    config.pipeline.datamanager.examples = ExampleConfig(
        image_shape=(32, 32), num_target_views=1, min_gap=2, max_gap=3
    )  # mirroring augmentation on: it must resume too
    config.pipeline.model.encoder = "tiny"
    config.pipeline.model.gaussians_per_pixel = 2  # sampled depths: their randomness must resume
    config.pipeline.model.encoder_checkpoint_every = 1
    config.optimizers["encoder"]["scheduler"].warm_up_end = 2
    config.optimizers["encoder"]["scheduler"].max_steps = 4
    config.output_dir, config.experiment_name, config.timestamp = output, "e", "t"
    config.max_num_iterations = steps
    config.steps_per_save = 2
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**6
    config.vis = "tensorboard"
    config.machine.seed = 0
    config.load_dir = load_dir
    train_main(config)
    return config.get_base_dir()


def test_resumed_pretraining_matches_an_uninterrupted_run(tmp_path: Path):
    data = tmp_path / "scenes"
    cut_scene("pavilion-chair-midday", data / "pavilion", train=range(30, 38))
    straight = _train(data, tmp_path / "straight", 4)  # steps 0-3
    first = _train(data, tmp_path / "resumed", 2)  # steps 0-1 ...
    resumed = _train(data, tmp_path / "resumed", 2, load_dir=first / "nerfstudio_models")  # ... then 2-3

    def weights(run: Path, step: int) -> dict:
        return torch.load(run / "encoders" / f"encoder-step-{step:09d}.ckpt", weights_only=False)["state_dict"]

    expected, actual = weights(straight, 3), weights(resumed, 3)
    assert expected.keys() == actual.keys()
    for key in expected:
        assert torch.equal(expected[key], actual[key]), key
    # and training did change the weights between the checkpoints compared
    assert any(not torch.equal(expected[k], weights(straight, 1)[k]) for k in expected)
