"""The official parity fixtures' deterministic weights: every state-dict entry drawn from a
generator seeded by its key, so an architecture is filled without any checkpoint and the
fixtures (made the same way with the official code) can be reproduced exactly.

The pixelSplat fixtures and Du et al.'s wide-baseline fixtures use the same recipe except
for which names count as embeddings (``embed_rule``): pixelSplat's *end* with ``pos_embed``
or ``cls_token``; Du's *contain* either (so ``pos_embed_second`` is one, ``pose_embed`` not).
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn

from .encoder import PixelSplatEncoder

__all__ = [
    "EmbedRule",
    "deterministic_tensor",
    "deterministic_weights",
    "fill_deterministic",
    "fill_deterministic_widebaseline",
]

EmbedRule = Literal["endswith", "contains"]
"""How a key is recognised as a ``pos_embed`` / ``cls_token`` entry: pixelSplat's fixtures
match the end of the key, Du et al.'s anywhere in it."""

EMBED_NAMES = ("pos_embed", "cls_token")


def _is_embedding(key: str, rule: EmbedRule) -> bool:
    if rule == "endswith":
        return key.endswith(EMBED_NAMES)
    if rule == "contains":
        return any(name in key for name in EMBED_NAMES)
    raise ValueError(f"unknown embed_rule {rule!r}: choose 'endswith' or 'contains'")


def deterministic_tensor(key: str, shape: Iterable[int], embed_rule: EmbedRule = "endswith") -> Tensor:
    """The recipe's value for one state-dict entry, seeded by crc32 of its key."""
    shape = tuple(int(s) for s in shape)
    generator = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    if key.endswith("num_batches_tracked"):
        return torch.zeros(shape, dtype=torch.int64)
    if key.endswith("running_var"):
        return 0.5 + torch.rand(shape, generator=generator)
    if _is_embedding(key, embed_rule):
        return torch.randn(shape, generator=generator) * 0.02
    if len(shape) >= 2:
        return torch.randn(shape, generator=generator) * math.prod(shape[1:]) ** -0.5
    if key.endswith("weight"):
        return 1 + 0.1 * torch.randn(shape, generator=generator)
    return 0.1 * torch.randn(shape, generator=generator)


def deterministic_weights(
    keys_and_shapes: Mapping[str, Iterable[int]], embed_rule: EmbedRule = "endswith"
) -> dict[str, Tensor]:
    """Recipe weights for every key (as the checkpoint spells it: pixelSplat's without the
    ``encoder.`` prefix, Du's as they are), in sorted order.

    For ``k`` with ``g = Generator().manual_seed(crc32(k))``: ``num_batches_tracked`` ->
    zeros; ``running_var`` -> 0.5 + rand; ``pos_embed`` / ``cls_token`` (see ``embed_rule``)
    -> 0.02 randn; other tensors with >= 2 dims -> randn / sqrt(prod(shape[1:])); other
    ``*weight`` -> 1 + 0.1 randn; everything else -> 0.1 randn.
    """
    return {key: deterministic_tensor(key, keys_and_shapes[key], embed_rule) for key in sorted(keys_and_shapes)}


def fill_deterministic(encoder: PixelSplatEncoder) -> PixelSplatEncoder:
    """Overwrite every state-dict entry of ``encoder`` with the recipe (in place, no copy
    of the model; placeholders of unused weights are skipped)."""
    unused = set(encoder.unused_state_keys())
    with torch.no_grad():
        for key, value in sorted(encoder.state_dict(keep_vars=True).items()):
            if key not in unused:
                value.copy_(deterministic_tensor(key, value.shape))
    return encoder


def fill_deterministic_widebaseline(module: nn.Module) -> nn.Module:
    """Overwrite every state-dict entry of a wide-baseline module with Du et al.'s recipe (in place).

    ``module``'s keys must be the official ones, unprefixed: a ``WideBaselineImageEncoder``
    (``encoder.*``, ``conv_map.*``) or the whole renderer network holding those at top level.
    """
    with torch.no_grad():
        for key, value in sorted(module.state_dict(keep_vars=True).items()):
            value.copy_(deterministic_tensor(key, value.shape, embed_rule="contains"))
    return module
