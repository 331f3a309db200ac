"""nerfstudio's trainer, made to accept a run of zero iterations (pure feed-forward)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer


@dataclass
class PixelSplatTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: PixelSplatTrainer)


class PixelSplatTrainer(Trainer):
    def _after_train(self) -> None:
        if self.config.max_num_iterations == 0:
            # nerfstudio's console statistics divide by the iteration count and need a
            # logged step; with no iteration there are no statistics, only the timer's
            # event, which would crash them. The checkpoint is still saved below.
            writer.EVENT_STORAGE.clear()
        super()._after_train()
