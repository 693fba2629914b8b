"""Giving freed memory back to the operating system."""
from __future__ import annotations

import ctypes
import ctypes.util
import gc


def release_freed_memory() -> None:
    """Collects garbage, then asks glibc to return free heap pages: a dropped network and
    engine leave hundreds of MB in malloc's arenas, which the process's RSS would go on
    counting and the next build would not necessarily reuse. A no-op where the C library
    has no malloc_trim (musl, macOS)."""
    gc.collect()
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim if name else None
    except (OSError, AttributeError):
        trim = None
    if trim is not None:
        trim(0)
