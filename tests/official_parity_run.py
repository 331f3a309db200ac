"""Run the official encoder (plain and prepared for inference) on the parity fixture and save
what the parity tests compare. Run as ``python -m tests.official_parity_run FIXTURE OUT`` by
``test_official_parity.py``, in a process whose environment selects MKL's reference code path
(``MKL_CBWR=COMPATIBLE``; MKL reads it once, when it starts, so it cannot be set in-process)."""

from __future__ import annotations

import sys

import torch

from pixelsplat_ns.encoder import PixelSplatEncoder, encoder_config
from pixelsplat_ns.encoder.inference import prepare_for_inference
from pixelsplat_ns.fixture_weights import fill_deterministic


def encode(encoder: PixelSplatEncoder, inputs: dict[str, torch.Tensor]) -> dict[str, object]:
    """The intermediates, depth pdf and Gaussians of one deterministic forward pass."""
    with torch.inference_mode():
        out = encoder(
            inputs["image"], inputs["extrinsics"], inputs["intrinsics"], inputs["near"], inputs["far"],
            deterministic=True, global_step=0, return_intermediates=True,
        )  # fmt: skip
    gaussians = {name: getattr(out.gaussians, name) for name in ("means", "covariances", "harmonics", "opacities")}
    return {"intermediates": dict(out.intermediates), "depth_pdf": out.depth_pdf, "gaussians": gaussians}


def main(fixture_path: str, out_path: str) -> None:
    inputs = torch.load(fixture_path, map_location="cpu", weights_only=False)["inputs"]
    network = fill_deterministic(PixelSplatEncoder(encoder_config("official"))).eval()
    runs = {"network": encode(network, inputs)}
    runs["inference"] = encode(prepare_for_inference(network), inputs)
    torch.save(runs, out_path)


if __name__ == "__main__":
    main(*sys.argv[1:])
