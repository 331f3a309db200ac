"""nerfstudio's trainer, made to accept a run of zero iterations (pure feed-forward) and to
leave no run folder behind when the pipeline refuses its input."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from typing import Literal, Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer


@dataclass
class PixelSplatTrainerConfig(TrainerConfig):
    _target: Type = field(default_factory=lambda: PixelSplatTrainer)


class PixelSplatTrainer(Trainer):
    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        try:
            super().setup(test_mode)
        except SystemExit:
            # Bad input, refused with its message while the pipeline was set up. Nothing was
            # trained, so the folder nerfstudio made for this run (its config only) goes too.
            self._remove_untrained_run()
            raise

    def _remove_untrained_run(self) -> None:
        base = self.base_dir
        # Only a folder holding nothing but what nerfstudio writes before set-up (never a
        # run with checkpoints, renders or anything of the user's).
        before_setup = {"config.yml", "dataparser_transforms.json"}
        if not base.is_dir() or any(p.is_file() and p.name not in before_setup for p in base.rglob("*")):
            return
        shutil.rmtree(base, ignore_errors=True)
        top = self.config.output_dir.resolve()
        for folder in base.resolve().parents:  # outputs/<experiment>/<method>/ when now empty
            if folder == top or top not in folder.parents or any(folder.iterdir()):
                break
            folder.rmdir()

    def _after_train(self) -> None:
        if self.config.max_num_iterations == 0:
            # nerfstudio's console statistics divide by the iteration count and need a
            # logged step; with no iteration there are no statistics, only the timer's
            # event, which would crash them. The checkpoint is still saved below.
            writer.EVENT_STORAGE.clear()
        super()._after_train()
