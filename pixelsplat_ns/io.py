"""File writing that never leaves a half-written file behind."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from pixelsplat_ns.errors import PixelSplatOutputError


def current_umask() -> int:
    """The process's file-creation mask (reading it means setting it: set back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: Path, scratch_dir: Path | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (or in ``scratch_dir``, which must be on the same
    file system: for folders whose every file is read, e.g. nerfstudio's checkpoints); rename it
    onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=scratch_dir or path.parent)
    os.close(handle)
    try:
        yield Path(temporary)
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        os.chmod(temporary, 0o666 & ~current_umask())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


@contextmanager
def output_errors(path: Path) -> Iterator[None]:
    """Report an ``OSError`` raised while writing ``path`` (full disk, read-only folder, ...) as a
    ``PixelSplatOutputError`` whose message names the file and the reason."""
    try:
        yield
    except PixelSplatOutputError:
        raise
    except OSError as error:
        reason = error.strerror or str(error)
        failure = PixelSplatOutputError(f"cannot write {path}: {reason} (the previous file, if any, is unchanged)")
        failure.errno = error.errno
        raise failure from error


def save_image(path: Path, image: np.ndarray) -> None:
    """Write an [H, W, 3] float image in [0, 1] (or uint8) as PNG, atomically (a failed write
    raises ``PixelSplatOutputError``)."""
    if image.dtype != np.uint8:
        image = (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    with output_errors(path), atomic_path(path) as temporary:
        Image.fromarray(image).save(temporary, format="PNG")
