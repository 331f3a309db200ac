"""``pixelsplat-ns explain``: a run's insides as a Rerun recording and/or a static figure.

    pixelsplat-ns explain --load-config outputs/.../config.yml --rerun explain.rrd [--pixel ROW COL] \
        [--frames N] [--spawn] [--figure explain.png]

Loads the run as ``ns-viewer`` does (nerfstudio's ``eval_setup``) and records the context
cameras, a camera path between the first two context views with the render and depth at each
frame, and one probe pixel's ray, samples and weights (``pixelsplat_ns.explain``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


def load_pipeline(config: Path):
    """The run's pipeline, loaded as ``ns-viewer`` and ``ns-render`` load it."""
    from nerfstudio.utils.eval_utils import eval_setup

    _, pipeline, _, _ = eval_setup(config, test_mode="test")
    return pipeline


@dataclass
class Explain:
    """Record what a method does inside: context cameras, a camera path with renders and depth,
    and one probe pixel's samples and weights, as a Rerun recording (rerun-sdk) or a figure."""

    load_config: Path
    """The run's config.yml (as for ns-viewer)."""
    rerun: Path | None = None
    """Write the Rerun recording here (.rrd; open it with `rerun FILE`). Needs rerun-sdk: pip install -e ".[rerun]"."""
    pixel: tuple[int, int] | None = None
    """The probe pixel, ROW COL: of the first context image as the method saw it (pixelSplat: the encoder's input), or of every rendered frame (methods whose probe is a rendered pixel). Default: the image's centre."""
    frames: int = 8
    """Cameras on the path from the first context view to the second, both included."""
    spawn: bool = False
    """Open the Rerun viewer and stream the recording to it instead of writing a file."""
    figure: Path | None = None
    """Also (or only) draw the walkthrough as a static PNG figure (matplotlib; no rerun-sdk needed)."""
    render_long_side: int = 320
    """Long side of the path's renders, in pixels (the first context view's aspect ratio)."""

    def check_inputs(self) -> None:
        """Everything that can be checked before the run is loaded; nothing is written."""
        from pixelsplat_ns.errors import PixelSplatInputError

        if self.frames < 1:
            raise PixelSplatInputError(f"--frames must be at least 1, got {self.frames}")
        if self.render_long_side < 8:
            raise PixelSplatInputError(f"--render-long-side must be at least 8 pixels, got {self.render_long_side}")
        if not self.load_config.is_file():
            raise PixelSplatInputError(
                f"{self.load_config} does not exist: give a run's config.yml (outputs/<scene>/<method>/<timestamp>/config.yml)"
            )
        if self.rerun is None and not self.spawn and self.figure is None:
            raise PixelSplatInputError("nothing to write: give --rerun FILE.rrd, --spawn or --figure FILE.png")
        if self.rerun is not None and self.spawn:
            raise PixelSplatInputError(
                "--spawn streams to the viewer instead of writing a file: give --rerun or --spawn, not both"
            )
        if self.rerun is not None or self.spawn:
            from pixelsplat_ns.explain.recording import import_rerun

            import_rerun()

    def main(self) -> None:
        from nerfstudio.utils.rich_utils import CONSOLE
        from rich.markup import escape

        from pixelsplat_ns.errors import PixelSplatInputError, PixelSplatOutputError

        try:
            self.check_inputs()
            self.run()
        except PixelSplatInputError as error:
            CONSOLE.print(f"[bold red]pixelsplat: error:[/] {escape(str(error))}")
            raise SystemExit(2) from None
        except PixelSplatOutputError as error:  # the previous file, if any, is left whole
            CONSOLE.print(f"[bold red]pixelsplat: error:[/] {escape(str(error))}")
            raise SystemExit(1) from None

    def run(self) -> None:
        """Load the run, gather the walkthrough, write it (inputs already checked)."""
        from nerfstudio.utils.rich_utils import CONSOLE

        from pixelsplat_ns.cli.progress import progress_bar
        from pixelsplat_ns.explain import explainable_for
        from pixelsplat_ns.explain.collect import explain

        pipeline = load_pipeline(self.load_config)
        model = pipeline.model
        model.eval()
        explainable = explainable_for(model)
        progress = progress_bar(CONSOLE)
        with progress:
            task = progress.add_task("rendering the path", total=self.frames)
            explanation = explain(
                explainable, self.frames, self.pixel, self.render_long_side, method=type(model).__name__,
                progress=lambda _: progress.advance(task),
            )  # fmt: skip
        row, col = explanation.pixel
        CONSOLE.print(f"pixelsplat: probe pixel (row {row}, column {col}): ", end="")
        probe = explanation.probe or explanation.frames[0].probe
        CONSOLE.print(probe.label, markup=False, highlight=False)
        if self.rerun is not None or self.spawn:
            from pixelsplat_ns.explain.recording import record

            record(explanation, self.rerun, self.spawn)
            CONSOLE.print(
                f"pixelsplat: Rerun recording: {self.rerun} (open it with: rerun {self.rerun})"
                if self.rerun
                else "pixelsplat: streamed to the Rerun viewer"
            )
        if self.figure is not None:
            from pixelsplat_ns.explain.figure import draw_figure

            draw_figure(explanation, self.figure)
            CONSOLE.print(f"pixelsplat: figure: {self.figure}")
