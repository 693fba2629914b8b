"""What this machine's CPU is: its name and instruction-set flags (for engines and bench)."""
from __future__ import annotations

import platform
from pathlib import Path


def _cpuinfo() -> list[str]:
    try:
        return Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return []


def _first(keys: tuple[str, ...]) -> str | None:
    for line in _cpuinfo():
        key, _, value = line.partition(":")
        if key.strip() in keys:
            return value
    return None


def cpu_flags() -> set[str]:
    """The instruction-set flags of the first CPU in /proc/cpuinfo (empty where unreadable)."""
    return set((_first(("flags", "Features")) or "").split())


def cpu_name() -> str:
    name = _first(("model name",))
    return name.strip() if name else platform.processor() or platform.machine()
