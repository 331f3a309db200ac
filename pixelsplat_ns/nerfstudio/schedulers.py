"""A learning-rate schedule whose state reloads under ``torch.load(weights_only=True)``.

nerfstudio's ExponentialDecayScheduler computes its multiplier with numpy, so numpy
floats end up in the optimiser's ``lr`` and the scheduler's ``_last_lr``; checkpoints that
hold them are refused by ``torch.load``'s default since torch 2.6, which breaks
ns-viewer / ns-render / ns-eval / ns-export. This one returns Python floats.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nerfstudio.engine.schedulers import ExponentialDecayScheduler, ExponentialDecaySchedulerConfig
from torch.optim import Optimizer, lr_scheduler


@dataclass
class PlainFloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """nerfstudio's exponential decay with warm-up, keeping only Python floats in its state."""

    _target: type = field(default_factory=lambda: PlainFloatExponentialDecayScheduler)


class PlainFloatExponentialDecayScheduler(ExponentialDecayScheduler):
    def get_scheduler(self, optimizer: Optimizer, lr_init: float) -> lr_scheduler.LRScheduler:
        numpy_schedule = super().get_scheduler(optimizer, lr_init).lr_lambdas[0]
        # LambdaLR's constructor already stepped once with the numpy multiplier; rebuild it
        # from the group's initial lr so no numpy float survives in the optimiser.
        for group in optimizer.param_groups:
            group["lr"] = float(group["initial_lr"])
        return lr_scheduler.LambdaLR(optimizer, lr_lambda=lambda step: float(numpy_schedule(step)))
