"""Shared paths for tests. Tests may read ../shared; the package never does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
FIXTURES = SHARED / "fixtures" / "pixelsplat-official"


# CI has ../shared: there a missing fixture is a failure, never a silent skip of the parity tests.
REQUIRE_SHARED = os.environ.get("PIXELSPLAT_NS_REQUIRE_SHARED") == "1"


# CI has a compiler: there the C++ rasteriser must build and pass its layout check, so a
# binding that drifted from raster.cpp fails instead of leaving only the PyTorch path tested.
REQUIRE_NATIVE = os.environ.get("PIXELSPLAT_NS_REQUIRE_NATIVE") == "1"


def require_native() -> None:
    """Skip the test when the C++ rasteriser is unavailable (fail where
    PIXELSPLAT_NS_REQUIRE_NATIVE=1, as in CI)."""
    from pixelsplat_ns.rendering import native

    if native.available():
        return
    reason = "the C++ rasteriser is unavailable (no compiler, a failed build, or a layout mismatch: see the warning)"
    if REQUIRE_NATIVE:
        pytest.fail(f"{reason} (PIXELSPLAT_NS_REQUIRE_NATIVE=1)")
    pytest.skip(reason)


def require(path: Path) -> Path:
    """``path`` under ../shared, or skip the test saying what is missing (fail where
    PIXELSPLAT_NS_REQUIRE_SHARED=1, as in CI)."""
    if not path.exists():
        reason = f"{path} is not present: the official-parity and real-data tests need ../shared beside the repository"
        if REQUIRE_SHARED:
            pytest.fail(f"{reason} (PIXELSPLAT_NS_REQUIRE_SHARED=1)")
        pytest.skip(reason)
    return path
