"""pixelsplat-pretrain on two machines: two single-process "machines" on localhost (gloo over
``tcp://127.0.0.1``, ``--machine.num-machines 2``, ``--machine.machine-rank 0/1``) read disjoint
shares of the scenes that together are all of them, and train to the same weights as the
same run with two processes on one machine (``--machine.num-devices 2``).

Each process runs nerfstudio's own distributed worker and trainer (``tests/machine_process.py``).
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

from pixelsplat_ns.official import load_checkpoint
from tests.test_data_chunks import synthetic_item, write_chunk

ROOT = Path(__file__).resolve().parents[1]
STEPS = 2
SCENES = 4


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _run(tmp_path: Path, name: str, data: Path, num_machines: int, num_devices: int) -> list[dict]:
    """Start every process of one run (machines x devices) and wait for all of them."""
    url = f"tcp://127.0.0.1:{_free_port()}"
    processes, records = [], []
    for machine in range(num_machines):
        for local in range(num_devices):
            tag = f"{name}-m{machine}-l{local}"
            spec = {
                "data": str(data), "output_dir": str(tmp_path / tag), "steps": STEPS, "dist_url": url,
                "num_machines": num_machines, "num_devices": num_devices, "machine_rank": machine,
                "local_rank": local, "record": str(tmp_path / f"{tag}.json"),
            }  # fmt: skip
            (tmp_path / f"{tag}.spec.json").write_text(json.dumps(spec))
            env = {**os.environ, "PYTHONPATH": str(ROOT)}
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tests.machine_process", str(tmp_path / f"{tag}.spec.json")],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
            records.append(spec)
    for process in processes:
        _, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, stderr[-3000:]
    results = []
    for spec in records:
        read = json.loads(Path(spec["record"]).read_text())["read"]
        checkpoint = sorted(Path(spec["output_dir"]).glob("*/pixelsplat-pretrain/run/encoders/encoder-step-*.ckpt"))[-1]
        results.append({"scenes": [key for _, key in read], "weights": load_checkpoint(checkpoint).state_dict()})
    return results


def test_two_machines_shard_by_global_rank_and_match_one_machine(tmp_path):
    data = tmp_path / "chunks" / "train"
    for c in range(SCENES):  # one scene per chunk: each of the two ranks reads two chunks per epoch
        write_chunk(data / f"{c:06d}.torch", [synthetic_item(f"scene{c}", 5, seed=c)])

    machines = _run(tmp_path, "two-machines", data, num_machines=2, num_devices=1)
    first, second = (set(m["scenes"]) for m in machines)
    assert len(machines[0]["scenes"]) == len(machines[1]["scenes"]) == STEPS
    assert not first & second, f"both machines read {sorted(first & second)}"
    assert first | second == {f"scene{c}" for c in range(SCENES)}

    devices = _run(tmp_path, "one-machine", data, num_machines=1, num_devices=2)
    # Global rank r reads the same examples whichever machine it runs on ...
    assert [m["scenes"] for m in machines] == [d["scenes"] for d in devices]
    # ... and the runs end with the same weights (DDP keeps every process's copy identical).
    for run in (machines, devices):
        for name, value in run[0]["weights"].items():
            assert torch.equal(value, run[1]["weights"][name]), name
    for name, value in machines[0]["weights"].items():
        assert torch.equal(value, devices[0]["weights"][name]), name
