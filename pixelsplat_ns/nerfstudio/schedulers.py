"""nerfstudio's learning-rate schedules, with state that reloads under ``torch.load(weights_only=True)``.

nerfstudio's ExponentialDecayScheduler and CosineDecayScheduler compute their multipliers
with numpy, so numpy floats end up in the optimiser's ``lr`` and the scheduler's
``_last_lr``; checkpoints that hold them are refused by ``torch.load``'s default since torch
2.6, which breaks ns-viewer / ns-render / ns-eval / ns-export. These keep nerfstudio's
schedules and return Python floats.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from nerfstudio.engine.schedulers import (
    CosineDecayScheduler,
    CosineDecaySchedulerConfig,
    ExponentialDecayScheduler,
    ExponentialDecaySchedulerConfig,
)
from torch.optim import Optimizer, lr_scheduler

from pixelsplat_ns.errors import PixelSplatInputError


def _with_plain_floats(
    numpy_scheduler: lr_scheduler.LambdaLR, optimizer: Optimizer, at: Callable[[int], int] = lambda step: step
) -> lr_scheduler.LambdaLR:
    """The schedule of ``numpy_scheduler`` read at step ``at(step)``, multipliers cast to Python floats."""
    numpy_schedule = numpy_scheduler.lr_lambdas[0]
    # LambdaLR's constructor already stepped once with the numpy multiplier; rebuild it
    # from the group's initial lr so no numpy float survives in the optimiser.
    for group in optimizer.param_groups:
        group["lr"] = float(group["initial_lr"])
    return lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: float(numpy_schedule(at(step))))


@dataclass
class PlainFloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """nerfstudio's exponential decay with warm-up, keeping only Python floats in its state."""

    _target: type = field(default_factory=lambda: PlainFloatExponentialDecayScheduler)


class PlainFloatExponentialDecayScheduler(ExponentialDecayScheduler):
    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        return _with_plain_floats(super().get_scheduler(optimizer, lr_init), optimizer)


@dataclass
class PlainFloatCosineDecaySchedulerConfig(CosineDecaySchedulerConfig):
    """nerfstudio's linear warm-up then cosine decay to ``learning_rate_alpha`` times the initial
    rate at ``max_steps``, read as the pixelSplat reference schedules (see the scheduler), keeping
    only Python floats in its state."""

    _target: type = field(default_factory=lambda: PlainFloatCosineDecayScheduler)


class PlainFloatCosineDecayScheduler(CosineDecayScheduler):
    """nerfstudio's cosine decay with two differences: the warm-up reaches ``n / warm_up_end`` at
    step ``n - 1`` (the reference's warm-up: the first step already trains), and after ``max_steps``
    the rate stays at its final value (nerfstudio's cosine would rise again)."""

    config: PlainFloatCosineDecaySchedulerConfig

    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        warm_up_end, max_steps = self.config.warm_up_end, self.config.max_steps
        if not 0 <= warm_up_end < max_steps:
            raise PixelSplatInputError(
                f"the learning-rate schedule needs 0 <= warm-up-end < max-steps, got {warm_up_end} and {max_steps}"
            )

        def at(step: int) -> int:
            return step + 1 if step < warm_up_end else min(step, max_steps)

        return _with_plain_floats(super().get_scheduler(optimizer, lr_init), optimizer, at)
