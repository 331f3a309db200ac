"""nerfstudio's trainer, made to accept a run of zero iterations (pure feed-forward) and to
leave no run folder behind when the pipeline refuses its input."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Literal, Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer

_IMPORTED_AT = time.time()  # before ns-train writes this run's config.yml


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
        # ... and only one this process wrote (not an earlier run's folder reused by --load-config).
        before_setup = {"config.yml", "dataparser_transforms.json"}
        try:
            if not base.is_dir() or any(
                p.is_file() and str(p.relative_to(base)) not in before_setup for p in base.rglob("*")
            ):
                return
            if (base / "config.yml").stat().st_mtime < _IMPORTED_AT:
                return
            shutil.rmtree(base, ignore_errors=True)
            top = self.config.output_dir.resolve()
            for folder in base.resolve().parents:  # outputs/<experiment>/<method>/ when now empty
                if folder == top or top not in folder.parents or any(folder.iterdir()):
                    break
                folder.rmdir()
        except OSError:  # another rank got there first; the refusal's message matters more
            pass

    def _after_train(self) -> None:
        if self.config.max_num_iterations == 0:
            # nerfstudio's console statistics divide by the iteration count and need a
            # logged step; with no iteration there are no statistics, only the timer's
            # event, which would crash them. The checkpoint is still saved below.
            writer.EVENT_STORAGE.clear()
        super()._after_train()
