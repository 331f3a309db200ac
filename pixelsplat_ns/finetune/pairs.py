"""A per-scene start from many context pairs: the encoder's Gaussians of every pair, in one frame.

pixelSplat predicts from a pair of views, so one pair covers only what those two cameras see.
For fine-tuning on a whole capture, predicting from every consecutive pair of training views
and keeping all the Gaussians covers the scene (benchmarks/finetune.py measures the gain).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from pixelsplat_ns.data import ExampleConfig, example_from_indices
from pixelsplat_ns.data.scenes import Scene
from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.finetune.splats import Splats, splats_from_gaussians


def merge_splats(parts: Sequence[Splats]) -> Splats:
    """All Gaussians of ``parts`` (same SH degree) in one set."""
    if not parts:
        raise PixelSplatInputError("no Gaussians to merge")
    degrees = {part.sh_degree for part in parts}
    if len(degrees) > 1:
        raise PixelSplatInputError(f"cannot merge Gaussians of different SH degrees {sorted(degrees)}")
    names = parts[0].tensors().keys()
    return Splats(**{name: torch.cat([part.tensors()[name] for part in parts]) for name in names})


def scale_splats(splats: Splats, factor: float) -> Splats:
    """The same Gaussians in a world scaled by ``factor`` (about the origin)."""
    if not (factor > 0 and math.isfinite(factor)):
        raise PixelSplatInputError(f"scale factor must be positive and finite, got {factor}")
    return Splats(
        means=splats.means * factor,
        log_scales=splats.log_scales + math.log(factor),
        quats=splats.quats,
        sh=splats.sh,
        logit_opacities=splats.logit_opacities,
    )


@torch.no_grad()
def splats_from_pairs(
    encoder: torch.nn.Module,
    scene: Scene,
    pairs: Sequence[tuple[int, int]],
    frame_of: tuple[int, int],
    config: ExampleConfig,
) -> Splats:
    """The encoder's deterministic Gaussians for every pair of frames in ``pairs``, merged,
    in the world of the example whose context is ``frame_of``. (Each example is scaled so
    its own context baseline is 1; the predictions are brought to ``frame_of``'s scale.)"""
    if not pairs:
        raise PixelSplatInputError("splats_from_pairs needs at least one pair of frames")
    target = torch.tensor([frame_of[0]])
    reference = example_from_indices(scene, torch.tensor(frame_of), target, config)["scale"]
    parts = []
    for pair in pairs:
        example = example_from_indices(scene, torch.tensor(pair), target, config)
        c = example["context"]
        inputs = [c[name][None] for name in ("image", "extrinsics", "intrinsics", "near", "far")]
        gaussians = encoder(*inputs, deterministic=True).gaussians
        parts.append(scale_splats(splats_from_gaussians(gaussians), reference / example["scale"]))
    return merge_splats(parts)
