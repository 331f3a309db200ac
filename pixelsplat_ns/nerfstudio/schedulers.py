"""nerfstudio's learning-rate schedules, with state that reloads under ``torch.load(weights_only=True)``.

nerfstudio's ExponentialDecayScheduler and CosineDecayScheduler compute their multipliers
with numpy, so numpy floats end up in the optimiser's ``lr`` and the scheduler's
``_last_lr``; checkpoints that hold them are refused by ``torch.load``'s default since torch
2.6, which breaks ns-viewer / ns-render / ns-eval / ns-export. These keep nerfstudio's
schedules and return Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nerfstudio.engine.schedulers import (
    CosineDecayScheduler,
    CosineDecaySchedulerConfig,
    ExponentialDecayScheduler,
    ExponentialDecaySchedulerConfig,
)
from torch.optim import Optimizer, lr_scheduler


def _with_plain_floats(numpy_scheduler: lr_scheduler.LambdaLR, optimizer: Optimizer) -> lr_scheduler.LambdaLR:
    """The same schedule as ``numpy_scheduler``, multipliers cast to Python floats."""
    numpy_schedule = numpy_scheduler.lr_lambdas[0]
    # LambdaLR's constructor already stepped once with the numpy multiplier; rebuild it
    # from the group's initial lr so no numpy float survives in the optimiser.
    for group in optimizer.param_groups:
        group["lr"] = float(group["initial_lr"])
    return lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: float(numpy_schedule(step)))


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
    rate at ``max_steps``, keeping only Python floats in its state."""

    _target: type = field(default_factory=lambda: PlainFloatCosineDecayScheduler)


class PlainFloatCosineDecayScheduler(CosineDecayScheduler):
    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        return _with_plain_floats(super().get_scheduler(optimizer, lr_init), optimizer)
