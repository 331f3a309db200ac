"""``ns-export gaussian-splat`` writes its PLY atomically.

nerfstudio 1.1.5's exporter opens the target PLY and writes into it, so a full disk or an
interrupted export leaves a truncated file where the previous export was, and the failure is a
traceback. Installed when a pixelSplat pipeline is set up inside ``ns-export`` (the exporter's
module is already loaded then; other commands never import it, nor its open3d), the exporter's
writer goes through a temporary file renamed into place, and an unwritable output is one line
(exit 1) with the previous file left whole. The PLY's content is nerfstudio's own.
"""

from __future__ import annotations

import sys
from pathlib import Path

from pixelsplat_ns.errors import PixelSplatOutputError
from pixelsplat_ns.io import atomic_path, output_errors


def install() -> None:
    """Wrap ``ExportGaussianSplat.write_ply`` if nerfstudio's exporter is loaded (idempotent)."""
    exporter = sys.modules.get("nerfstudio.scripts.exporter")
    ExportGaussianSplat = getattr(exporter, "ExportGaussianSplat", None)
    if ExportGaussianSplat is None:  # not inside ns-export (or still being imported)
        return
    original = ExportGaussianSplat.write_ply
    if getattr(original, "_pixelsplat_atomic", False):
        return

    def write_ply(filename: str, count: int, map_to_tensors) -> None:
        from nerfstudio.utils.rich_utils import CONSOLE

        path = Path(filename)
        try:
            with output_errors(path), atomic_path(path) as temporary:
                original(str(temporary), count, map_to_tensors)
        except PixelSplatOutputError as error:
            CONSOLE.print(f"[bold red]pixelsplat: error: {error}")
            raise SystemExit(1) from None

    write_ply._pixelsplat_atomic = True  # type: ignore[attr-defined]
    ExportGaussianSplat.write_ply = staticmethod(write_ply)  # type: ignore[method-assign]
