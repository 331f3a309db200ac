"""DDP sharding: two torch.distributed (gloo, CPU) ranks with two dataloader workers each
read disjoint shares of the scenes that together are complete, by chunk and by scene."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pixelsplat_ns.data import ChunkSource, ExampleConfig, ExampleDataset
from tests.test_data_chunks import synthetic_item, write_chunk

WORLD = 2
CONFIG = ExampleConfig(image_shape=(16, 16), min_gap=1, max_gap=2, num_target_views=1)


def _rank_main(rank: int, init_file: str, roots: dict[str, str], output: str) -> None:
    warnings.simplefilter("ignore")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        results = {}
        for name, root in roots.items():
            source = ChunkSource(Path(root))
            # One test pass through a DataLoader with two workers: rank and worker shares.
            loader = torch.utils.data.DataLoader(
                ExampleDataset(source, CONFIG, stage="test"), batch_size=None, num_workers=2
            )
            tested = [example["scene"] for example in loader]
            # Training epochs (shuffled anew each epoch), as this rank's main process reads them.
            train = ExampleDataset(source, CONFIG, stage="train")
            assert train.rank_world() == (rank, WORLD)
            epochs = [[scene.key for scene in train.assigned_scenes(epoch)] for epoch in range(3)]
            gathered: list = [None] * WORLD
            dist.all_gather_object(gathered, {"test": tested, "train": epochs})
            results[name] = gathered
        if rank == 0:
            Path(output).write_text(json.dumps(results))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_and_workers_read_disjoint_complete_shares(tmp_path):
    expected: dict[str, set[str]] = {}
    # Five chunks for four readers: shards are split chunk by chunk.
    many = tmp_path / "many" / "train"
    keys = []
    for c in range(5):
        items = [synthetic_item(f"c{c}s{s}", 4, seed=10 * c + s) for s in range(2 + c % 2)]
        keys += [item["key"] for item in items]
        if c == 2:
            items.append(synthetic_item("too-short", 1))  # skipped by every reader
        write_chunk(many / f"{c:06d}.torch", items)
    expected["many"] = set(keys)
    # One chunk for four readers: every reader walks it and keeps every fourth scene.
    few = tmp_path / "few" / "train"
    items = [synthetic_item(f"s{s}", 4, seed=s) for s in range(7)]
    write_chunk(few / "000000.torch", items)
    expected["few"] = {item["key"] for item in items}

    output = tmp_path / "results.json"
    roots = {"many": str(many), "few": str(few)}
    mp.spawn(_rank_main, args=(str(tmp_path / "init"), roots, str(output)), nprocs=WORLD, join=True)

    results = json.loads(output.read_text())
    for name, per_rank in results.items():
        tested = [ranked["test"] for ranked in per_rank]
        assert all(tested), f"{name}: a rank got no scenes"
        assert set(tested[0]).isdisjoint(tested[1]), name
        assert sorted(tested[0] + tested[1]) == sorted(expected[name]), name
        for epoch in range(3):
            shares = [ranked["train"][epoch] for ranked in per_rank]
            assert set(shares[0]).isdisjoint(shares[1]), (name, epoch)
            assert sorted(shares[0] + shares[1]) == sorted(expected[name]), (name, epoch)
        # Shares are reshuffled between epochs.
        assert any(per_rank[0]["train"][e] != per_rank[0]["train"][0] for e in (1, 2)), name
