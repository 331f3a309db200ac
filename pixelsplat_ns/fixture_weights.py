"""The official parity fixtures' deterministic weights: every state-dict entry drawn from a
generator seeded by its key, so an architecture is filled without any checkpoint and the
fixtures (made the same way with the official code) can be reproduced exactly."""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping

import torch
from torch import Tensor

from .encoder import PixelSplatEncoder

__all__ = ["deterministic_tensor", "deterministic_weights", "fill_deterministic"]


def deterministic_tensor(key: str, shape: Iterable[int]) -> Tensor:
    """The recipe's value for one state-dict entry, seeded by crc32 of its key."""
    shape = tuple(int(s) for s in shape)
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator)
    if key.endswith("pos_embed") or key.endswith("cls_token"):
        return torch.randn(shape, generator=generator) * 0.02
    if len(shape) >= 2:
        return torch.randn(shape, generator=generator) * math.prod(shape[1:]) ** -0.5
    if key.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    return 0.1 * torch.randn(shape, generator=generator)


def deterministic_weights(keys_and_shapes: Mapping[str, Iterable[int]]) -> dict[str, Tensor]:
    """Recipe weights for every key (without the ``encoder.`` prefix), in sorted order.

    For ``k`` with ``g = Generator().manual_seed(crc32(k))``: ``num_batches_tracked`` ->
    zeros; ``running_var`` -> 0.5 + rand; ``pos_embed`` / ``cls_token`` -> 0.02 randn;
    other tensors with >= 2 dims -> randn / sqrt(prod(shape[1:])); other ``*weight`` ->
    1 + 0.1 randn; everything else -> 0.1 randn.
    """
    return {key: deterministic_tensor(key, keys_and_shapes[key]) for key in sorted(keys_and_shapes)}


def fill_deterministic(encoder: PixelSplatEncoder) -> PixelSplatEncoder:
    """Overwrite every state-dict entry of ``encoder`` with the recipe (in place, no copy
    of the model; placeholders of unused weights are skipped)."""
    unused = set(encoder.unused_state_keys())
    with torch.no_grad():
        for key, value in sorted(encoder.state_dict(keep_vars=True).items()):
            if key not in unused:
                value.copy_(deterministic_tensor(key, value.shape))
    return encoder
