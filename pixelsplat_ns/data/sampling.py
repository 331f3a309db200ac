"""Which frames of a scene make an example: the reference's bounded view sampler.

Two context views ``gap`` frames apart (plus optional extra context views between them)
and target views drawn between them. During training the gap is drawn from a range
``[gap_min(step), gap_max(step)]`` that moves linearly from its initial to its final
value over ``warmup_steps`` (the reference trains RE10K with a gap of 25 growing to 45
over 150k steps). Randomness comes from a generator seeded by (seed, step, rank, slot),
so the same step on the same rank with the same seed gives the same example.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Int64
from torch import Tensor

Stage = Literal["train", "test"]


class NotEnoughFrames(ValueError):
    """A scene is too short for the requested context gap."""


@dataclass
class ViewSamplerConfig:
    """How context and target views are picked from a scene's frame sequence."""

    num_context_views: int = 2
    """Context views per example: the two outer ones, plus extra ones between them."""
    num_target_views: int = 4
    """Target views per example, drawn between the outer context views."""
    min_gap: int = 2
    """Smallest distance (in frames) between the outer context views, after warm-up."""
    max_gap: int = 8
    """Largest distance (in frames) between the outer context views, after warm-up."""
    initial_min_gap: int | None = None
    """Smallest gap at step 0 (default: min_gap)."""
    initial_max_gap: int | None = None
    """Largest gap at step 0 (default: min_gap, so the gap grows from min_gap to max_gap)."""
    warmup_steps: int = 0
    """Steps over which the gap range moves linearly from its initial to its final value."""
    min_distance_to_context: int = 0
    """Targets are at least this many frames away from the outer context views."""
    cameras_are_circular: bool = False
    """Frames form a loop (the last is next to the first): pairs may wrap around."""

    def __post_init__(self) -> None:
        if self.num_context_views < 2 or self.num_target_views < 1:
            raise ValueError("need at least 2 context views and 1 target view")
        if not 1 <= self.min_gap <= self.max_gap:
            raise ValueError(f"need 1 <= min_gap <= max_gap, got {self.min_gap}, {self.max_gap}")


def _schedule(initial: int, final: int, step: int, warmup_steps: int) -> int:
    if warmup_steps <= 0 or step >= warmup_steps:
        return final
    fraction = max(step, 0) / warmup_steps
    return initial + int((final - initial) * fraction)


def gap_range(config: ViewSamplerConfig, step: int, stage: Stage = "train") -> tuple[int, int]:
    """(smallest, largest) context gap allowed at ``step`` (before clamping to a scene's length)."""
    if stage == "test":
        return config.max_gap, config.max_gap
    initial_min = config.min_gap if config.initial_min_gap is None else config.initial_min_gap
    initial_max = config.min_gap if config.initial_max_gap is None else config.initial_max_gap
    low = _schedule(initial_min, config.min_gap, step, config.warmup_steps)
    high = _schedule(initial_max, config.max_gap, step, config.warmup_steps)
    low = max(low, 2 * config.min_distance_to_context, config.num_context_views - 1)
    return low, max(low, high)


def example_generator(seed: int, step: int, rank: int = 0, slot: int = 0) -> torch.Generator:
    """A CPU generator seeded from (seed, step, rank, slot) by a stable hash."""
    digest = hashlib.blake2b(f"{seed}/{step}/{rank}/{slot}".encode(), digest_size=8).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest, "little") & (2**63 - 1))


def _randint(low: int, high: int, generator: torch.Generator, size: tuple[int, ...] = ()) -> Tensor:
    """Uniform integers in [low, high)."""
    return torch.randint(low, high, size, generator=generator)


def sample_views(
    num_frames: int,
    config: ViewSamplerConfig,
    step: int,
    generator: torch.Generator,
    stage: Stage = "train",
) -> tuple[Int64[Tensor, " context"], Int64[Tensor, " target"]]:
    """Frame indices of the context views (outer ones first and last) and the target views.

    ``train``: random gap in :func:`gap_range`, random position, random targets between
    the context views. ``test``: gap ``max_gap`` (clamped to the scene), starting at frame
    0, targets evenly spaced between the context views. Raises :class:`NotEnoughFrames`
    when the scene is shorter than the smallest allowed gap.
    """
    low, high = gap_range(config, step, stage)
    if stage == "test":  # the full gap, or as much of it as the scene has
        low = max(1, 2 * config.min_distance_to_context, config.num_context_views - 1)
    high = min(high, num_frames - 1)
    if high < low:
        raise NotEnoughFrames(
            f"{num_frames} frames, but the context gap must be at least {low} at step {step} (needs {low + 1} frames)"
        )
    gap = int(_randint(low, high + 1, generator)) if stage == "train" else high
    if stage == "train":
        left = int(_randint(0, num_frames if config.cameras_are_circular else num_frames - gap, generator))
    else:
        left = 0
    right = left + gap
    d = config.min_distance_to_context
    if stage == "train":
        targets = _randint(left + d, right + 1 - d, generator, (config.num_target_views,))
    else:
        targets = torch.linspace(left + d, right - d, config.num_target_views).round().to(torch.int64)
    extra: list[int] = []
    num_extra = config.num_context_views - 2
    if num_extra > 0:
        # Distinct extra context views strictly between the outer ones.
        between = torch.randperm(gap - 1, generator=generator)[:num_extra] + left + 1
        extra = sorted(between.tolist())
    context = torch.tensor((left, *extra, right), dtype=torch.int64)
    if config.cameras_are_circular:
        context, targets = context % num_frames, targets % num_frames
    return context, targets.to(torch.int64)
