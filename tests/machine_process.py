"""One training process of a multi-machine pixelsplat-pretrain run, started by
``tests/test_pretrain_multimachine.py`` as ``python -m tests.machine_process SPEC.json``.

It goes through nerfstudio's own distributed worker (``_distributed_worker``: the global
rank ``machine_rank * num_devices + local_rank``, the gloo process group, per-machine
groups) and its trainer (``train_loop``), exactly as ``ns-train`` runs each process. That
worker asserts CUDA, so CUDA's presence is faked for its assertions only: the device type
is ``cpu`` and nothing touches CUDA. Every example the process reads is recorded.
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

import torch


def main(spec_path: str) -> None:
    spec = json.loads(Path(spec_path).read_text())
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    real = torch.cuda.is_available, torch.cuda.device_count
    torch.cuda.is_available = lambda: True  # for the worker's assertions only: restored below
    torch.cuda.device_count = lambda: spec["num_devices"]

    from nerfstudio.scripts.train import _distributed_worker, train_loop

    import pixelsplat_ns.data.examples as examples
    from pixelsplat_ns.data import ExampleConfig
    from pixelsplat_ns.nerfstudio.methods import pixelsplat_pretrain_config

    read: list[tuple[int, str]] = []
    make_example = examples.make_example

    def recording(scene, config, step, rank=0, slot=0, stage="train"):
        example = make_example(scene, config, step, rank, slot, stage)
        if stage == "train":
            read.append((step, scene.key))
        return example

    examples.make_example = recording

    config = pixelsplat_pretrain_config()
    config.data = config.pipeline.datamanager.data = Path(spec["data"])
    config.output_dir = Path(spec["output_dir"])
    config.set_timestamp()
    config.timestamp = "run"
    config.vis = "tensorboard"
    config.max_num_iterations = spec["steps"]
    config.steps_per_save = 10**6
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**6
    config.machine.seed = 0
    config.machine.device_type = "cpu"
    config.machine.num_devices = spec["num_devices"]
    config.machine.num_machines = spec["num_machines"]
    config.machine.machine_rank = spec["machine_rank"]
    config.machine.dist_url = spec["dist_url"]
    config.pipeline.datamanager.num_workers = 0
    config.pipeline.datamanager.examples = ExampleConfig(
        image_shape=(32, 32), num_target_views=1, min_gap=1, max_gap=2, augment=False
    )
    config.pipeline.model.lpips_weight = 0.0

    def train(local_rank: int, world_size: int, config, global_rank: int) -> None:
        torch.cuda.is_available, torch.cuda.device_count = real
        train_loop(local_rank, world_size, config, global_rank)

    world_size = spec["num_machines"] * spec["num_devices"]
    _distributed_worker(
        spec["local_rank"], train, world_size, spec["num_devices"], spec["machine_rank"], spec["dist_url"],
        config, device_type="cpu",
    )  # fmt: skip
    Path(spec["record"]).write_text(json.dumps({"read": read}))


if __name__ == "__main__":
    main(sys.argv[1])
