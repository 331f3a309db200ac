"""``benchmarks/gpu_check.py`` without a GPU: one line and exit 0; and its dry run (both sides
on the CPU, small inputs) goes through every part of the script to its verdict."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
NO_CUDA = "gpu_check: no CUDA device here (torch.cuda.is_available() is False): nothing to check"


def run(*args: str, hide_cuda: bool = False, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    if hide_cuda:  # the no-CUDA path, even on a machine that has one
        env["CUDA_VISIBLE_DEVICES"] = ""
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_without_cuda_it_prints_one_line_and_exits_0():
    result = run(hide_cuda=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == NO_CUDA + "\n"


def test_dry_run_exercises_every_part():
    # 64x64 context pair (the official encoder's multiple is 16) and a small scene: ~30 s on 2 cores.
    result = run("--device", "cpu", "--size", "64", "--warmup", "1", "--runs", "1", "--gaussians", "2000")
    output = result.stdout
    assert result.returncode == 0, output[-3000:] + result.stderr[-3000:]
    for part in ("[encoder parity: CPU (dry run) vs CPU]", "[encoder speed]", "[rasteriser: CPU (dry run) vs CPU]"):
        assert part in output, output
    assert "top depth bucket differs at 0 of 8,192 Gaussians" in output  # 2 views x 64 x 64, same code both sides
    assert "the paper reports 0.104 s on an A100" in output
    assert output.rstrip().endswith("gpu_check: all 10 figures within tolerance"), output[-2000:]
    assert "ABOVE TOLERANCE" not in output and "FAILED" not in output


def test_a_bad_checkpoint_is_named_without_a_traceback(tmp_path: Path):
    checkpoint = tmp_path / "re10k.ckpt"
    checkpoint.write_bytes(b"not a checkpoint")
    result = run("--device", "cpu", "--checkpoint", str(checkpoint), "--parts", "parity")
    assert result.returncode == 2
    assert str(checkpoint) in result.stdout and "Traceback" not in result.stdout + result.stderr
