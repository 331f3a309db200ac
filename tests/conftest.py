"""Shared paths for tests. Tests may read ../shared; the package never does."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures" / "pixelsplat-official"


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not present (expected ../shared beside the repository)")
    return path
