"""The encoder's learning-rate schedule: nerfstudio's cosine decay, read as the reference schedules."""

from __future__ import annotations

import math

import pytest
import torch

from pixelsplat_ns.errors import PixelSplatInputError
from pixelsplat_ns.nerfstudio.schedulers import PlainFloatCosineDecaySchedulerConfig


def reference_multiplier(step: int, warm_up: int, max_steps: int, final: float) -> float:
    """Linear warm-up whose first step already trains, then cosine to ``final``, then constant."""
    if step < warm_up:
        return (step + 1) / warm_up
    t = min(1.0, (step - warm_up) / (max_steps - warm_up))
    return final + (1 - final) * 0.5 * (1 + math.cos(math.pi * t))


def multipliers(config: PlainFloatCosineDecaySchedulerConfig, steps: int) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = config.setup().get_scheduler(optimizer, lr_init=1.0)
    values = []
    for _ in range(steps):
        values.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return values


def test_warm_up_cosine_and_hold_match_the_reference_with_plain_floats():
    config = PlainFloatCosineDecaySchedulerConfig(warm_up_end=10, learning_rate_alpha=0.01, max_steps=50)
    values = multipliers(config, 120)
    assert all(type(v) is float for v in values)  # no numpy floats: checkpoints load with weights_only
    expected = [reference_multiplier(step, 10, 50, 0.01) for step in range(120)]
    assert values == pytest.approx(expected, abs=1e-12)
    assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
    assert values[50:] == pytest.approx([0.01] * 70)  # held after max_steps, not rising again


def test_a_warm_up_as_long_as_the_run_is_refused():
    config = PlainFloatCosineDecaySchedulerConfig(warm_up_end=50, max_steps=50)
    with pytest.raises(PixelSplatInputError, match="warm-up-end < max-steps"):
        multipliers(config, 1)
