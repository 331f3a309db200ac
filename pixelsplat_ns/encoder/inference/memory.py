"""Process-memory helpers for the inference path."""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from functools import cache


@cache
def _malloc_trim():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim
    except (OSError, AttributeError):
        return None


def release_free_memory() -> None:
    """Give memory that glibc's allocator keeps after large temporaries are freed back to
    the system (``malloc_trim``), so repeated forward passes do not grow the process."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
