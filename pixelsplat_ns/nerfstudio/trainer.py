"""nerfstudio's trainer, made to accept a run of zero iterations (pure feed-forward), to leave
no run folder behind when the pipeline refuses its input, to write checkpoints atomically and
to stop on Ctrl-C or an unwritable checkpoint with one line instead of a traceback."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils import writer
from nerfstudio.utils.decorators import check_main_thread
from nerfstudio.utils.rich_utils import CONSOLE
from torch.optim import lr_scheduler

from pixelsplat_ns.errors import PixelSplatInputError, PixelSplatOutputError
from pixelsplat_ns.io import atomic_path, output_errors

_IMPORTED_AT = time.time()  # before ns-train writes this run's config.yml


def close_event_writers() -> None:
    """Close and forget nerfstudio's event writers (tensorboard files stay open in a module-level
    list across runs in one process); call before removing a run folder, so that later runs of
    the same process do not write into the removed one."""
    for event_writer in writer.EVENT_WRITERS:
        tensorboard = getattr(event_writer, "tb_writer", None)
        if tensorboard is not None:
            tensorboard.close()
    writer.EVENT_WRITERS.clear()


@dataclass
class PixelSplatTrainerConfig(TrainerConfig):
    _target: type = field(default_factory=lambda: PixelSplatTrainer)

    def resolve_start(self) -> None:
        """Unset start settings become what the run needs. ``--pipeline.model.gaussian-resolution``: native
        Gaussians for a feed-forward run or when a native Gaussians' setting (``gaussian-*``) is given, else
        the encoder's as the prediction start of fine-tuning (the native start trails a random start; README
        "Fine-tuning"); the points start seeds from native ones. ``--pipeline.model.depth-sweep``: on for the
        prediction start of fine-tuning (encoder Gaussians), off otherwise. Set before the config is saved, so
        that a reloaded run knows which Gaussians it holds."""
        model = self.pipeline.model
        fine_tuning = self.max_num_iterations > 0 and getattr(model, "initialization", None) == "prediction"
        if getattr(model, "gaussian_resolution", "unused") is None:
            # A native Gaussians' setting given on the command line asks for native Gaussians.
            defaults = type(model)()
            native_asked = any(
                getattr(model, name) != getattr(defaults, name)
                for name in vars(defaults)
                if name.startswith("gaussian_") and name != "gaussian_resolution"
            )
            model.gaussian_resolution = "encoder" if fine_tuning and not native_asked else "native"  # type: ignore[attr-defined]
        if getattr(model, "depth_sweep", "unused") is None:
            model.depth_sweep = fine_tuning and model.gaussian_resolution == "encoder"  # type: ignore[attr-defined]

    def save_config(self) -> None:
        self.resolve_start()
        super().save_config()


class PixelSplatTrainer(Trainer):
    config: PixelSplatTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        self.config.resolve_start()
        try:
            super().setup(test_mode)
        except SystemExit:
            # Bad input, refused with its message while the pipeline was set up. Nothing was
            # trained, so the folder nerfstudio made for this run (its config only) goes too.
            self._remove_untrained_run()
            raise
        except PixelSplatInputError as error:  # refused after the pipeline (e.g. a schedule's flags)
            self._remove_untrained_run()
            CONSOLE.print(f"[bold red]pixelsplat: error: {error}")
            raise SystemExit(2) from None
        except KeyboardInterrupt:
            self._remove_untrained_run()
            CONSOLE.print("pixelsplat: interrupted during set-up; nothing was trained or saved")
            raise SystemExit(130) from None

    def setup_optimizers(self) -> Optimizers:
        """nerfstudio's optimisers, each group's rate times the factor by step the model asks for its
        start (``PixelSplatModel.learning_rate_factors``), on top of the group's own schedule."""
        optimizers = super().setup_optimizers()
        model = self.pipeline.module.model if hasattr(self.pipeline, "module") else self.pipeline.model
        factors = getattr(model, "learning_rate_factors", lambda groups: {})(list(optimizers.optimizers))
        for group, factor in factors.items():
            optimizer = optimizers.optimizers[group]
            own = optimizers.schedulers.get(group)
            if own is not None and not isinstance(own, lr_scheduler.LambdaLR):
                raise PixelSplatInputError(
                    f"--pipeline.model.prediction-lr-scale.{group}: the group's own scheduler "
                    f"({type(own).__name__}) cannot be combined with a factor; leave the group out"
                )
            schedule = own.lr_lambdas[0] if own is not None else (lambda step: 1.0)
            for param_group in optimizer.param_groups:  # the constructor below applies step 0's rate
                param_group["lr"] = float(param_group.setdefault("initial_lr", param_group["lr"]))
            optimizers.schedulers[group] = lr_scheduler.LambdaLR(
                optimizer, lambda step, schedule=schedule, factor=factor: float(schedule(step) * factor(step))
            )
        return optimizers

    def train(self) -> None:
        try:
            super().train()
        except KeyboardInterrupt:
            # Ctrl-C is how the viewer is closed once training and its last checkpoint are done.
            if getattr(self, "_final_checkpoint_saved", False):
                return
            CONSOLE.print(f"pixelsplat: interrupted at step {self.step}; {self._last_checkpoint()}")
            raise SystemExit(130) from None
        except PixelSplatOutputError as error:
            CONSOLE.print(f"[bold red]pixelsplat: error: {error}")
            self._remove_untrained_run()  # a run that could save nothing leaves nothing behind
            raise SystemExit(1) from None

    def _last_checkpoint(self) -> str:
        checkpoints = sorted(self.checkpoint_dir.glob("step-*.ckpt")) if self.checkpoint_dir.is_dir() else []
        if not checkpoints:
            return f"no checkpoint was saved yet (one every {self.config.steps_per_save} steps)"
        return f"the last checkpoint, {checkpoints[-1]}, is whole and loads with --load-dir or ns-viewer"

    @check_main_thread
    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint (same content and name), written to a temporary file in the run
        folder and renamed into the checkpoint folder, so that an interrupted or failed write (Ctrl-C,
        full disk) never leaves a partial file where ns-viewer / --load-dir look for the latest; a
        failed write raises ``PixelSplatOutputError`` and keeps the previous checkpoints."""
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        pipeline = self.pipeline.module if hasattr(self.pipeline, "module") else self.pipeline
        payload = {
            "step": step,
            "pipeline": pipeline.state_dict(),  # type: ignore[union-attr]
            "optimizers": {k: v.state_dict() for (k, v) in self.optimizers.optimizers.items()},
            "schedulers": {k: v.state_dict() for (k, v) in self.optimizers.schedulers.items()},
            "scalers": self.grad_scaler.state_dict(),
        }
        with output_errors(path):
            self.checkpoint_dir.mkdir(parents=True, exist_ok=True)
            # nerfstudio reads every file of the checkpoint folder as a checkpoint: the temporary
            # file lives one folder up, on the same file system.
            with atomic_path(path, scratch_dir=self.checkpoint_dir.parent) as temporary:
                torch.save(payload, temporary)
        if getattr(self, "_writing_final_checkpoint", False):
            self._final_checkpoint_saved = True
        if self.config.save_only_latest_checkpoint:
            for old in self.checkpoint_dir.glob("*.ckpt"):
                if old != path:
                    old.unlink()

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
        # nerfstudio marks the run completed, then writes its last checkpoint: until that is
        # written, Ctrl-C interrupts the run (not just the viewer after it).
        self._writing_final_checkpoint = True
        if self.config.max_num_iterations == 0:
            # nerfstudio's console statistics divide by the iteration count and need a
            # logged step; with no iteration there are no statistics, only the timer's
            # event, which would crash them. The checkpoint is still saved below.
            writer.EVENT_STORAGE.clear()
        super()._after_train()
