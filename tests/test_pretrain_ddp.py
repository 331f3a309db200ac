"""pixelsplat-pretrain under torch DDP: two gloo ranks on CPU run the real PretrainPipeline
(the model wrapped in DistributedDataParallel, as nerfstudio's launcher does with
``--machine.num-devices``), each on its own share of the scenes, and stay in sync.

nerfstudio's launcher itself asserts CUDA, so the ranks are spawned here the same way it
spawns them (one process per device, ``init_process_group`` then the pipeline)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pixelsplat_ns.data import ExampleConfig
from pixelsplat_ns.nerfstudio.methods import pixelsplat_pretrain_config
from tests.test_data_chunks import synthetic_item, write_chunk

WORLD = 2
STEPS = 3


def _rank_main(rank: int, init_file: str, data: str, output: str) -> None:
    warnings.simplefilter("ignore")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        torch.manual_seed(0)  # the same initial weights on every rank, as DDP expects
        config = pixelsplat_pretrain_config()
        config.pipeline.datamanager.data = Path(data)
        config.pipeline.datamanager.num_workers = 0
        config.pipeline.datamanager.examples = ExampleConfig(
            image_shape=(32, 32), num_target_views=1, min_gap=1, max_gap=2, augment=False
        )
        pipeline = config.pipeline.setup(device="cpu", test_mode="val", world_size=WORLD, local_rank=rank)
        assert isinstance(pipeline._model, torch.nn.parallel.DistributedDataParallel)
        pipeline.train()
        optimizer = torch.optim.Adam(pipeline.model.get_param_groups()["encoder"], lr=1e-3)
        losses = []
        for step in range(STEPS):
            optimizer.zero_grad()
            _, loss_dict, _ = pipeline.get_train_loss_dict(step)
            loss = sum(loss_dict.values())
            loss.backward()  # DDP averages the gradients across ranks here
            optimizer.step()
            losses.append(float(loss))
        checksum = [float(p.detach().double().sum()) for p in pipeline.model.parameters()]
        gathered: list = [None] * WORLD
        dist.all_gather_object(gathered, {"checksum": checksum, "losses": losses})
        if rank == 0:
            Path(output).write_text(json.dumps(gathered))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_two_ranks_train_in_sync_on_different_examples(tmp_path):
    split = tmp_path / "chunks" / "train"
    write_chunk(split / "000000.torch", [synthetic_item(f"a{s}", 5, seed=s) for s in range(2)])
    write_chunk(split / "000001.torch", [synthetic_item(f"b{s}", 5, seed=10 + s) for s in range(2)])
    output = tmp_path / "ranks.json"
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), str(split), str(output)), nprocs=WORLD, join=True)

    ranks = json.loads(output.read_text())
    # Different shares of the data: the ranks see different losses ...
    assert ranks[0]["losses"] != ranks[1]["losses"]
    # ... but DDP keeps their weights identical after every optimiser step.
    assert ranks[0]["checksum"] == ranks[1]["checksum"]
    assert all(torch.isfinite(torch.tensor(r["losses"])).all() for r in ranks)
